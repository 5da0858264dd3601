"""SHA-256: exact matches of a file's bytes."""

from __future__ import annotations

from appliance.signals.base import SignalType

SIGNAL = SignalType(
    name="sha256",
    nbytes=32,
    media="bytes",
    match="exact",
    group="digests",
    description="SHA-256 of the file's bytes",
    examples=("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",),
    aliases=("sha-256",),
    by_default=True,
    cpu_hasher="appliance.hashers.digests:digest_bytes",
    device_hasher="appliance.gpu.hashers:digests",
)
