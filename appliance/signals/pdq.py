"""PDQ: Meta's 256-bit perceptual hash of an image, with a quality 0..100.

Values are bit for bit the reference's (the ``pdqhash`` package, on
Pillow-decoded RGB pixels at full resolution) in "exact" mode. PDQ's own
options live here with it: its threshold and quality gate, matching all 8
rotations/flips, and the fast mode.
"""

from __future__ import annotations

from typing import Literal, get_args

from appliance.signals.base import Option, SignalType, threshold

# "exact": PDQ of the full-size decode, bit for bit the reference's.
# "fast": JPEGs decoded at a reduced DCT scale first (see README for the drift).
PdqMode = Literal["exact", "fast"]

SIGNAL = SignalType(
    name="pdq",
    nbytes=32,
    media="image",
    match="hamming",
    group="pdq",
    description="PDQ perceptual hash (256 bits) and quality",
    # The PDQ reference image bridge-mods/aaa-orig.jpg (tests/data/pdq).
    examples=("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",),
    quality=True,
    by_default=True,
    cpu_hasher="appliance.hashers.registry:pdq",
    device_hasher="appliance.gpu.hashers:pdq",
    options=(
        # Matches at Hamming distance <= this (the reference's 31).
        threshold(31, 256, "PDQ match distance (default {default})", "--pdq-threshold"),
        # Hashes of quality below this are not matched (python-threatexchange uses 50).
        Option("quality_min", 50, "skip PDQ below this quality (default {default})",
               "--pdq-quality-min", low=0, high=100),
        # Match all 8 rotations/flips of a hash, so turned or mirrored copies match.
        Option("dihedral", False,
               "match all 8 rotations/flips of PDQ, so turned or mirrored copies match",
               "--dihedral"),
        Option("mode", "exact", "exact: the reference's bits; fast: JPEGs decoded at "
               "reduced scale first, a few bits of drift (see README; default {default})",
               "--pdq-mode", section="hashing", choices=get_args(PdqMode)),
    ),
)
