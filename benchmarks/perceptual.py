"""Perceptual hashing, ours beside the reference tools on the same files in one run.

    python -m benchmarks.perceptual [--repeat N] [--quick]

On synthetic JPEG photographs of about 0.3, 2 and 12 MP, in images/s (medians):

- PDQ on decoded pixels: ``pdq_from_rgb`` vs ``pdqhash.compute``;
- PDQ from bytes (decode + hash), exact mode: ``decode`` + ``pdq_from_rgb`` vs
  Pillow's full decode + ``convert("RGB")`` + ``pdqhash.compute``;
- PDQ from bytes, fast mode (JPEG decoded at a reduced DCT scale), against the
  same peer, with its drift from the exact hash on these files;
- the imagehash family (aHash, pHash, dHash, wHash): ``family_hashes`` vs
  ``imagehash``'s four functions called one after the other;

each on one thread and on a pool of all cores. Every result is checked against
the peer's before any time is reported (fast PDQ: against its own definition).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import imagehash
import numpy as np
import pdqhash
from PIL import Image

from appliance.config import HashingConfig
from appliance.decode import decode_file as decode
from appliance.hashers.imagehash_family import FAMILY, family_hashes
from appliance.hashers.pdq import pdq_from_rgb
from benchmarks.cpu_hashing import Row, median_seconds, natural_jpeg, print_table

FAST_MIN_SIDE = HashingConfig().fast_min_side
MAX_PIXELS = 200_000_000
SIZES = {"0.3 MP": (480, 640), "2 MP": (1200, 1600), "12 MP": (3000, 4000)}


def peer_pdq_bytes(data: bytes) -> bytes:
    """What a user of the reference does: Pillow full decode, RGB, pdqhash."""
    with Image.open(io.BytesIO(data)) as image:
        bits, _ = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def peer_pdq_pixels(rgb: np.ndarray) -> bytes:
    bits, _ = pdqhash.compute(rgb)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def ours_pdq_bytes(data: bytes) -> bytes:
    return pdq_from_rgb(decode(data, MAX_PIXELS).rgb())[0]


def ours_fast_pdq_bytes(data: bytes) -> bytes:
    return pdq_from_rgb(decode(data, MAX_PIXELS, FAST_MIN_SIDE).rgb())[0]


def peer_family(image: Image.Image) -> dict[str, bytes]:
    hashes = {
        "ahash": imagehash.average_hash(image), "phash": imagehash.phash(image),
        "dhash": imagehash.dhash(image), "whash": imagehash.whash(image),
    }
    return {name: bytes.fromhex(str(h)) for name, h in hashes.items()}


def rate(fn: Callable[[Any], Any], items: Sequence[Any], repeat: int,
         pool: ThreadPoolExecutor | None) -> float:
    if pool is None:
        return len(items) / median_seconds(lambda: [fn(x) for x in items], repeat)
    return len(items) / median_seconds(lambda: list(pool.map(fn, items)), repeat)


def bench_size(label: str, files: list[bytes], repeat: int, threads: int) -> list[Row]:
    rgbs = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]
    images = []
    for f in files:
        image = Image.open(io.BytesIO(f))
        image.load()
        images.append(image)
    # Correctness first: exact equals the reference; fast is what it says it is.
    for data, rgb in zip(files, rgbs, strict=True):
        assert ours_pdq_bytes(data) == peer_pdq_bytes(data) == peer_pdq_pixels(rgb)
        draft = Image.open(io.BytesIO(data))
        draft.draft(None, (FAST_MIN_SIDE, FAST_MIN_SIDE))
        assert ours_fast_pdq_bytes(data) == pdq_from_rgb(np.asarray(draft.convert("RGB")))[0]
    assert [family_hashes(im, FAMILY) for im in images] == [peer_family(im) for im in images]
    drift = [
        bin(int.from_bytes(ours_fast_pdq_bytes(f), "big")
            ^ int.from_bytes(ours_pdq_bytes(f), "big")).count("1")
        for f in files
    ]
    print(f"{label}: fast-mode drift from exact on these {len(files)} files: "
          f"median {statistics.median(drift)}, max {max(drift)} bits")
    family_one = lambda im: family_hashes(im, FAMILY)  # noqa: E731
    rows = []
    with ThreadPoolExecutor(threads) as pool:
        for pool_or_none, how in ((None, "1 thread"), (pool, f"{threads} threads")):
            rows += [
                Row(f"pdq pixels, {how}", label, rate(lambda r: pdq_from_rgb(r)[0], rgbs,
                    repeat, pool_or_none), rate(peer_pdq_pixels, rgbs, repeat, pool_or_none),
                    "img/s"),
                Row(f"pdq bytes exact, {how}", label, rate(ours_pdq_bytes, files, repeat,
                    pool_or_none), rate(peer_pdq_bytes, files, repeat, pool_or_none), "img/s"),
                Row(f"pdq bytes fast, {how}", label, rate(ours_fast_pdq_bytes, files, repeat,
                    pool_or_none), rate(peer_pdq_bytes, files, repeat, pool_or_none), "img/s"),
                Row(f"imagehash x4, {how}", label, rate(family_one, images, repeat,
                    pool_or_none), rate(peer_family, images, repeat, pool_or_none), "img/s"),
            ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="fewer files, for a smoke run")
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    counts = {"0.3 MP": 16, "2 MP": 6, "12 MP": 2} if not args.quick else {
        "0.3 MP": 4, "2 MP": 2, "12 MP": 1}
    print(f"pdqhash {getattr(pdqhash, '__version__', '?')}, imagehash {imagehash.__version__}, "
          f"{threads} CPUs, repeat {args.repeat}, fast mode min side {FAST_MIN_SIDE}\n")
    rows: list[Row] = []
    for label, (height, width) in SIZES.items():
        files = [natural_jpeg(height, width, seed) for seed in range(counts[label])]
        rows += bench_size(label, files, max(1, args.repeat), threads)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
