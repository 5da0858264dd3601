"""SHA-1: exact matches of a file's bytes."""

from __future__ import annotations

from appliance.signals.base import SignalType

SIGNAL = SignalType(
    name="sha1",
    nbytes=20,
    media="bytes",
    match="exact",
    group="digests",
    description="SHA-1 of the file's bytes",
    examples=("da39a3ee5e6b4b0d3255bfef95601890afd80709",),
    aliases=("sha-1",),
    by_default=True,
    cpu_hasher="appliance.hashers.digests:digest_bytes",
    device_hasher="appliance.gpu.hashers:digests",
)
