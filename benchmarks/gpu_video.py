"""Videos through the GPU pipeline beside the CPU pipeline, in one run.

    python benchmarks/gpu_video.py [--videos N] [--repeat R] [--tiny]

Generated clips (640x360, 30 frames a second, 4 s each by default, encoded
in memory: no FFmpeg binary is needed) are hashed with tmk and vpdq by
``GpuPipeline.run`` (decoded in the decode workers, the frames streamed to
the device's TMK and PDQ kernels) and by ``Pipeline.run`` (all on CPU
threads); the answers are checked equal first, then videos/s and frames/s of
each and the ratio are printed. Decoding is on the CPU in both and dominates
(the hashes are a few percent of a video's time on the CPU), so the ratio
says what the device saves, not a speed-up of video matching as a whole.

``gpu.strict`` is on: a device fault raises. The last line is ``fallbacks:
N``; the exit status is 1 after any fault or difference. ``--tiny``: two
small clips on gpu-sim (the simulator); the figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_pipeline import verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    from appliance.backend import make_pipeline, select_backend
    from appliance.config import Config
    from appliance.metrics import Metrics
    from appliance.pipeline import Pipeline
    from appliance.results import Item
    from appliance.video import synthetic

    backend = select_backend("gpu-sim" if args.tiny else "gpu")
    count, (width, height, frames) = (2, (32, 24, 8)) if args.tiny else (args.videos,
                                                                        (640, 360, 120))
    clips = [synthetic.encode("mp4", "mpeg4", width=width, height=height, frames=frames + i,
                              rate=30) for i in range(count)]
    items = [Item(str(i), c, ("tmk", "vpdq")) for i, c in enumerate(clips)]
    total = sum(frames + i for i in range(count))
    config = Config()
    metrics = Metrics()
    gpu = make_pipeline(replace(config, gpu=replace(config.gpu, strict=True)), backend, metrics)
    cpu = Pipeline(config)
    workers = os.cpu_count() or 1
    print(f"video, {count} clips {width}x{height}, {total} frames, tmk+vpdq, {workers} CPU "
          f"threads, backend {backend.name} ({backend.device}), gpu.strict on", flush=True)
    timings: dict[str, list[float]] = {"gpu": [], "cpu": []}
    failure = ""
    try:
        gpu.start()
        cpu.start()
        with ThreadPoolExecutor(workers) as pool:
            gpu.warm_up()
            want = cpu.run(items, None, pool)
            got = gpu.run(items, None, pool)
            differ = [w.id for w, g in zip(want, got, strict=True)
                      if (w.hashes, w.skipped) != (g.hashes, g.skipped)]
            if differ or any(w.skipped for w in want):
                raise AssertionError(f"GPU and CPU answers differ (or failed) for {differ}")
            print("answers: GPU = CPU on every video", flush=True)
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
    finally:
        gpu.close()
        cpu.close()
    if timings["gpu"] and timings["cpu"]:
        median = {k: statistics.median(v) for k, v in timings.items()}
        print(f"{'what':<30} {'gpu':>10} {'cpu':>10} {'gpu/cpu':>8}")
        for what, amount in (("videos/s (median of runs)", count),
                             ("frames/s (median of runs)", total)):
            g, c = amount / median["gpu"], amount / median["cpu"]
            print(f"{what:<30} {g:>10,.1f} {c:>10,.1f} {g / c:>7.2f}x")
    return verdict(gpu, metrics, failure, args.tiny)


if __name__ == "__main__":
    raise SystemExit(main())
