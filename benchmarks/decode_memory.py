"""Decode memory: the estimate made before decoding, against measured peaks.

    .venv/bin/python benchmarks/decode_memory.py [--quick] [--sides 2000,4000,9000]

For each format and mode (JPEG baseline, progressive, 4:4:4, greyscale; PNG
RGB, RGBA, palette, grey, 16-bit; GIF; WebP lossy and lossless; BMP; TIFF raw,
LZW, JPEG) at each side length, a picture of smooth noise is encoded, probed,
and decoded and PDQ-hashed in a freshly forked decode worker, which reads its
own peak (VmHWM over its size before the job). Beside it, the peer: the same
file decoded the way the appliance did before the decode budget existed
(``Image.open(...).convert("RGB")`` and ``np.asarray`` of it, then PDQ), in a
fresh Python process measured the same way. Printed: the estimate, the
measured peak of the sandboxed decode, estimate / measured (must be >= 1:
the estimate is what admission reserves), and the peer's peak with the
ratio peer / sandboxed (what the strip-wise RGB conversion saves).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from appliance.decode import DEFAULT_BOUNDS, Needs, estimate, probe
from appliance.pixels import PixelJob
from appliance.sandbox import ProcessDecoders

CASES: list[tuple[str, str, dict[str, object]]] = [
    ("JPEG", "RGB", {}), ("JPEG", "RGB", {"progressive": True}),
    ("JPEG", "RGB", {"subsampling": 0, "progressive": True}), ("JPEG", "L", {}),
    ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}), ("PNG", "L", {}),
    ("PNG", "I;16", {}), ("GIF", "P", {}), ("WEBP", "RGB", {"quality": 80}),
    ("WEBP", "RGB", {"lossless": True}), ("BMP", "RGB", {}), ("TIFF", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "RGB", {"compression": "jpeg"}),
]

# The peer, in a fresh interpreter: the decode as it was, peak over the size before it.
_PEER = """
import io, sys
import numpy as np
from PIL import Image
from appliance.hashers.pdq import pdq_from_rgb
Image.MAX_IMAGE_PIXELS = None
data = sys.stdin.buffer.read()
pdq_from_rgb(np.zeros((8, 8, 3), np.uint8))
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
pdq_from_rgb(rgb)
print(status("VmHWM") - base)
"""


def picture(side: int, mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
    if mode == "I;16":
        return image.convert("L").convert("I;16")
    return image.convert(mode)


def peer_peak(data: bytes) -> int:
    out = subprocess.run([sys.executable, "-c", _PEER], input=data, capture_output=True,
                         check=True, timeout=600)
    return int(out.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one side of 2000, fewer cases")
    parser.add_argument("--sides", default="2000,4000,9000")
    args = parser.parse_args(argv)
    sides = [2000] if args.quick else [int(s) for s in args.sides.split(",")]
    cases = CASES[::3] if args.quick else CASES
    print("| file | side | estimate MiB | sandboxed MiB | estimate / measured "
          "| before (convert whole) MiB | before / sandboxed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    worst = float("inf")
    for side in sides:
        for fmt, mode, options in cases:
            buffer = io.BytesIO()
            picture(side, mode).save(buffer, fmt, **options)
            data = buffer.getvalue()
            layout = probe(data, DEFAULT_BOUNDS)
            cost = estimate(layout, Needs())
            decoders = ProcessDecoders(1)  # fresh: nothing left from the last file
            try:
                measured = decoders.run(data, layout, PixelJob(("pdq",)), cost, 120.0,
                                        None).peak_bytes
            finally:
                decoders.close()
            before = peer_peak(data)
            worst = min(worst, cost.memory / max(1, measured))
            name = f"{fmt} {mode} {' '.join(f'{k}={v}' for k, v in options.items())}".strip()
            print(f"| {name} | {side} | {cost.memory / 2**20:.0f} | {measured / 2**20:.0f} | "
                  f"{cost.memory / max(1, measured):.2f} | {before / 2**20:.0f} | "
                  f"{before / max(1, measured):.2f} |", flush=True)
    print(f"\nlowest estimate / measured: {worst:.2f} (below 1 would under-reserve)")
    return 0 if worst >= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
