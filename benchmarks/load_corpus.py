"""The generated corpus of ``benchmarks/load.py``: textured pictures, encoded in memory.

Nothing is downloaded or written to disk; the same seed gives the same bytes.
Small pictures (256x256 by default) alternate PNG (about 55 KB) and JPEG
(about 20 KB); large ones (2000x1500 by default) are JPEGs of about 0.8 MB.
The order in which files are sent mixes them so that ``large_fraction`` of the
requests carry a large file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CorpusFile:
    """One encoded picture: its name (``small-0003.png``), bytes, and size class."""

    name: str
    content: bytes
    large: bool


@dataclass(frozen=True)
class Corpus:
    """Distinct files, and the request order: indexes into ``files``, cycled."""

    files: tuple[CorpusFile, ...]
    order: tuple[int, ...]

    def mean_bytes(self) -> float:
        """Mean size of a request's file over one cycle of ``order``."""
        return sum(len(self.files[i].content) for i in self.order) / len(self.order)

    def describe(self) -> str:
        small = [f for f in self.files if not f.large]
        large = [f for f in self.files if f.large]
        large_share = sum(self.files[i].large for i in self.order) / len(self.order)

        def kb(group: list[CorpusFile]) -> str:
            if not group:
                return "-"
            return f"{np.median([len(f.content) for f in group]) / 1024:.0f} KB"

        return (
            f"{len(small)} small (median {kb(small)}), {len(large)} large (median {kb(large)}); "
            f"{len(self.order)} requests per cycle, {large_share:.0%} large, "
            f"mean {self.mean_bytes() / 1024:.0f} KB"
        )


def textured(
    rng: np.random.Generator, width: int, height: int, noise: float, step: int = 1
) -> Image.Image:
    """An RGB picture: per channel, three products of sinusoids over x and y at
    random frequencies and phases, plus Gaussian noise of ``noise`` levels,
    quantised to multiples of ``step`` (coarser steps make smaller PNGs).

    The sinusoids are separable (an outer product of a column and a row), so a
    3 MP picture costs little more than its noise.
    """
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    scale = max(width, height) / 256  # the same number of periods across any size
    pixels = np.full((height, width, 3), 128.0, np.float32)
    for channel in range(3):
        for _ in range(3):
            fy, fx = rng.uniform(0.02, 0.25, 2) / scale
            py, px = rng.uniform(0, 2 * np.pi, 2)
            pixels[:, :, channel] += 30 * np.cos(y * fy + py) * np.sin(x * fx + px)
    pixels += noise * rng.standard_normal((height, width, 3), dtype=np.float32)
    np.clip(pixels, 0, 255, out=pixels)
    if step > 1:
        pixels /= step
        np.round(pixels, out=pixels)
        pixels *= step
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build_corpus(
    small: int,
    large: int,
    large_fraction: float,
    small_size: tuple[int, int] = (256, 256),
    large_size: tuple[int, int] = (2000, 1500),
    seed: int = 0,
) -> Corpus:
    """``small`` small and ``large`` large pictures (sizes are width, height), and
    a shuffled order of requests, ``large_fraction`` of them for large files."""
    if small + large == 0:
        raise ValueError("the corpus needs at least one file")
    rng = np.random.default_rng(seed)
    files: list[CorpusFile] = []
    for i in range(small):
        if i % 2 == 0:
            content = _encode(textured(rng, *small_size, noise=4, step=8), "PNG")
            files.append(CorpusFile(f"small-{i:04d}.png", content, False))
        else:
            content = _encode(textured(rng, *small_size, noise=8), "JPEG", quality=90)
            files.append(CorpusFile(f"small-{i:04d}.jpg", content, False))
    for i in range(large):
        content = _encode(textured(rng, *large_size, noise=8), "JPEG", quality=90)
        files.append(CorpusFile(f"large-{i:04d}.jpg", content, True))

    small_ids = list(range(small))
    large_ids = list(range(small, small + large))
    if not large_ids or large_fraction <= 0:
        order = small_ids
    elif not small_ids or large_fraction >= 1:
        order = large_ids
    else:
        # Every small file once, and enough large slots (cycling over the large
        # files) that they make up large_fraction of the order.
        slots = max(1, round(small * large_fraction / (1 - large_fraction)))
        order = small_ids + [large_ids[k % large] for k in range(slots)]
    shuffled = rng.permutation(np.array(order, dtype=np.int64))
    return Corpus(tuple(files), tuple(int(i) for i in shuffled))
