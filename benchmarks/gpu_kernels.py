"""GPU kernels beside their CPU twins, on the same data in one run.

    python benchmarks/gpu_kernels.py [--entries N] [--tiny]

Rows, each printed as soon as it is measured (the answers are checked on a
sample before anything is timed; GPU times are medians of 3 after a warm run):

- Hamming radius 31 over N random PDQ entries (default 10M): the GPU kernel
  (kernels.hamming, a batch of 4096 queries) vs the CPU multi-index hashing
  index (one thread), queries/s; and the host-to-device copy GB/s of the index.
- Exact MD5 lookup over N keys: the GPU kernel (kernels.exact, 1M queries) vs
  the CPU ExactIndex (one thread), lookups/s.
- Fused MD5+SHA-1+SHA-256 (kernels.digests) on 4096 files of 256 KiB, GB/s,
  device-side, vs hashlib on one thread.
- The digest sweep that sets ``gpu.digest_cpu_min_bytes``: per file size, a
  batch such as the batcher makes of files of that size (at most
  ``limits.max_request_files`` files and ``limits.max_request_bytes``) digested
  as GpuPipeline does it (pinned staging, upload, one kernel, digests back) vs
  hashlib on a pool of one thread per core, as the CPU stage does it. One GPU
  thread walks one file, so past some size the CPU threads win; the line
  ``digest_cpu_min_bytes: N (measured)`` gives the smallest size swept from
  which they win at every larger size.
- PDQ of decoded 1024x768 images (kernels.pdq, a batch of 256) vs the CPU
  exact path on one thread, images/s; hashes checked identical first.

A row that fails (an exception, a wrong answer) prints ``FAILED <row>: why``
and the next rows still run; the last line is ``fallbacks: 0`` (the kernels
are called directly, so a device fault fails its row rather than falling
back), and the exit status is 1 if any row failed.

``--tiny`` runs a few thousand entries under Numba's CUDA simulator with NumPy
in place of CuPy, so that the script is known to work before it meets a GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Bench:
    """What every row needs: the array module, its device, sizes and data."""

    tiny: bool
    xp: Any
    device: Any  # appliance.gpu.device.Device
    n: int
    n_queries: int
    n_lookups: int
    rng: np.random.Generator
    values: np.ndarray[Any, Any]  # (n, 32) uint8 PDQ entries

    def sync(self) -> None:
        if not self.tiny:
            self.xp.cuda.Device().synchronize()

    def timed(self, fn: Callable[[], Any], reps: int = 3) -> float:
        """Median seconds of ``fn`` (after one untimed run), the device synchronised."""
        fn()
        times = []
        for _ in range(1 if self.tiny else reps):
            self.sync()
            started = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - started)
        return statistics.median(times)


def row(what: str, data: str, gpu: float | None, cpu: float | None, digits: int = 0) -> None:
    """One table row, printed at once; figures are rates (higher is better)."""
    ratio = f"{gpu / cpu:.1f}x" if gpu is not None and cpu else "-"
    g = "-" if gpu is None else f"{gpu:,.{digits}f}"
    c = "-" if cpu is None else f"{cpu:,.{digits}f}"
    print(f"{what:<32} {data:<16} {g:>14} {c:>14} {ratio:>8}", flush=True)


def size_name(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else (
        f"{n // KiB} KiB" if n >= KiB and n % KiB == 0 else f"{n} B")


def crossover(sweep: Sequence[tuple[int, float, float]]) -> tuple[int, str]:
    """(digest_cpu_min_bytes, why) from (file size, gpu s, cpu s) rows by size:
    the smallest size from which the CPU threads win at every larger size swept."""
    if not sweep:
        raise ValueError("no sizes were measured")
    chosen = None
    for size, gpu_s, cpu_s in reversed(sweep):
        if cpu_s >= gpu_s:
            break
        chosen = size
    largest = sweep[-1][0]
    if chosen is None:
        return 2 * largest, f"the GPU won at every size swept, up to {size_name(largest)}"
    if chosen == sweep[0][0]:
        return chosen, f"the CPU threads won at every size swept, from {size_name(chosen)}"
    return chosen, f"the CPU threads win from {size_name(chosen)} up"


def _three(part: Any) -> tuple[bytes, bytes, bytes]:
    # hashlib releases the GIL on buffers over 2 KiB, so threads run in parallel.
    return hashlib.md5(part).digest(), hashlib.sha1(part).digest(), hashlib.sha256(part).digest()


# ----------------------------------------------------------------------------- rows


def hamming_rows(b: Bench) -> None:
    from appliance.index.hamming import pack
    from appliance.index.mih import MultiIndexHamming
    from kernels import hamming

    xp, n = b.xp, b.n
    picks = b.rng.integers(0, n, b.n_queries // 2)
    near = b.values[picks].copy()
    near[:, :2] ^= np.uint8(0b101)  # 4 bits away
    queries = np.concatenate(
        [near, b.rng.integers(0, 256, (b.n_queries - len(near), 32), np.uint8)])
    host_entries = np.ascontiguousarray(pack(b.values))
    b.sync()
    started = time.perf_counter()
    dev_entries = xp.asarray(host_entries)
    b.sync()
    copy_s = time.perf_counter() - started
    dev_queries = xp.asarray(np.ascontiguousarray(pack(queries)))
    index = MultiIndexHamming(b.values, np.arange(n, dtype=np.int64))
    sample = min(200, b.n_queries)
    cpu = index.search(queries[:sample], 31)
    qi, ei, _ = hamming.search(dev_entries, xp.asarray(pack(queries[:sample])), 31, xp)
    for q in range(sample):  # the kernel's hits are the CPU twin's
        mine = sorted(ei[qi == q].tolist())
        assert mine == sorted(cpu[q][0].tolist()), f"query {q}: hits differ from the CPU index"
    gpu_s = b.timed(lambda: hamming.search(dev_entries, dev_queries, 31, xp))
    cpu_n = min(b.n_queries, 64 if b.tiny else 200)
    started = time.perf_counter()
    index.search(queries[:cpu_n], 31)
    cpu_s = time.perf_counter() - started
    row("hamming r31 queries/s", f"{n:,} PDQ", b.n_queries / gpu_s, cpu_n / cpu_s)
    row("host->device copy GB/s", f"{host_entries.nbytes / 1e6:.0f} MB",
        host_entries.nbytes / copy_s / 1e9, None, 1)


def exact_row(b: Bench) -> None:
    from appliance.index.exact import ExactIndex, _words_of
    from kernels import exact

    xp = b.xp
    md5 = b.rng.integers(0, 256, (b.n, 16), dtype=np.uint8)
    index = ExactIndex(md5, np.arange(b.n, dtype=np.int64))
    keys = xp.asarray(np.array(index.keys))
    lookups = md5[b.rng.integers(0, b.n, b.n_lookups)]
    words = xp.asarray(_words_of(lookups, 16, "queries"))
    _, count = exact.find(keys, words, xp)
    assert int(count.min()) >= 1, "a listed key was not found"
    gpu_s = b.timed(lambda: exact.find(keys, words, xp))
    started = time.perf_counter()
    index.lookup(lookups)
    cpu_s = time.perf_counter() - started
    row("exact md5 lookups/s", f"{b.n:,} MD5", b.n_lookups / gpu_s, b.n_lookups / cpu_s)


def digest_row(b: Bench) -> None:
    from kernels import digests

    xp = b.xp
    files, size = (8, 1 * KiB) if b.tiny else (4096, 256 * KiB)
    blob = b.rng.integers(0, 256, files * size, dtype=np.uint8)
    # Device arrays for all three: CuPy's ascontiguousarray refuses NumPy input.
    dev_blob = xp.asarray(blob)
    offsets = xp.asarray(np.arange(files, dtype=np.int64) * size)
    lengths = xp.asarray(np.full(files, size, dtype=np.int64))
    columns = digests.digest_batch(dev_blob, offsets, lengths, xp)
    host = [np.asarray(a.get() if hasattr(a, "get") else a) for a in columns]
    for i in range(min(files, 8)):  # the kernel's digests are hashlib's
        want = _three(blob[i * size:(i + 1) * size].tobytes())
        assert tuple(h[i].tobytes() for h in host) == want, f"file {i}: digests differ"
    gpu_s = b.timed(lambda: digests.digest_batch(dev_blob, offsets, lengths, xp))
    sample = min(files, 64)
    started = time.perf_counter()
    for i in range(sample):
        _three(blob[i * size:(i + 1) * size].tobytes())
    cpu_s = time.perf_counter() - started
    row("digests md5+sha1+sha256 GB/s", f"{files}x{size_name(size)}",
        blob.nbytes / gpu_s / 1e9, sample * size / cpu_s / 1e9, 2)


def digest_sweep(b: Bench) -> None:
    from appliance.config import Config
    from kernels.digests import digest_batch

    limits = Config().limits
    dev, threads = b.device, os.cpu_count() or 1
    sizes = (256, 1 * KiB, 4 * KiB) if b.tiny else (
        4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB)
    measured: list[tuple[int, float, float]] = []
    print(f"  digest sweep: gpu = staged, uploaded, one kernel, digests back; "
          f"cpu = hashlib on {threads} threads", flush=True)
    with ThreadPoolExecutor(threads) as pool:
        for size in sizes:
            count = 4 if b.tiny else max(1, min(limits.max_request_files,
                                                limits.max_request_bytes // size))
            blob = b.rng.integers(0, 256, count * size, dtype=np.uint8)
            lengths = np.full(count, size, dtype=np.int64)
            offsets = np.arange(count, dtype=np.int64) * size
            parts = [blob.data[i * size:(i + 1) * size] for i in range(count)]

            def on_gpu(blob: Any = blob, lengths: Any = lengths, offsets: Any = offsets) -> Any:
                with dev.scope():  # as appliance.gpu.hashers.Digests does it
                    flat = dev.staging(blob.nbytes)
                    flat[:] = blob
                    columns = digest_batch(dev.upload(flat), dev.upload(offsets),
                                           dev.upload(lengths), dev.xp, stream=dev.kernel_stream)
                    return [dev.to_host(c) for c in columns]

            got = on_gpu()
            assert tuple(c[0].tobytes() for c in got) == _three(parts[0]), "digests differ"
            def on_cpu(parts: list[memoryview] = parts) -> Any:
                return list(pool.map(_three, parts))

            gpu_s, cpu_s = b.timed(on_gpu), b.timed(on_cpu)
            measured.append((size, gpu_s, cpu_s))
            row("digest sweep MB/s", f"{count}x{size_name(size)}",
                count * size / gpu_s / 1e6, count * size / cpu_s / 1e6, 1)
            if gpu_s > 2.0 and cpu_s < gpu_s:
                break  # the CPU has won, and larger files only favour it more
    chosen, why = crossover(measured)
    how = "simulator: not a measurement" if b.tiny else "measured"
    print(f"digest_cpu_min_bytes: {chosen} ({how}; {why}; the default is "
          f"{Config().gpu.digest_cpu_min_bytes})", flush=True)


def pdq_row(b: Bench) -> None:
    from appliance.hashers.pdq import pdq_from_rgb
    from kernels import pdq

    count, (height, width) = (2, (30, 20)) if b.tiny else (256, (768, 1024))
    small = b.rng.integers(0, 256, (count, height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    noise = b.rng.integers(-9, 10, (height, width, 3), dtype=np.int8)
    images = [  # blocky pictures with noise: quality well above 0
        np.clip(np.repeat(np.repeat(block, 8, 0), 8, 1)[:height, :width].astype(np.int16)
                + np.roll(noise, k, axis=0), 0, 255).astype(np.uint8)
        for k, block in enumerate(small)]
    hashes, qualities = pdq.pdq_batch(images[:8], b.xp)
    for i, rgb in enumerate(images[:8]):  # the kernel's hashes are the CPU path's
        assert (hashes[i].tobytes(), int(qualities[i])) == pdq_from_rgb(rgb), f"image {i}"
    gpu_s = b.timed(lambda: pdq.pdq_batch(images, b.xp))
    cpu_n = min(count, 32)
    started = time.perf_counter()
    for rgb in images[:cpu_n]:
        pdq_from_rgb(rgb)
    cpu_s = time.perf_counter() - started
    row("pdq images/s (decoded)", f"{count}x{width}x{height}", count / gpu_s, cpu_n / cpu_s)


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--tiny", action="store_true", help="simulator, 3000 entries")
    args = parser.parse_args()
    if args.tiny:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from appliance.gpu.device import open_device

    device = open_device("gpu-sim" if args.tiny else "gpu")
    n, n_queries, n_lookups = (3000, 64, 256) if args.tiny else (args.entries, 4096, 1_000_000)
    rng = np.random.default_rng(2026)
    bench = Bench(args.tiny, device.xp, device, n, n_queries, n_lookups, rng,
                  rng.integers(0, 256, (n, 32), dtype=np.uint8))
    print(f"kernels on {device.name}; cpu column: one thread unless the row says otherwise",
          flush=True)
    print(f"{'what':<32} {'data':<16} {'gpu':>14} {'cpu':>14} {'gpu/cpu':>8}")
    print("-" * 88, flush=True)
    failed = []
    rows = (("hamming", hamming_rows), ("exact", exact_row), ("digests", digest_row),
            ("digest sweep", digest_sweep), ("pdq", pdq_row))
    for name, fn in rows:
        try:
            fn(bench)
        except Exception as exc:  # one broken kernel must not hide the others' rows
            traceback.print_exc()
            print(f"FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
    if args.tiny:
        print("(simulator: figures mean nothing; the run checks that the script works)")
    print("fallbacks: 0", flush=True)  # kernels are called directly: nothing falls back
    if failed:
        print(f"FAILED: {len(failed)} row(s): {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
