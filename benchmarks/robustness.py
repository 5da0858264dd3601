"""Robustness of PDQ (exact and fast) and pHash to the edits of the perceptual-hash literature.

    python benchmarks/robustness.py [--quick] [--workers N]

Corpus (``benchmarks/corpus.py``): scikit-image's bundled photographs, the PDQ
golden images and corner crops of the larger ones, 91 pictures of 26 sources.
Each original is saved as JPEG q95 and hashed from those bytes as the appliance
does (``appliance.decode.decode``, then the hasher); each edit (JPEG q90/70/50/30,
downscale, centre crop, black border, rotation, mirror, brightness, contrast,
greyscale, text overlay) is applied to the original's pixels and saved as JPEG
q90 (the JPEG-quality edits at their own quality), then hashed the same way.

Hashers: PDQ exact (full decode, ``pdq_from_rgb``); PDQ fast (decode at reduced
JPEG scale with ``fast_min_side``: the value chosen in ``benchmarks/fast_pdq.py``
and a more aggressive one, for contrast); pHash (``imagehash_family.phash``,
identical to ``imagehash.phash``, on the decoded image). A known list holds
reference hashes, so every edited copy is compared with the *exact* PDQ of its
original, whichever way the copy was hashed.

Printed per edit and hasher: recall at the default thresholds (PDQ <= 31 of 256
bits, pHash <= 10 of 64) and the mean bits changed; for the mirror, also the
recall when matching tries all 8 dihedral variants of the copy. Below: false
matches among pictures of different sources, at the same thresholds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pdqhash
from numpy.typing import NDArray

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash

from appliance.decode import decode_file as decode
from appliance.hashers.imagehash_family import phash
from appliance.hashers.pdq import pdq_dihedral_from_rgb, pdq_from_rgb
from benchmarks.corpus import (
    TRANSFORMS,
    Picture,
    Transform,
    hamming,
    jpeg_bytes,
    natural_pictures,
    resize_to_megapixels,
)
from benchmarks.fast_pdq import FAST_MIN_SIDE

PDQ_THRESHOLD = 31
PHASH_THRESHOLD = 10
AGGRESSIVE_MIN_SIDE = 256  # decodes most of this corpus at 1/2: what drift costs in recall
ORIGINAL_QUALITY = 95
MAX_PIXELS = 200_000_000
MIRROR = "mirror"
LARGE_MP = 12.0  # the second pass: camera size, where fast mode at the chosen min_side acts


@dataclass
class Hashes:
    """Every hash of one JPEG. fast: min_side -> PDQ of the reduced decode;
    dihedral: "exact" / "fast<min_side>" -> the 8 variants (mirror and originals only)."""

    exact: bytes
    quality: int
    fast: dict[int, bytes]
    phash: bytes
    scale: dict[int, int] = field(default_factory=dict)  # min_side -> JPEG scale used
    dihedral: dict[str, list[bytes]] = field(default_factory=dict)


def hash_jpeg(data: bytes, min_sides: Sequence[int], dihedral: bool) -> Hashes:
    full = decode(data, MAX_PIXELS)
    exact, quality = pdq_from_rgb(full.rgb())
    hashes = Hashes(exact, quality, {}, phash(full.image))
    if dihedral:
        hashes.dihedral["exact"] = pdq_dihedral_from_rgb(full.rgb())[0]
    for m in min_sides:
        reduced = decode(data, MAX_PIXELS, m)
        hashes.fast[m] = pdq_from_rgb(reduced.rgb())[0]
        hashes.scale[m] = reduced.scale
        if dihedral:
            hashes.dihedral[f"fast{m}"] = pdq_dihedral_from_rgb(reduced.rgb())[0]
    return hashes


@dataclass
class Result:
    """One picture: its original's hashes and each edit's, by transform name."""

    picture: Picture
    original: Hashes
    edited: dict[str, Hashes]


def hash_picture(
    picture: Picture, transforms: Sequence[Transform], min_sides: Sequence[int]
) -> Result:
    original = hash_jpeg(jpeg_bytes(picture.image, ORIGINAL_QUALITY), min_sides, dihedral=True)
    edited = {
        t.name: hash_jpeg(
            jpeg_bytes(t.apply(picture.image), t.quality), min_sides, t.name == MIRROR
        )
        for t in transforms
    }
    return Result(picture, original, edited)


# ----------------------------------------------------------------------------- checks


def check_against_peers(results: list[Result], count: int = 4) -> None:
    """Our pHash is imagehash.phash and our dihedral PDQ is pdqhash.compute_dihedral:
    checked on a few originals (re-decoded) before any figure is printed."""
    for r in results[:count]:
        data = jpeg_bytes(r.picture.image, ORIGINAL_QUALITY)
        full = decode(data, MAX_PIXELS)
        if bytes.fromhex(str(imagehash.phash(full.image))) != r.original.phash:
            raise SystemExit(f"pHash differs from imagehash.phash on {r.picture.name}")
        variants, _ = pdqhash.compute_dihedral(full.rgb())
        theirs = [np.packbits(np.asarray(v, dtype=np.uint8)).tobytes() for v in variants]
        if theirs != r.original.dihedral["exact"]:
            raise SystemExit(f"dihedral PDQ differs from pdqhash on {r.picture.name}")


# ----------------------------------------------------------------------------- distances


def as_matrix(hashes: Sequence[bytes]) -> NDArray[np.uint8]:
    """(n, bytes) uint8."""
    return np.frombuffer(b"".join(hashes), np.uint8).reshape(len(hashes), -1)


def cross_distances(queries: Sequence[bytes], references: Sequence[bytes]) -> NDArray[np.int64]:
    """(len(queries), len(references)) Hamming distances."""
    q, r = as_matrix(queries), as_matrix(references)
    out = np.empty((len(q), len(r)), dtype=np.int64)
    for i in range(len(q)):  # a row at a time keeps the temporaries small
        out[i] = np.bitwise_count(q[i] ^ r).sum(axis=1)
    return out


@dataclass(frozen=True)
class Hasher:
    """How one column hashes a copy, and what it is compared with."""

    name: str
    threshold: int
    query: str  # "exact", "fast<m>" or "phash"

    def of(self, h: Hashes) -> bytes:
        if self.query == "exact":
            return h.exact
        if self.query == "phash":
            return h.phash
        return h.fast[int(self.query.removeprefix("fast"))]

    def reference(self, original: Hashes) -> bytes:
        return original.phash if self.query == "phash" else original.exact


def hashers(min_sides: Sequence[int]) -> list[Hasher]:
    return [
        Hasher("PDQ exact", PDQ_THRESHOLD, "exact"),
        *(Hasher(f"PDQ fast@{m}", PDQ_THRESHOLD, f"fast{m}") for m in min_sides),
        Hasher("pHash", PHASH_THRESHOLD, "phash"),
    ]


# ----------------------------------------------------------------------------- report


def recall_table(results: list[Result], columns: list[Hasher], names: list[str]) -> list[str]:
    width = 14
    lines = [
        f"{'edit':<22}" + "".join(f"{c.name:>{width}}" for c in columns),
        f"{'':<22}" + "".join(f"{'recall  bits':>{width}}" for _ in columns),
    ]
    lines.append("-" * len(lines[0]))
    totals: dict[str, list[int]] = {c.name: [] for c in columns}

    def row(label: str, distances: dict[str, list[int]]) -> str:
        cells = []
        for c in columns:
            d = distances.get(c.name)
            if not d:
                cells.append(f"{'-':>{width}}")
                continue
            recall = 100 * sum(x <= c.threshold for x in d) / len(d)
            cells.append(f"{recall:>7.1f}% {statistics.mean(d):>5.1f}".rjust(width))
        return f"{label:<22}" + "".join(cells)

    for name in names:
        distances = {
            c.name: [hamming(c.of(r.edited[name]), c.reference(r.original)) for r in results]
            for c in columns
        }
        for c in columns:
            totals[c.name] += distances[c.name]
        lines.append(row(name, distances))
        if name == MIRROR:
            # Try the copy's 8 rotations/flips; the nearest one counts.
            dihedral = {
                c.name: [
                    min(hamming(v, r.original.exact) for v in r.edited[name].dihedral[c.query])
                    for r in results
                ]
                for c in columns
                if c.query != "phash"
            }
            lines.append(row("mirror, 8 dihedral", dihedral))
    lines.append("-" * len(lines[0]))
    lines.append(row("all edits (plain)", totals))
    good = [r.original.quality >= 50 for r in results]
    kept = {
        name: [d for i, d in enumerate(ds) if good[i % len(results)]] for name, ds in totals.items()
    }
    lines.append(row("  originals q >= 50", kept))
    return lines


def false_matches(results: list[Result], columns: list[Hasher]) -> list[str]:
    """False-match rates over pairs of pictures from different sources: originals
    against originals, and every copy (original or edited) against the originals;
    the median and the smallest distance of the originals' pairs."""
    sources = np.array([r.picture.source for r in results])
    distinct = sources[:, None] != sources[None, :]
    upper = np.triu(np.ones_like(distinct), 1) & distinct
    queries = [(r.picture.source, h) for r in results for h in [r.original, *r.edited.values()]]
    query_distinct = np.array([s for s, _ in queries])[:, None] != sources[None, :]
    lines = [
        f"{'hasher':<22} {'match if':>8} {'originals: false':>22} {'median':>6} {'min':>4}"
        f" {'every copy vs originals':>26}"
    ]
    lines.append("-" * len(lines[0]))

    def line(name: str, threshold: int, pairs: NDArray[np.int64], everyone: str) -> str:
        rate = _rate(float((pairs <= threshold).mean()), pairs.size)
        return (
            f"{name:<22} {f'<= {threshold}':>8} {rate:>22} {int(np.median(pairs)):>6}"
            f" {int(pairs.min()):>4} {everyone:>26}"
        )

    for c in columns:
        refs = [c.reference(r.original) for r in results]
        own = cross_distances([c.of(r.original) for r in results], refs)
        # exact and pHash are symmetric: each unordered pair once; fast vs exact is not.
        pairs = own[upper if c.query in ("exact", "phash") else distinct]
        everyone = cross_distances([c.of(h) for _, h in queries], refs)[query_distinct]
        lines.append(
            line(
                c.name,
                c.threshold,
                pairs,
                _rate(float((everyone <= c.threshold).mean()), everyone.size),
            )
        )
    # Matching that tries the 8 rotations/flips of each original against the others.
    refs = [r.original.exact for r in results]
    variants = [r.original.dihedral["exact"] for r in results]
    nearest = np.min([cross_distances([v[k] for v in variants], refs) for k in range(8)], axis=0)
    lines.append(line("PDQ exact, 8 dihedral", PDQ_THRESHOLD, nearest[distinct], "-"))
    return lines


def _rate(rate: float, n: int) -> str:
    return f"{100 * rate:.3f}% of {n}"


def report(results: list[Result], min_sides: list[int], title: str) -> None:
    columns = hashers(min_sides)
    low = [r.picture.name for r in results if r.original.quality < 50]
    sizes = sorted(r.picture.image.size[0] * r.picture.image.size[1] / 1e6 for r in results)
    print(f"## {title}")
    print(
        f"{len(results)} pictures of {len({r.picture.source for r in results})} sources, "
        + (
            f"{sizes[0]:.2g} MP each; "
            if f"{sizes[0]:.2g}" == f"{sizes[-1]:.2g}"
            else f"{sizes[0]:.2g}-{sizes[-1]:.2g} MP (median {statistics.median(sizes):.2g}); "
        )
        + ", ".join(
            f"fast@{m} decodes {sum(r.original.scale[m] > 1 for r in results)} originals reduced"
            for m in min_sides
        )
    )
    print()
    print("\n".join(recall_table(results, columns, [t.name for t in TRANSFORMS])))
    print(
        f"\n{len(low)} of {len(results)} originals have PDQ quality < 50 (none skipped)"
        + (": " + ", ".join(low) if low else "")
    )
    print("\nfalse matches over pairs of pictures from different sources (same source left out)")
    print("\n".join(false_matches(results, columns)))
    print()


def hash_all(pictures: list[Picture], min_sides: list[int], workers: int) -> list[Result]:
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: hash_picture(p, TRANSFORMS, min_sides), pictures))
    check_against_peers(results)
    return results


def one_per_source(pictures: list[Picture]) -> list[Picture]:
    """The largest picture of each source."""
    best: dict[str, Picture] = {}
    for p in pictures:
        if p.source not in best or _pixels(p) > _pixels(best[p.source]):
            best[p.source] = p
    return list(best.values())


def _pixels(p: Picture) -> int:
    return p.image.size[0] * p.image.size[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="a dozen pictures, 4 large: a smoke run"
    )
    parser.add_argument("--fast-min-side", type=int, default=FAST_MIN_SIDE)
    parser.add_argument("--aggressive-min-side", type=int, default=AGGRESSIVE_MIN_SIDE)
    parser.add_argument(
        "--large-mp", type=float, default=LARGE_MP,
        help="second pass: one picture per source upscaled to this many MP (0: skip)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    pdq_from_rgb(np.zeros((8, 8, 3), np.uint8))  # compile / load the numba cache first
    pictures = natural_pictures()
    large = one_per_source(pictures)
    if args.quick:
        pictures, large = pictures[::8][:12], large[::7][:4]
    min_sides = [args.fast_min_side, args.aggressive_min_side]
    print(
        f"{len(TRANSFORMS)} edits of each original; originals saved as JPEG q{ORIGINAL_QUALITY}, "
        f"edits as q90 unless named; {args.workers} threads.\n"
        f"thresholds: PDQ distance <= {PDQ_THRESHOLD} of 256 bits, "
        f"pHash <= {PHASH_THRESHOLD} of 64.\n"
        "recall: % of pictures whose edited copy matches its original; bits: mean distance.\n"
        "Every PDQ column compares with the exact PDQ of the original (what a list holds).\n"
        "crop p%: p% of each side trimmed at both ends; border: 5% of each side added.\n"
    )
    report(hash_all(pictures, min_sides, args.workers), min_sides, "Pictures as they come")
    if args.large_mp > 0:
        upscaled = [
            Picture(p.name, p.source, resize_to_megapixels(p.image, args.large_mp)) for p in large
        ]
        report(
            hash_all(upscaled, min_sides, args.workers),
            min_sides,
            f"One picture per source, upscaled (Lanczos) to {args.large_mp:g} MP",
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
