"""The imagehash family: bit-identical to ``imagehash`` 4.3.2 on golden and synthetic images.

The reference is imagehash itself (default arguments) on the same PIL Image object,
decoded from file bytes as the appliance decodes them. Golden images
(tests/data/pdq) also carry imagehash's hex in expected.tsv.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pytest
import pywt
from numpy.typing import NDArray
from PIL import Image

from appliance.hashers import imagehash_family as fam
from appliance.hashers.imagehash_family import FAMILY, family_hashes
from tests.helpers import picture_field

DATA = Path(__file__).resolve().parent.parent / "data" / "pdq"
REFERENCE: dict[str, Callable[[Image.Image], Any]] = {
    "ahash": imagehash.average_hash,
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "whash": imagehash.whash,
}
WRAPPERS = {"ahash": fam.ahash, "phash": fam.phash, "dhash": fam.dhash, "whash": fam.whash}


def reference(image: Image.Image, names: tuple[str, ...] = FAMILY) -> dict[str, bytes]:
    return {name: bytes.fromhex(str(REFERENCE[name](image))) for name in names}


def differences(what: str, ours: dict[str, bytes], ref: dict[str, bytes]) -> str:
    lines = [
        f"{what} {name}: ours {ours.get(name, b'').hex()} imagehash {ref[name].hex()}"
        for name in ref
        if ours.get(name) != ref[name]
    ]
    return "\n".join(lines) or f"{what}: keys {list(ours)} vs {list(ref)}"


def decode(data: bytes) -> Image.Image:
    """As the appliance decodes a file: Image.open, then load."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ----------------------------------------------------------------------------- golden images


def _golden_rows() -> list[dict[str, str]]:
    with (DATA / "expected.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("row", _golden_rows(), ids=lambda row: row["file"])
def test_golden_image(row: dict[str, str]) -> None:
    with Image.open(DATA / row["file"]) as image:
        ours = family_hashes(image)
        ref = reference(image)
    what = f"{row['file']} {row['width']}x{row['height']} {image.mode}"
    assert ours == ref, differences(what + " vs imagehash", ours, ref)
    # expected.tsv was made with Pillow 13.0.0: another JPEG decoder can change pixels.
    expected = {name: bytes.fromhex(row[name]) for name in FAMILY}
    assert ours == expected, differences(what + " vs expected.tsv", ours, expected)


# ----------------------------------------------------------------------------- synthetic images

MODES = ("RGB", "L", "RGBA", "P", "LA", "I;16", "1", "CMYK")
CONTENTS = ("noise", "gradient", "natural", "flat", "stripes", "dots", "halves")
# The formats that store each mode as it is (JPEG: L, RGB, CMYK only).
FORMATS = {
    "RGB": ("PNG", "JPEG", "TIFF"),
    "L": ("PNG", "JPEG", "TIFF"),
    "CMYK": ("JPEG", "TIFF"),
}


@dataclass(frozen=True)
class Case:
    seed: int
    width: int
    height: int
    content: str
    mode: str
    fmt: str

    def __str__(self) -> str:
        return f"{self.seed:03d}-{self.width}x{self.height}-{self.content}-{self.mode}-{self.fmt}"


def synthesize(case: Case) -> bytes:
    """The case's picture in case.mode, encoded in case.fmt."""
    rng = np.random.default_rng(case.seed)
    h, w = case.height, case.width
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "LA": 2}.get(case.mode, 1)
    field = picture_field(rng, case.content, h, w, channels)
    if case.mode == "I;16":  # values above 255 make Pillow's I;16 -> L conversion clip
        scale = float(rng.choice([300.0, 65535.0]))
        image = Image.fromarray(np.ascontiguousarray(field[:, :, 0] * scale).astype(np.uint16))
    elif case.mode == "1":
        image = Image.fromarray(np.ascontiguousarray(field[:, :, 0] > 0.5))
    else:
        pixels = np.ascontiguousarray(field * 255.999).astype(np.uint8)
        if case.mode in ("RGB", "RGBA", "CMYK"):
            image = Image.fromarray(pixels, case.mode)
        else:
            image = Image.fromarray(pixels[:, :, 0])
            if case.mode == "LA":
                image = Image.merge("LA", (image, Image.fromarray(pixels[:, :, 1])))
            elif case.mode == "P":
                image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    buffer = io.BytesIO()
    image.save(buffer, case.fmt, **({"quality": 90} if case.fmt == "JPEG" else {}))
    return buffer.getvalue()


def _cases() -> list[Case]:
    """336 seeded cases: mostly small and medium, many tiny or thin, a few large."""
    rng = np.random.default_rng(20240602)
    # fmt: off
    special = [
        (1, 1), (2, 7), (7, 2), (8, 8), (9, 8), (8, 9), (1, 2), (2, 2), (3, 3), (5, 4), (4, 1),
        (15, 16), (16, 16), (17, 16), (31, 31), (32, 32), (33, 32), (63, 64), (64, 64),
        (1, 3000), (3000, 1), (2, 2999), (127, 129), (256, 256), (255, 257),
    ]
    # Large: wHash sides 1024 and 2048 (its chunked path), one long side at 3000.
    large = [(2100, 2050), (3000, 1100), (1300, 1500), (3000, 17), (19, 3000), (1024, 1024)]
    # fmt: on
    sizes: list[tuple[int, int]] = special + large
    while len(sizes) < 336:
        kind = len(sizes) % 10
        if kind < 6:  # small: 1..400, log-uniform so that under 64 is common
            w, h = np.exp(rng.uniform(0, np.log(400), 2)).astype(int)
        elif kind < 9:  # medium
            w, h = rng.integers(100, 1000, 2)
        else:  # thin: one side tiny
            w, h = int(rng.integers(1, 12)), int(rng.integers(1, 1500))
            if rng.random() < 0.5:
                w, h = h, w
        sizes.append((int(w), int(h)))
    cases = []
    for seed, (w, h) in enumerate(sizes):
        mode = MODES[seed % len(MODES)]
        formats = FORMATS.get(mode, ("PNG", "TIFF"))
        content = CONTENTS[(seed + seed // len(MODES)) % len(CONTENTS)]
        cases.append(Case(seed, w, h, content, mode, formats[(seed // 3) % len(formats)]))
    return cases


CASES = _cases()


def test_cases_cover_what_they_claim() -> None:
    assert len(CASES) >= 300
    assert {c.mode for c in CASES} == set(MODES)
    assert {c.content for c in CASES} == set(CONTENTS)
    assert {(c.mode, c.fmt) for c in CASES} == {
        (m, f) for m in MODES for f in FORMATS.get(m, ("PNG", "TIFF"))
    }
    assert {(1, 1), (2, 7), (8, 8), (9, 8)} <= {(c.width, c.height) for c in CASES}
    assert sum(min(c.width, c.height) < 8 for c in CASES) > 30
    assert sum(c.width % 2 == 1 or c.height % 2 == 1 for c in CASES) > 150
    assert max(max(c.width, c.height) for c in CASES) == 3000
    assert {fam.whash_scale((c.width, c.height)) for c in CASES} >= {8, 16, 32, 64, 1024, 2048}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_synthetic_image_matches_imagehash(case: Case) -> None:
    image = decode(synthesize(case))
    assert image.mode == case.mode and image.size == (case.width, case.height)
    ours, ref = family_hashes(image), reference(image)
    assert ours == ref, differences(str(case), ours, ref)


# ----------------------------------------------------------------------------- batches and names


def test_batch_on_a_pool_equals_one_by_one() -> None:
    images = [decode(synthesize(c)) for c in CASES[25:] if c.width * c.height < 300_000][:120]
    one_by_one = [family_hashes(image) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:  # as the pipeline runs it
        assert list(pool.map(family_hashes, images * 2)) == one_by_one * 2
    # These cases also run one by one against imagehash above; a sample again here.
    for image, ours in zip(images[::10], one_by_one[::10], strict=True):
        assert ours == reference(image)


def test_any_subset_of_names() -> None:
    images = [decode(synthesize(c)) for c in CASES[:40:4]]
    full = [reference(image) for image in images]
    for k in range(len(FAMILY) + 1):
        for names in itertools.permutations(FAMILY, k):
            got = [family_hashes(image, names) for image in images]
            assert [list(g) for g in got] == [list(names)] * len(images)
            assert got == [{n: f[n] for n in names} for f in full], names
    image, ref = images[3], full[3]
    assert family_hashes(image, ("whash", "ahash", "whash")) == {
        "whash": ref["whash"],
        "ahash": ref["ahash"],
    }
    for name, wrapper in WRAPPERS.items():
        assert wrapper(image) == ref[name]
    with pytest.raises(ValueError, match="pdq"):
        family_hashes(image, ("ahash", "pdq"))


# ----------------------------------------------------------------------------- edges


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_an_image_with_no_pixels(size: tuple[int, int]) -> None:
    """imagehash: aHash, pHash, dHash are all zero bits; wHash fails on log2(0). Ours
    gives the same three and, for wHash, a ValueError (documented) instead."""
    image = Image.new("RGB", size)
    names = ("ahash", "phash", "dhash")
    assert family_hashes(image, names) == reference(image, names) == dict.fromkeys(names, bytes(8))
    with pytest.raises(OverflowError), pytest.warns(RuntimeWarning):
        imagehash.whash(image)
    with pytest.raises(ValueError, match="whash"):
        family_hashes(image)


def test_modes_pillow_cannot_make_grey_raise_as_in_imagehash() -> None:
    image = Image.new("LAB", (20, 20))
    with pytest.raises(ValueError) as theirs:
        imagehash.average_hash(image)
    with pytest.raises(ValueError) as ours:
        family_hashes(image)
    assert str(ours.value) == str(theirs.value)


def test_morton_layout() -> None:
    assert fam._morton(0).tolist() == [0]
    assert fam._morton(1).tolist() == [0, 2, 1, 3]  # (r, c): (0,0) (1,0) (0,1) (1,1)
    assert sorted(fam._morton(5).tolist()) == list(range(1024))


def _imagehash_dwt_low(small: NDArray[np.uint8]) -> NDArray[np.float64]:
    """imagehash.whash's dwt_low, step by step as it does it, from the resized pixels."""
    top = int(np.log2(small.shape[0]))
    coeffs = list(pywt.wavedec2(small / 255.0, "haar", level=top))
    coeffs[0] *= 0
    pixels = pywt.waverec2(coeffs, "haar")
    low: NDArray[np.float64] = pywt.wavedec2(pixels, "haar", level=top - 3)[0]
    return low


@pytest.mark.parametrize("side", [8, 16, 32, 64, 128, 256, 512, 1024, 2048])
def test_whash_coefficients_are_pywts_to_the_bit(side: int) -> None:
    """The tiled, Morton-ordered 1-D transforms give pywt's 2-D values exactly,
    not only the same bits after the median (each chunking is reached here)."""
    rng = np.random.default_rng(side)
    pictures = [
        rng.integers(0, 256, (side, side), dtype=np.uint8),
        np.full((side, side), rng.integers(0, 256), dtype=np.uint8),
        np.where(np.arange(side) < side // 3, 40, 200).astype(np.uint8)[None, :].repeat(side, 0),
        (np.add.outer(np.arange(side), 3 * np.arange(side)) % 251).astype(np.uint8),
    ]
    for small in pictures[: 2 if side == 2048 else 4]:
        ours, ref = fam._whash_low(small), _imagehash_dwt_low(small)
        assert ours.shape == ref.shape == (8, 8)
        assert np.array_equal(ours.view(np.uint64), ref.view(np.uint64))


def test_whash_scale_is_imagehash_s() -> None:
    for w, h in [(1, 1), (7, 900), (8, 8), (15, 40), (16, 16), (1023, 5000), (1024, 1024)]:
        assert fam.whash_scale((w, h)) == max(2 ** int(np.log2(min(w, h))), 8)
    assert [fam.whash_scale((n, n)) for n in (1, 8, 15, 16, 2047, 2048)] == [
        8,
        8,
        8,
        16,
        1024,
        2048,
    ]
