"""imagehash's Haar wavelet hash (64 bits), bit for bit the ``imagehash`` package's."""

from __future__ import annotations

from appliance.signals.base import SignalType, threshold

SIGNAL = SignalType(
    name="whash",
    nbytes=8,
    media="image",
    match="hamming",
    group="imagehash",
    description="imagehash's Haar wavelet hash (64 bits)",
    # The PDQ reference image bridge-mods/aaa-orig.jpg (tests/data/pdq).
    examples=("43d7e30303b0fe3a",),
    cpu_hasher="appliance.hashers.registry:family",
    # Match at Hamming distance <= this.
    options=(threshold(10, 64),),
)
