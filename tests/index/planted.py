"""Seeded data with planted near-duplicates, and the brute force to check indexes by."""

from __future__ import annotations

import numpy as np

N_QUERIES = 12
MAX_PLANTED = 40


def flip_bits(rng: np.random.Generator, value: np.ndarray, n: int) -> np.ndarray:
    bits = np.unpackbits(value)
    bits[rng.choice(len(bits), size=n, replace=False)] ^= 1
    return np.packbits(bits)


def corpus(seed: int, width: int = 32, n_random: int = 1500):
    """Random entries plus, for each query, planted entries at every distance
    0..MAX_PLANTED (some twice), with shuffled, non-trivial rows."""
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, 256, size=(N_QUERIES, width), dtype=np.uint8)
    top = min(MAX_PLANTED, 8 * width)
    planted = [flip_bits(rng, q, d) for q in queries for d in range(top + 1)]
    planted += planted[::7]  # duplicated values, each with its own row
    entries = np.concatenate(
        [rng.integers(0, 256, size=(n_random, width), dtype=np.uint8), np.array(planted)]
    )
    entries = entries[rng.permutation(len(entries))]
    rows = (rng.permutation(len(entries) * 3)[: len(entries)] + 17).astype(np.int64)
    return queries, entries, rows


def brute_force(queries, entries, rows, radius):
    ints = [int.from_bytes(bytes(e), "big") for e in entries]
    out = []
    for q in queries:
        qi = int.from_bytes(bytes(q), "big")
        hits = sorted(
            (d, int(r))
            for e, r in zip(ints, rows, strict=True)
            if (d := (qi ^ e).bit_count()) <= radius
        )
        out.append(([r for _, r in hits], [d for d, _ in hits]))
    return out
