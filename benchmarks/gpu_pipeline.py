"""The whole GPU pipeline beside the CPU pipeline, on the same files in one run.

    python benchmarks/gpu_pipeline.py [--files N] [--tiny]

A batch of generated JPEGs (1024x768 by default) goes through
``GpuPipeline.run`` (decode on CPU threads, digests and PDQ on the device)
and through ``Pipeline.run`` (everything on CPU threads, one per core), each
with md5, sha1, sha256 and PDQ; the answers are checked equal first, then
files/s of each and the ratio are printed. Decoding is on the CPU in both,
so the gain is bounded by how much of the CPU's time went to hashing.

``--tiny`` runs a few small files on the backend gpu-sim (the CUDA simulator):
the figures mean nothing; it checks that the script works.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [128 + 90 * np.sin(xx / rng.uniform(8, 40) + rng.uniform(0, 6))
              * np.cos(yy / rng.uniform(8, 40)) for _ in range(3)]
    pixels = np.clip(np.stack(planes, -1) + rng.normal(0, 6, (height, width, 3)), 0, 255)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    from appliance.backend import make_pipeline, select_backend
    from appliance.config import Config
    from appliance.pipeline import Item, Pipeline

    backend = select_backend("gpu-sim" if args.tiny else "gpu")
    files, (width, height) = (4, (40, 30)) if args.tiny else (args.files, (1024, 768))
    rng = np.random.default_rng(7)
    blobs = [_jpeg(rng, width, height) for _ in range(files)]
    items = [Item(str(i), b, ("md5", "sha1", "sha256", "pdq")) for i, b in enumerate(blobs)]
    config = Config()
    gpu, cpu = make_pipeline(config, backend), Pipeline(config)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        want = cpu.run(items, None, pool)
        got = gpu.run(items, None, pool)
        assert [r.hashes for r in got] == [r.hashes for r in want], "GPU and CPU answers differ"
        timings: dict[str, list[float]] = {"gpu": [], "cpu": []}
        for _ in range(1 if args.tiny else args.repeat):
            for name, pipeline in (("gpu", gpu), ("cpu", cpu)):
                start = time.perf_counter()
                pipeline.run(items, None, pool)
                timings[name].append(time.perf_counter() - start)
    rate = {k: files / statistics.median(v) for k, v in timings.items()}
    mb = sum(map(len, blobs)) / 1e6
    print(f"pipeline, {files} JPEGs {width}x{height} ({mb:.1f} MB), md5+sha1+sha256+pdq, "
          f"{workers} CPU threads, backend {backend.name} ({backend.device})")
    print(f"{'what':<34} {'gpu':>10} {'cpu':>10} {'gpu/cpu':>8}")
    print(f"{'files/s (median of runs)':<34} {rate['gpu']:>10,.1f} {rate['cpu']:>10,.1f} "
          f"{rate['gpu'] / rate['cpu']:>7.2f}x")
    if args.tiny:
        print("(simulator: figures mean nothing; the run checks that the script works)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
