"""PDQ: bit-identical to the reference (``pdqhash``) on golden and synthetic images.

The reference is ``pdqhash.compute`` on the same RGB pixels, as python-threatexchange
and HMA call it. Golden images (tests/data/pdq, from Meta's ThreatExchange) also
carry the reference's hex and quality in expected.tsv.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from numpy.typing import NDArray
from PIL import Image

from appliance.hashers.pdq import HASH_BYTES, pdq_from_luma, pdq_from_rgb, pdq_hex
from tests.helpers import picture_field

DATA = Path(__file__).resolve().parent.parent / "data" / "pdq"
U8 = NDArray[np.uint8]


def reference(rgb: U8) -> tuple[bytes, int]:
    """pdqhash.compute as (32 hash bytes, quality); its bits come MSB first, in hex order."""
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def hamming(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def reference_luma(rgb: U8) -> NDArray[np.float32]:
    """The luma plane exactly as pdqhash.compute forms it (float64, then float32)."""
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    luma: NDArray[np.float32] = (r * 0.299 + g * 0.587 + b * 0.114).astype(np.float32)
    return luma


def mismatch(what: str, ours: tuple[bytes, int], ref: tuple[bytes, int]) -> str:
    return (
        f"{what}: {hamming(ours[0], ref[0])} bits differ, quality {ours[1]} vs {ref[1]}\n"
        f"  ours {pdq_hex(ours[0])}\n  ref  {pdq_hex(ref[0])}"
    )


# ----------------------------------------------------------------------------- golden images


def _golden_rows() -> list[dict[str, str]]:
    with (DATA / "expected.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("row", _golden_rows(), ids=lambda row: row["file"])
def test_golden_image(row: dict[str, str]) -> None:
    with Image.open(DATA / row["file"]) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape == (int(row["height"]), int(row["width"]), 3)
    ours = pdq_from_rgb(rgb)
    what = f"{row['file']} {rgb.shape[1]}x{rgb.shape[0]}"
    ref = reference(rgb)
    assert ours == ref, mismatch(what + " vs pdqhash", ours, ref)
    # expected.tsv was made with Pillow 13.0.0: another JPEG decoder can change pixels.
    expected = (bytes.fromhex(row["pdq"]), int(row["pdq_quality"]))
    assert ours == expected, mismatch(what + " vs expected.tsv", ours, expected)


# ----------------------------------------------------------------------------- synthetic images

MODES = ("RGB", "L", "RGBA", "P", "I;16")
CONTENTS = ("noise", "gradient", "natural", "flat", "stripes", "dots")


@dataclass(frozen=True)
class Case:
    seed: int
    height: int
    width: int
    content: str
    mode: str

    def __str__(self) -> str:
        return f"{self.seed:03d}-{self.width}x{self.height}-{self.content}-{self.mode}"


def synthesize(case: Case) -> Image.Image:
    """The case's picture as a Pillow image in case.mode."""
    rng = np.random.default_rng(case.seed)
    h, w = case.height, case.width
    channels = {"RGB": 3, "RGBA": 4}.get(case.mode, 1)
    field = picture_field(rng, case.content, h, w, channels)
    if case.mode == "I;16":
        # Values above 255 make Pillow's I;16 -> RGB conversion clip.
        return Image.fromarray(np.ascontiguousarray(field[:, :, 0] * 320).astype(np.uint16))
    pixels = np.ascontiguousarray(field * 255.999).astype(np.uint8)
    if channels == 1:
        image = Image.fromarray(pixels[:, :, 0])
        if case.mode == "P":
            image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        return image
    return Image.fromarray(pixels)


def _cases() -> list[Case]:
    """320 seeded cases: mostly small and medium, some tiny or thin, a few large."""
    rng = np.random.default_rng(20240601)
    # fmt: off
    special = [
        (64, 64), (64, 64), (64, 64), (63, 64), (64, 65), (128, 128), (127, 129), (129, 127),
        (5, 5), (5, 6), (4, 100), (100, 4), (1, 1), (1, 300), (300, 1), (6, 1000), (1000, 5),
        (256, 256), (255, 257), (65, 63),
    ]
    # fmt: on
    large = [(4000, 37), (23, 3999), (2048, 300), (3000, 64), (1, 4000), (1500, 2000)]
    # Windows over 32 (sides over 4096): wider than one strip of the implementation.
    large += [(6000, 9), (9, 6000), (8300, 12)]
    sizes: list[tuple[int, int]] = list(special) + list(large)
    while len(sizes) < 320:
        kind = len(sizes) % 10
        if kind < 6:  # small: 1..300, log-uniform so that under 128 is common
            h, w = np.exp(rng.uniform(0, np.log(300), 2)).astype(int)
        elif kind < 9:  # medium
            h, w = rng.integers(100, 1100, 2)
        else:  # thin: one side tiny
            h, w = int(rng.integers(1, 12)), int(rng.integers(1, 900))
            if rng.random() < 0.5:
                h, w = w, h
        sizes.append((int(h), int(w)))
    return [
        Case(seed, h, w, CONTENTS[seed % len(CONTENTS)], MODES[(seed // 2) % len(MODES)])
        for seed, (h, w) in enumerate(sizes)
    ]


CASES = _cases()


def test_cases_cover_what_they_claim() -> None:
    assert len(CASES) >= 300
    assert {c.mode for c in CASES} == set(MODES)
    assert {c.content for c in CASES} == set(CONTENTS)
    assert any(c.height == c.width == 64 for c in CASES)
    assert any(min(c.height, c.width) < 5 for c in CASES)
    assert sum(max(c.height, c.width) < 128 for c in CASES) > 100
    assert max(max(c.height, c.width) for c in CASES) >= 3999
    assert sum(c.height % 2 or c.width % 2 for c in CASES) > 150


@pytest.mark.parametrize("case", CASES, ids=str)
def test_synthetic_image_matches_reference(case: Case) -> None:
    image = synthesize(case)
    assert image.mode == case.mode
    rgb = np.asarray(image.convert("RGB"))
    ours, ref = pdq_from_rgb(rgb), reference(rgb)
    assert ours == ref, mismatch(f"{case} ({image.mode} -> RGB)", ours, ref)


@pytest.mark.parametrize("case", CASES[::16], ids=str)
def test_luma_entry_point_matches_rgb(case: Case) -> None:
    rgb = np.asarray(synthesize(case).convert("RGB"))
    assert pdq_from_luma(reference_luma(rgb)) == pdq_from_rgb(rgb)


# ----------------------------------------------------------------------------- edges and API


@pytest.mark.parametrize("shape", [(0, 0), (0, 7), (1, 1), (4, 4), (4, 4000), (3000, 2), (5, 4)])
def test_images_under_5_pixels_hash_to_zero(shape: tuple[int, int]) -> None:
    rgb = np.full((*shape, 3), 200, dtype=np.uint8)
    assert pdq_from_rgb(rgb) == (bytes(HASH_BYTES), 0)
    assert pdq_from_luma(np.zeros(shape, dtype=np.float32)) == (bytes(HASH_BYTES), 0)
    if min(shape) > 0:  # the reference cannot take an empty array
        assert reference(rgb) == (bytes(HASH_BYTES), 0)


def test_smallest_hashable_image() -> None:
    rgb = np.random.default_rng(5).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    ours = pdq_from_rgb(rgb)
    assert ours == reference(rgb)
    assert ours[0] != bytes(HASH_BYTES)


def test_pdq_hex() -> None:
    text = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    assert pdq_hex(bytes.fromhex(text)) == text
    assert pdq_hex(bytes(HASH_BYTES)) == "0" * 64
    # Bit k of the hash (coefficient k // 16, k % 16) is 2**k of the 256-bit integer.
    assert pdq_hex((1).to_bytes(HASH_BYTES, "big")) == "0" * 63 + "1"
    with pytest.raises(ValueError):
        pdq_hex(bytes(31))


def test_any_strides_are_accepted() -> None:
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (301, 455, 4), dtype=np.uint8)
    for view in (base[:, :, :3], base[::2, ::3, 2::-1], base.transpose(1, 0, 2)[:, :, 1:]):
        assert not view.flags.c_contiguous
        assert pdq_from_rgb(view) == reference(np.ascontiguousarray(view))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        pdq_from_rgb(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError):
        pdq_from_rgb(np.zeros((10, 10, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        pdq_from_rgb(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        pdq_from_luma(np.zeros((10, 10, 3), dtype=np.float32))


def test_threads_give_the_same_hashes() -> None:
    images = [np.asarray(synthesize(c).convert("RGB")) for c in CASES[20:60]]
    hash_one: Callable[[U8], tuple[bytes, int]] = pdq_from_rgb
    expected = [hash_one(rgb) for rgb in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(hash_one, images * 3)) == expected * 3
