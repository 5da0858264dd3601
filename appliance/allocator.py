"""The C allocator's settings for a server that handles large, short-lived buffers.

Files, gRPC messages and decoded rows come and go in blocks of hundreds of KB
to hundreds of MB. glibc's malloc serves blocks above its mmap threshold from
fresh mappings that go back to the system when freed, but it raises that
threshold each time such a block is freed (up to 32 MB), after which blocks of
that size come from the heap and stay with the process once freed: a burst of
large requests leaves the server at its high-water mark. Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD)``) turns the adaptation off, so memory held for a
request is given back when it ends. Decode workers get settings of their own
from their environment (``sandbox.pool``), tuned for decoding: they keep a
little freed heap, so that ordinary files do not fault their pages in afresh.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter number (malloc.h) and the threshold chosen: 1 MiB, above
# every small object and below every file or picture worth giving back.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's mmap threshold once for this process; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
