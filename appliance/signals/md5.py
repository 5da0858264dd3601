"""MD5: exact matches of a file's bytes."""

from __future__ import annotations

from appliance.signals.base import SignalType

SIGNAL = SignalType(
    name="md5",
    nbytes=16,
    media="bytes",
    match="exact",
    group="digests",
    description="MD5 of the file's bytes",
    examples=("d41d8cd98f00b204e9800998ecf8427e",),
    by_default=True,
    cpu_hasher="appliance.hashers.digests:digest_bytes",
    device_hasher="appliance.gpu.hashers:digests",
)
