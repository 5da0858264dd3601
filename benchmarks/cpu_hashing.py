"""CPU hashing, ours beside its peer on the same data in the same run.

    python benchmarks/cpu_hashing.py [--repeat N] [--quick]

(a) Digests: ``appliance.hashers.digests.digest_bytes`` (MD5 + SHA-1 + SHA-256)
    against plain hashlib doing the three one after the other, in MB/s: on one
    thread, then spread over a thread pool as the pipeline does (one
    ``digest_bytes`` per file, as ``Pipeline.hash_item`` runs on its pool).
(b) PDQ: ``appliance.hashers.pdq.pdq_from_rgb`` against ``pdqhash.compute`` (the
    C++ reference) on the same decoded RGB pixels of synthetic natural-looking
    pictures of about 1 MP and 12 MP, in images/s on one thread; then both on a
    thread pool over all cores.

Every figure is the median over the repeats. Each result is checked against the
peer's before any time is reported, so a fast but wrong result fails loudly.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pdqhash
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from appliance.hashers.digests import digest_bytes
from appliance.hashers.pdq import pdq_from_rgb

ALGORITHMS = ("md5", "sha1", "sha256")
RGB = NDArray[np.uint8]


@dataclass(frozen=True)
class Row:
    section: str
    case: str
    ours: float
    peer: float
    unit: str

    @property
    def ratio(self) -> float:
        return self.ours / self.peer


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of run() over repeat calls (after one untimed warm-up)."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- digests


def hashlib_sequential(data: bytes) -> dict[str, bytes]:
    """The peer: each digest in turn, straight from hashlib."""
    return {name: hashlib.new(name, data).digest() for name in ALGORITHMS}


def bench_digests(count: int, size: int, repeat: int, threads: int) -> list[Row]:
    """One thread (the cost per file), then the pipeline's way: files spread
    over a pool of ``threads`` (hashlib releases the GIL)."""
    rng = np.random.default_rng(size)
    files = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(count)]
    for data in files[:8]:
        assert digest_bytes(data, ALGORITHMS) == hashlib_sequential(data), "digests disagree"
    megabytes = count * size / 1e6
    label = f"{count} x {size // 1024} KiB" if size < 1 << 20 else f"{count} x {size >> 20} MiB"
    peer = median_seconds(lambda: [hashlib_sequential(d) for d in files], repeat)
    ours = median_seconds(lambda: [digest_bytes(d, ALGORITHMS) for d in files], repeat)
    with ThreadPoolExecutor(threads) as pool:

        def pipeline_way(items: list[bytes]) -> list[dict[str, bytes]]:
            return list(pool.map(lambda d: digest_bytes(d, ALGORITHMS), items))

        assert pipeline_way(files[:8]) == [
            hashlib_sequential(d) for d in files[:8]
        ], "pooled digests disagree"
        pooled = median_seconds(lambda: pipeline_way(files), repeat)
    return [
        Row("digests, 1 thread", label, megabytes / ours, megabytes / peer, "MB/s"),
        Row(f"digests, {threads} threads", label, megabytes / pooled, megabytes / peer, "MB/s"),
    ]


# ----------------------------------------------------------------------------- PDQ


def natural_image(height: int, width: int, seed: int) -> RGB:
    """Decoded RGB pixels of natural_jpeg, decoded by Pillow as the appliance does
    (a read-only array)."""
    with Image.open(io.BytesIO(natural_jpeg(height, width, seed))) as decoded:
        return np.asarray(decoded.convert("RGB"))


def natural_jpeg(height: int, width: int, seed: int, quality: int = 90) -> bytes:
    """A synthetic picture as JPEG bytes: smooth shapes, hard-edged objects, texture
    and noise, so that decoding and hashing cost what they cost on photographs."""
    rng = np.random.default_rng(seed)
    # The scene (soft blobs and waves) is drawn at 1/8 size and upscaled: fast.
    h8, w8 = max(1, height // 8), max(1, width // 8)
    yy = np.linspace(0, 1, h8, dtype=np.float32)[:, None, None]
    xx = np.linspace(0, 1, w8, dtype=np.float32)[None, :, None]
    scene = np.full((h8, w8, 3), 110, dtype=np.float32)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1, 3)
        tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        scene += 70 * tint * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.1 * r))
        fy, fx = rng.uniform(2, 40, 2)
        scene += 12 * np.sin(fy * yy + rng.uniform(0, 6)) * np.cos(fx * xx)
    picture = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(picture)
    for _ in range(8):  # objects with hard edges
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        fill = tuple(rng.integers(0, 256, 3).tolist())
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    pixels = np.asarray(picture, dtype=np.int16)
    noisy = pixels + rng.integers(-10, 11, pixels.shape, dtype=np.int16)  # texture, sensor noise
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def reference_pdq(rgb: RGB) -> tuple[bytes, int]:
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def images_per_second(
    hasher: Callable[[RGB], Any],
    images: Sequence[RGB],
    repeat: int,
    pool: ThreadPoolExecutor | None,
) -> float:
    if pool is None:
        seconds = median_seconds(lambda: [hasher(im) for im in images], repeat)
    else:
        seconds = median_seconds(lambda: list(pool.map(hasher, images)), repeat)
    return len(images) / seconds


def bench_pdq(label: str, images: Sequence[RGB], repeat: int, threads: int) -> list[Row]:
    for rgb in images:  # also compiles (or loads from the disk cache) our kernels
        ours, peer = pdq_from_rgb(rgb), reference_pdq(rgb)
        assert ours == peer, f"PDQ disagrees with pdqhash on a {rgb.shape} image"
    shape = f"{images[0].shape[1]}x{images[0].shape[0]}"
    rows = [
        Row(
            "pdq, 1 thread",
            f"{label} ({shape})",
            images_per_second(pdq_from_rgb, images, repeat, None),
            images_per_second(reference_pdq, images, repeat, None),
            "img/s",
        )
    ]
    batch = list(images) * max(1, (2 * threads) // len(images))
    with ThreadPoolExecutor(threads) as pool:
        assert list(pool.map(pdq_from_rgb, batch)) == [reference_pdq(im) for im in batch]
        rows.append(
            Row(
                f"pdq, {threads} threads",
                f"{label} ({shape})",
                images_per_second(pdq_from_rgb, batch, repeat, pool),
                images_per_second(reference_pdq, batch, repeat, pool),
                "img/s",
            )
        )
    return rows


# ----------------------------------------------------------------------------- main


def print_table(rows: Sequence[Row]) -> None:
    header = f"{'what':<26} {'case':<24} {'ours':>12} {'peer':>12} {'unit':<6} {'ours/peer':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.section:<26} {r.case:<24} {r.ours:>12.1f} {r.peer:>12.1f} {r.unit:<6} "
            f"{r.ratio:>8.2f}x"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="less data, for a smoke run")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)
    threads = os.cpu_count() or 1
    scale = 4 if args.quick else 1
    print(
        f"numpy {np.__version__}, pdqhash {getattr(pdqhash, '__version__', '?')}, "
        f"{threads} CPUs, repeat {repeat}{', quick' if args.quick else ''}; peers: "
        "hashlib md5, sha1, sha256 one after the other; pdqhash.compute\n"
    )
    rows = [
        *bench_digests(64 // scale, 1 << 20, repeat, threads),
        *bench_digests(4096 // scale, 16 << 10, repeat, threads),
    ]
    start = time.perf_counter()
    one_mp = [natural_image(1000, 1000, seed) for seed in range(8 // scale)]
    twelve_mp = [natural_image(3000, 4000, seed) for seed in range(2 if args.quick else 3)]
    print(f"(made the test pictures in {time.perf_counter() - start:.1f} s)")
    rows += bench_pdq("1 MP", one_mp, repeat, threads)
    rows += bench_pdq("12 MP", twelve_mp, max(1, repeat // 2) if args.quick else repeat, threads)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
