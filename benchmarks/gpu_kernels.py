"""GPU matching kernels beside their CPU twins, on the same data in one run.

    python benchmarks/gpu_kernels.py [--entries N] [--tiny]

- Hamming radius 31 over N random PDQ entries (default 10M): the GPU kernel
  (kernels.hamming, a batch of 4096 queries) vs the CPU multi-index hashing
  index (one thread), queries/s; results checked equal on a sample first.
- Exact MD5 lookup over N keys: the GPU kernel (kernels.exact, 1M queries) vs
  the CPU ExactIndex (one thread), lookups/s.
- Host-to-device copy GB/s of the index arrays.
- Fused MD5+SHA-1+SHA-256 (kernels.digests) on 4096 files of 256 KiB, GB/s,
  device-side, vs hashlib on one thread; digests checked on a sample first.
- One file alone through the digest kernel vs one CPU core, by size: where
  a large file is better sent to the CPU threads (gpu.digest_cpu_min_bytes).
- PDQ of decoded 1024x768 images (kernels.pdq, a batch of 512) vs the CPU
  exact path on one thread, images/s; hashes checked identical first.

``--tiny`` runs a few thousand entries under Numba's CUDA simulator with NumPy
in place of CuPy, so that the script is known to work before it meets a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--tiny", action="store_true", help="simulator, 3000 entries")
    args = parser.parse_args()
    if args.tiny:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from appliance.hashers.pdq import pdq_from_rgb
    from appliance.index.exact import ExactIndex, _words_of
    from appliance.index.hamming import pack
    from appliance.index.mih import MultiIndexHamming
    from kernels import digests, exact, hamming, pdq

    xp: Any
    if args.tiny:
        xp, sync = np, (lambda: None)
        n, n_queries, n_lookups = 3000, 64, 256
    else:
        import cupy

        xp, sync = cupy, cupy.cuda.Device().synchronize
        n, n_queries, n_lookups = args.entries, 4096, 1_000_000
    rng = np.random.default_rng(2026)
    values = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    rows = np.arange(n, dtype=np.int64)
    picks = rng.integers(0, n, n_queries // 2)
    near = values[picks].copy()
    near[:, :2] ^= np.uint8(0b101)  # 4 bits away
    queries = np.concatenate([near, rng.integers(0, 256, (n_queries - len(near), 32), np.uint8)])
    rows_out: list[tuple[str, str, str, str]] = []

    # -- Hamming ------------------------------------------------------------
    host_entries = np.ascontiguousarray(pack(values))
    start = time.perf_counter()
    dev_entries = xp.asarray(host_entries)
    sync()
    copy_s = time.perf_counter() - start
    dev_queries = xp.asarray(np.ascontiguousarray(pack(queries)))
    index = MultiIndexHamming(values, rows)
    sample = min(200, n_queries)
    cpu = index.search(queries[:sample], 31)
    qi, ei, _ = hamming.search(dev_entries, xp.asarray(pack(queries[:sample])), 31, xp)
    for q in range(sample):  # the kernel's hits are the CPU twin's
        mine = sorted(ei[qi == q].tolist())
        assert mine == sorted(cpu[q][0].tolist()), f"query {q} differs"
    sync()
    start = time.perf_counter()
    qi, _, _ = hamming.search(dev_entries, dev_queries, 31, xp)
    sync()
    gpu_s = time.perf_counter() - start
    cpu_sample = min(n_queries, 200 if not args.tiny else 64)
    start = time.perf_counter()
    index.search(queries[:cpu_sample], 31)
    cpu_s = time.perf_counter() - start
    gpu_qps, cpu_qps = n_queries / gpu_s, cpu_sample / cpu_s
    rows_out.append(
        ("hamming r31 queries/s", f"{n:,} PDQ", f"{gpu_qps:,.0f}", f"{cpu_qps:,.0f}")
    )
    rows_out.append(("host->device copy GB/s", f"{host_entries.nbytes / 1e6:.0f} MB",
                     f"{host_entries.nbytes / copy_s / 1e9:.1f}", "-"))

    # -- exact ----------------------------------------------------------------
    md5 = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    exact_index = ExactIndex(md5, rows)
    keys = xp.asarray(np.array(exact_index.to_arrays()["keys"]))
    lookups = md5[rng.integers(0, n, n_lookups)]
    words = xp.asarray(_words_of(lookups, 16, "queries"))
    _, count = exact.find(keys, words, xp)
    assert int(count.min()) >= 1, "a listed key was not found"
    sync()
    start = time.perf_counter()
    exact.find(keys, words, xp)
    sync()
    gpu_l = n_lookups / (time.perf_counter() - start)
    start = time.perf_counter()
    exact_index.lookup(lookups)
    cpu_l = n_lookups / (time.perf_counter() - start)
    rows_out.append(("exact md5 lookups/s", f"{n:,} MD5", f"{gpu_l:,.0f}", f"{cpu_l:,.0f}"))

    # -- digests ------------------------------------------------------------------
    import hashlib

    files, size = (8, 1024) if args.tiny else (4096, 256 << 10)
    blob = rng.integers(0, 256, files * size, dtype=np.uint8)
    offsets = np.arange(files, dtype=np.int64) * size
    lengths = np.full(files, size, dtype=np.int64)
    dev_blob = xp.asarray(blob)
    md5_d, sha1_d, sha256_d = digests.digest_batch(dev_blob, offsets, lengths, xp)
    host = [np.asarray(a.get() if hasattr(a, "get") else a) for a in (md5_d, sha1_d, sha256_d)]
    for i in range(min(files, 8)):  # the kernel's digests are hashlib's
        part = blob[i * size:(i + 1) * size].tobytes()
        assert host[0][i].tobytes() == hashlib.md5(part).digest()
        assert host[1][i].tobytes() == hashlib.sha1(part).digest()
        assert host[2][i].tobytes() == hashlib.sha256(part).digest()
    sync()
    start = time.perf_counter()
    digests.digest_batch(dev_blob, offsets, lengths, xp)
    sync()
    gpu_gbs = blob.nbytes / (time.perf_counter() - start) / 1e9
    sample = min(files, 64)
    start = time.perf_counter()
    for i in range(sample):
        part = blob[i * size:(i + 1) * size].tobytes()
        hashlib.md5(part).digest(), hashlib.sha1(part).digest(), hashlib.sha256(part).digest()
    cpu_gbs = sample * size / (time.perf_counter() - start) / 1e9
    rows_out.append(("digests md5+sha1+sha256 GB/s", f"{files}x{size >> 10} KiB",
                     f"{gpu_gbs:,.2f}", f"{cpu_gbs:,.2f}"))

    # -- where large files go to the CPU --------------------------------------------
    # One GPU thread walks one file's blocks in sequence: time one file alone on
    # the device against one CPU core, by size (gpu.digest_cpu_min_bytes).
    for size in ((1024, 4096) if args.tiny else (64 << 10, 256 << 10, 1 << 20, 4 << 20)):
        one = xp.asarray(blob[:size]) if size <= blob.nbytes else xp.asarray(
            rng.integers(0, 256, size, dtype=np.uint8))
        off1, len1 = np.zeros(1, np.int64), np.full(1, size, np.int64)
        digests.digest_batch(one, off1, len1, xp)
        sync()
        start = time.perf_counter()
        digests.digest_batch(one, off1, len1, xp)
        sync()
        gpu_one = time.perf_counter() - start
        part = np.asarray(one.get() if hasattr(one, "get") else one).tobytes()
        start = time.perf_counter()
        hashlib.md5(part).digest(), hashlib.sha1(part).digest(), hashlib.sha256(part).digest()
        cpu_one = time.perf_counter() - start
        rows_out.append(("one file alone, ms (gpu thread)", f"{size >> 10} KiB",
                         f"{gpu_one * 1e3:,.2f}", f"{cpu_one * 1e3:,.2f}"))

    # -- PDQ ------------------------------------------------------------------------
    count, (height, width) = (2, (30, 20)) if args.tiny else (512, (768, 1024))
    small = rng.integers(0, 256, (count, height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    images = [np.ascontiguousarray(np.repeat(np.repeat(block, 8, 0), 8, 1)[:height, :width])
              for block in small]  # blocky pictures: quality well above 0
    images = [np.clip(im.astype(np.int16) + rng.integers(-9, 10, im.shape), 0, 255)
              .astype(np.uint8) for im in images]
    hashes, qualities = pdq.pdq_batch(images[:8], xp)
    for i, rgb in enumerate(images[:8]):  # the kernel's hashes are the CPU path's
        assert (hashes[i].tobytes(), int(qualities[i])) == pdq_from_rgb(rgb), f"image {i}"
    sync()
    start = time.perf_counter()
    pdq.pdq_batch(images, xp)
    sync()
    gpu_ips = count / (time.perf_counter() - start)
    cpu_n = min(count, 32)
    start = time.perf_counter()
    for rgb in images[:cpu_n]:
        pdq_from_rgb(rgb)
    cpu_ips = cpu_n / (time.perf_counter() - start)
    rows_out.append(("pdq images/s (decoded)", f"{count}x{width}x{height}",
                     f"{gpu_ips:,.0f}", f"{cpu_ips:,.0f}"))

    print(f"{'what':<30} {'data':<16} {'gpu':>14} {'cpu (1 thread)':>16} {'gpu/cpu':>8}")
    print("-" * 88)
    for what, data, gpu, cpu_v in rows_out:
        ratio = "-" if cpu_v == "-" else f"{_number(gpu) / _number(cpu_v):.1f}x"
        print(f"{what:<30} {data:<16} {gpu:>14} {cpu_v:>16} {ratio:>8}")
    if args.tiny:
        print("(simulator: figures mean nothing; the run checks that the script works)")
    return 0


def _number(text: str) -> float:
    return float(text.replace(",", ""))


if __name__ == "__main__":
    sys.exit(main())
