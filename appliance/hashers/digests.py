"""Cryptographic digests (MD5, SHA-1, SHA-256) of a file's bytes.

hashlib releases the GIL while it hashes buffers larger than 2 KiB, so the
pipeline's thread pool, which runs ``hash_item`` (and so ``digest_bytes``)
once per file, gets real parallelism. ``Digester`` is the incremental form
used by MatchStream: it is fed chunk by chunk as they arrive, so the bytes are
never passed over twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from appliance.signals import DIGEST_SIGNALS

Buffer = bytes | bytearray | memoryview

# hashlib names of our digest signals; the signal registry owns the list.
_ALGORITHMS = {name: name for name in DIGEST_SIGNALS}


class Digester:
    """Running digests over a stream of chunks."""

    def __init__(self, names: Iterable[str] = DIGEST_SIGNALS) -> None:
        self._hashes = {n: hashlib.new(_ALGORITHMS[n]) for n in names if n in _ALGORITHMS}
        self.nbytes = 0

    def update(self, chunk: Buffer) -> None:
        for h in self._hashes.values():
            h.update(chunk)
        self.nbytes += len(chunk)

    def digests(self) -> dict[str, bytes]:
        """name -> raw digest bytes, in the order the names were given."""
        return {n: h.digest() for n, h in self._hashes.items()}


def digest_bytes(data: Buffer, names: Iterable[str] = DIGEST_SIGNALS) -> dict[str, bytes]:
    """The requested digests of one buffer; names that are not digests are ignored."""
    digester = Digester(names)
    digester.update(data)
    return digester.digests()
