"""The whole GPU pipeline beside the CPU pipeline, on the same files in one run.

    python benchmarks/gpu_pipeline.py [--files N] [--repeat R] [--tiny]

A batch of generated JPEGs (1024x768 by default) goes through
``GpuPipeline.run`` (decode on CPU threads, digests and PDQ on the device)
and through ``Pipeline.run`` (everything on CPU threads, one per core), each
with md5, sha1, sha256 and PDQ; the answers are checked equal first, then
files/s of each and the ratio are printed. Decoding is on the CPU in both,
so the gain is bounded by how much of the CPU's time went to hashing.

The GPU pipeline runs with ``gpu.strict``: a device fault raises instead of
the batch being redone on the CPU, whose speed would otherwise be printed as
the GPU's. Its kernels are warmed up first (``GpuPipeline.warm_up``, as the
server does before it says ready), so compilation is not measured. Each line
is printed as soon as it is measured; the last is ``fallbacks: N`` (the device
faults the pipeline saw), and the exit status is 1, with the reason, after any
fault or any difference from the CPU's answers.

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
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np


def _jpeg(seed: int, width: int, height: int) -> bytes:
    """A smooth textured picture with noise, as JPEG: real work for decode and PDQ."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [128 + 90 * np.sin(xx / rng.uniform(8, 40) + rng.uniform(0, 6))
              * np.cos(yy / rng.uniform(8, 40)) for _ in range(3)]
    pixels = np.clip(np.stack(planes, -1) + rng.normal(0, 6, (height, width, 3)), 0, 255)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def fallbacks_of(pipeline: Any, metrics: Any) -> int:
    """Device faults a GPU pipeline saw: its own count (strict faults included)
    or the ``appliance_gpu_fallbacks_total`` samples, whichever is larger."""
    counted = sum(sample.value for family in metrics.registry.collect()
                  if family.name == "appliance_gpu_fallbacks"
                  for sample in family.samples if sample.name.endswith("_total"))
    return max(int(getattr(pipeline, "fallbacks", 0)), int(counted))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    from appliance.backend import make_pipeline, select_backend
    from appliance.config import Config
    from appliance.metrics import Metrics
    from appliance.pipeline import Pipeline
    from appliance.results import Item

    backend = select_backend("gpu-sim" if args.tiny else "gpu")
    files, (width, height) = (4, (40, 30)) if args.tiny else (args.files, (1024, 768))
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:  # PIL and NumPy release the GIL
        blobs = list(pool.map(_jpeg, range(files), [width] * files, [height] * files))
    items = [Item(str(i), b, ("md5", "sha1", "sha256", "pdq")) for i, b in enumerate(blobs)]
    config = Config()
    metrics = Metrics()
    gpu = make_pipeline(replace(config, gpu=replace(config.gpu, strict=True)), backend, metrics)
    cpu = Pipeline(config)
    mb = sum(map(len, blobs)) / 1e6
    print(f"pipeline, {files} JPEGs {width}x{height} ({mb:.1f} MB), md5+sha1+sha256+pdq, "
          f"{workers} CPU threads, backend {backend.name} ({backend.device}), gpu.strict on",
          flush=True)
    timings: dict[str, list[float]] = {"gpu": [], "cpu": []}
    failure = ""
    try:
        with ThreadPoolExecutor(workers) as pool:
            started = time.perf_counter()
            gpu.warm_up()
            print(f"warm-up (every kernel compiled or loaded, checked against the CPU): "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            want = cpu.run(items, None, pool)
            got = gpu.run(items, None, pool)
            differ = [w.id for w, g in zip(want, got, strict=True)
                      if (w.hashes, w.error) != (g.hashes, g.error)]
            if differ:
                raise AssertionError(f"GPU and CPU answers differ for {len(differ)} of "
                                     f"{files} files, first {differ[0]}")
            print("answers: GPU = CPU on every file", flush=True)
            for n in range(1 if args.tiny else args.repeat):
                for name, pipeline in (("gpu", gpu), ("cpu", cpu)):
                    started = time.perf_counter()
                    pipeline.run(items, None, pool)
                    timings[name].append(time.perf_counter() - started)
                print(f"run {n + 1}: gpu {timings['gpu'][-1]:.3f} s, cpu "
                      f"{timings['cpu'][-1]:.3f} s", flush=True)
    except Exception as exc:  # a strict GPU fault (GpuFault) or a wrong answer
        traceback.print_exc()
        failure = f"{type(exc).__name__}: {exc}"
    if timings["gpu"] and timings["cpu"]:
        rate = {k: files / statistics.median(v) for k, v in timings.items()}
        print(f"{'what':<34} {'gpu':>10} {'cpu':>10} {'gpu/cpu':>8}")
        print(f"{'files/s (median of runs)':<34} {rate['gpu']:>10,.1f} {rate['cpu']:>10,.1f} "
              f"{rate['gpu'] / rate['cpu']:>7.2f}x")
    return verdict(gpu, metrics, failure, args.tiny)


def verdict(gpu: Any, metrics: Any, failure: str, tiny: bool) -> int:
    """The last lines of a GPU benchmark (``fallbacks: N``, FAILED and why) and its
    exit status: 1 after a failure or any device fault, whose figures are not the GPU's."""
    if tiny:
        print("(simulator: figures mean nothing; the run checks that the script works)")
    faults = fallbacks_of(gpu, metrics)
    print(f"fallbacks: {faults}", flush=True)
    if failure:
        print(f"FAILED: {failure}", flush=True)
        return 1
    if faults:
        print(f"FAILED: {faults} device fault(s); the figures above are not the GPU's",
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
