"""The memory estimate covers what a decode really takes, format by format.

Each file is decoded and hashed in a freshly forked worker, which measures
its own peak (VmHWM over its size before the job); the estimate made from
the probe, before decoding, must not be below it. 6 MP pictures, so that the
per-pixel terms of the model, not its fixed slack, decide.
benchmarks/decode_memory.py runs the same comparison up to 81 MP.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from appliance.decode import DEFAULT_BOUNDS, Needs, estimate, probe
from appliance.pixels import PixelJob
from appliance.sandbox import ProcessDecoders

SIZE = (3000, 2000)
CASES: list[tuple[str, str, dict[str, object]]] = [
    ("JPEG", "RGB", {}), ("JPEG", "RGB", {"progressive": True}),
    ("JPEG", "RGB", {"subsampling": 0, "progressive": True}), ("JPEG", "L", {}),
    ("JPEG", "CMYK", {}), ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}),
    ("PNG", "L", {}), ("PNG", "I;16", {}), ("GIF", "P", {}), ("WEBP", "RGB", {"quality": 80}),
    ("WEBP", "RGBA", {"lossless": True}), ("BMP", "RGB", {}), ("TIFF", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "RGB", {"compression": "jpeg"}),
]
NEEDS = {
    "pdq": (Needs(), PixelJob(("pdq",))),
    "family": (Needs(family=True), PixelJob(("pdq", "phash", "dhash", "ahash", "whash"))),
    "export": (Needs(export_rgb=True), PixelJob(("pdq",), export=("pdq",))),
}


def _picture(mode: str) -> Image.Image:
    """Smooth noise: compresses like a photograph, not like a flat field."""
    rng = np.random.default_rng(0)
    w, h = SIZE
    small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(SIZE, Image.Resampling.BILINEAR)
    if mode == "I;16":
        return image.convert("L").convert("I;16")
    return image.convert(mode)


@pytest.mark.parametrize("needs", sorted(NEEDS))
@pytest.mark.parametrize(("fmt", "mode", "options"), CASES,
                         ids=[f"{f}-{m}-{'-'.join(map(str, o))}" for f, m, o in CASES])
def test_the_estimate_is_not_below_the_measured_peak(fmt, mode, options, needs) -> None:
    buffer = io.BytesIO()
    _picture(mode).save(buffer, fmt, **options)
    data = buffer.getvalue()
    layout = probe(data, DEFAULT_BOUNDS)
    wanted, job = NEEDS[needs]
    cost = estimate(layout, wanted)
    decoders = ProcessDecoders(1)  # a fresh worker: no memory left from an earlier file
    try:
        result = decoders.run(data, layout, job, cost, 60.0, None)
    finally:
        decoders.close()
    assert result.peak_bytes > 0
    assert result.peak_bytes <= cost.memory, (
        f"{fmt} {mode} {options} {needs}: measured {result.peak_bytes >> 20} MiB, "
        f"estimated {cost.memory >> 20} MiB")
