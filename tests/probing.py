"""Attacks that rebuild a listed PDQ value from a matcher's answers.

Both start from a hash within the threshold of a listed entry (a near copy of
a listed picture) and ask one question at a time through ``ask``, which
returns the distance of the hit (None: no hit; -1: a hit whose distance is
withheld) or raises ``Refused`` when the server stops answering. What each
attack rebuilds is compared with the entry by the caller.

- ``distance_descent``: flip each of the 256 bits; a flip that lowers the
  reported distance was a differing bit (257 queries with distances).
- ``edge_walk``: match / no-match answers only. Flip bits while the hash
  still matches, until a flip ends the match: the hash is then exactly at the
  threshold. From there each one-bit flip that still matches was a differing
  bit, and one that ends the match an agreeing one (about 300 queries).

Used by tests/test_list_secrecy.py and benchmarks/list_secrecy.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Ask = Callable[[bytes], int | None]


class Refused(Exception):
    """The server refused to answer (the prober was suspended)."""


@dataclass
class Outcome:
    rebuilt: bytes
    queries: int
    refused: bool


def flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def hamming(a: bytes, b: bytes) -> int:
    return int(np.bitwise_count(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def distance_descent(ask: Ask, start: bytes) -> Outcome:
    rebuilt, queries = bytearray(start), 0
    try:
        base = ask(start)
        queries += 1
        for bit in range(8 * len(start)):
            d = ask(flip(start, bit))
            queries += 1
            if base is not None and base >= 0 and d is not None and 0 <= d < base:
                rebuilt[:] = flip(bytes(rebuilt), bit)
    except Refused:
        return Outcome(bytes(rebuilt), queries, True)
    return Outcome(bytes(rebuilt), queries, False)


def edge_walk(ask: Ask, start: bytes, seed: int = 0) -> Outcome:
    rng = np.random.default_rng(seed)
    bits = 8 * len(start)
    edge, queries = start, 0
    differing: list[int] = []
    try:
        # Out to the edge: keep every flip that still matches.
        for bit in rng.permutation(bits).tolist():
            candidate = flip(edge, bit)
            queries += 1
            if ask(candidate) is None:
                break  # one more bit ends the match: ``edge`` is at the threshold
            edge = candidate
        # Each bit of the edge hash: a flip that still matches was a differing bit.
        for bit in range(bits):
            queries += 1
            if ask(flip(edge, bit)) is not None:
                differing.append(bit)
    except Refused:
        refused = True
    else:
        refused = False
    rebuilt = edge
    for bit in differing:
        rebuilt = flip(rebuilt, bit)
    return Outcome(rebuilt, queries, refused)


def _walk_to_edge(ask: Ask, start: bytes, rng: np.random.Generator) -> tuple[bytes, int]:
    """Flip bits while the hash still matches: (a hash at the threshold, queries)."""
    edge, queries = start, 0
    for bit in rng.permutation(8 * len(start)).tolist():
        candidate = flip(edge, bit)
        queries += 1
        if ask(candidate) is None:
            return edge, queries
        edge = candidate
    return edge, queries


def group_test(ask: Ask, start: bytes, threshold: int, size: int = 6, tests: int = 4000,
               seed: int = 0) -> Outcome:
    """Tests of ``size`` bits at once from a hash at the threshold: a test
    matches when at least half its bits differ from the entry, so bits that
    appear in matching tests more often than chance are the differing ones.
    Its queries stay ``size`` bits from the edge hash and from each other,
    away from any one-bit neighbourhood a defence might watch."""
    rng = np.random.default_rng(seed)
    bits = 8 * len(start)
    queries = 0
    hits = np.zeros(bits)
    seen = np.zeros(bits)
    refused = False
    try:
        edge, queries = _walk_to_edge(ask, start, rng)
        for _ in range(tests):
            chosen = rng.choice(bits, size, replace=False)
            value = edge
            for bit in chosen.tolist():
                value = flip(value, bit)
            queries += 1
            seen[chosen] += 1
            if ask(value) is not None:
                hits[chosen] += 1
    except Refused:
        refused = True
        edge = locals().get("edge", start)
    score = hits / np.maximum(seen, 1)
    rebuilt = edge
    for bit in np.argsort(-score)[:threshold].tolist():
        if hits[bit] > 0:
            rebuilt = flip(rebuilt, bit)
    return Outcome(rebuilt, queries, refused)
