"""imagehash's difference hash (64 bits), bit for bit the ``imagehash`` package's."""

from __future__ import annotations

from appliance.signals.base import SignalType, threshold

SIGNAL = SignalType(
    name="dhash",
    nbytes=8,
    media="image",
    match="hamming",
    group="imagehash",
    description="imagehash's difference hash (64 bits)",
    # The PDQ reference image bridge-mods/aaa-orig.jpg (tests/data/pdq).
    examples=("b7b78fa7173336d6",),
    cpu_hasher="appliance.hashers.registry:family",
    # Match at Hamming distance <= this.
    options=(threshold(10, 64),),
)
