"""vPDQ matching: python-threatexchange's rule, by brute force for two videos.

Sampling and hashing are the reference's (ThreatExchange ``vpdq/cpp``,
``FFmpegHasher``; done in ``appliance.hashers.video``): frames are numbered
from 0 in decoder output order over every decoded frame; frame n is hashed
when n modulo int(seconds_per_hash x rate) is 0 (the rate being the stream's
average frame rate, else its base rate; a step of 0 is 1, so 0 seconds
hashes every frame); the hash is the full PDQ of the frame at its own size
(RGB24 from swscale, then the C++ float32 luma ``0.299f*R + 0.587f*G +
0.114f*B``, not the image PDQ's float64 luma); its timestamp is float32
n / rate. Values: ``appliance.video.vpdq_format``.

Matching is python-threatexchange's (``match_VPDQ_hash_brute``): each side
is de-duplicated by hash (the first of each kept), then frames of quality
under 50 are dropped; a frame matches when some frame of the other side is
within Hamming distance 31 (inclusive); the videos match when at least 80 %
of the query's frames and at least 0 % of the entry's frames match. A side
left with no frame matches nothing (the reference divides by zero there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from appliance.video.vpdq_format import FRAME_BYTES, unpack


def records(value: bytes | memoryview) -> NDArray[np.uint8]:
    """(n, FRAME_BYTES) uint8 view of a value's frames."""
    return np.frombuffer(value, dtype=np.uint8).reshape(-1, FRAME_BYTES)


def hashes_and_qualities(value: bytes | memoryview) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """(n, 32) hashes and (n,) qualities of a value's frames."""
    table = records(value)
    return table[:, :32], table[:, 32]


@dataclass(frozen=True)
class VpdqRules:
    """python-threatexchange's match rule; each field is a ``[matching]`` option."""

    distance: int = 31
    quality_min: int = 50
    query_percent: float = 80.0
    compared_percent: float = 0.0


def prepare(value: bytes | memoryview, quality_min: int) -> NDArray[np.intp]:
    """Indexes of the frames that take part: the first of each distinct hash,
    then those of quality >= quality_min (python-threatexchange's order)."""
    hashes, qualities = hashes_and_qualities(value)
    _, first = np.unique(hashes, axis=0, return_index=True)
    first.sort()
    return first[qualities[first] >= quality_min]


@dataclass(frozen=True)
class VpdqScore:
    """How two videos compare: percentages of each side's frames matched, and
    the first and last timestamps of the query's matched frames."""

    query_percent: float
    compared_percent: float
    first_seconds: float
    last_seconds: float

    def matches(self, rules: VpdqRules) -> bool:
        return (self.query_percent >= rules.query_percent
                and self.compared_percent >= rules.compared_percent)


def score_from_counts(query: Sequence[bool], compared_matched: int, compared_total: int,
                      seconds: Sequence[float]) -> VpdqScore | None:
    """The score from which query frames matched and how many of the entry's
    frames did; None when either side has no frame."""
    if not len(query) or not compared_total:
        return None
    hit = [s for ok, s in zip(query, seconds, strict=True) if ok]
    return VpdqScore(int(sum(query)) * 100 / len(query), compared_matched * 100 / compared_total,
                     min(hit) if hit else 0.0, max(hit) if hit else 0.0)


def distances(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.int32]:
    """(len(a), len(b)) Hamming distances of two (n, 32) uint8 hash tables."""
    x = a[:, None, :] ^ b[None, :, :]
    out: NDArray[np.int32] = np.unpackbits(x, axis=2).sum(axis=2, dtype=np.int32)
    return out


def compare(query: bytes | memoryview, entry: bytes | memoryview,
            rules: VpdqRules = VpdqRules()) -> VpdqScore | None:
    """python-threatexchange's comparison of two values, by brute force (the
    index does the same over a whole list); None when a side has no frame left."""
    q, e = prepare(query, rules.quality_min), prepare(entry, rules.quality_min)
    qh, eh = hashes_and_qualities(query)[0][q], hashes_and_qualities(entry)[0][e]
    close = distances(qh, eh) <= rules.distance
    seconds = [f.seconds for f in unpack(query)]
    matched = [bool(x) for x in np.asarray(close.any(axis=1))] if len(e) else [False] * len(q)
    return score_from_counts(matched,
                             int(close.any(axis=0).sum()) if len(q) else 0, len(e),
                             [seconds[i] for i in q])
