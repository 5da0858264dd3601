"""imagehash's DCT hash (64 bits), bit for bit the ``imagehash`` package's."""

from __future__ import annotations

from appliance.signals.base import SignalType, threshold

SIGNAL = SignalType(
    name="phash",
    nbytes=8,
    media="image",
    match="hamming",
    group="imagehash",
    description="imagehash's DCT hash (64 bits)",
    # The PDQ reference image bridge-mods/aaa-orig.jpg (tests/data/pdq).
    examples=("aca29c1c33dc23d7",),
    cpu_hasher="appliance.hashers.registry:family",
    # Match at Hamming distance <= this.
    options=(threshold(10, 64),),
)
