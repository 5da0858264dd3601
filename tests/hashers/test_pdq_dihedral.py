"""PDQ's 8 dihedral hashes against ``pdqhash.compute_dihedral`` and the golden tsv."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from PIL import Image

from appliance.hashers.pdq import (
    DIHEDRAL_VARIANTS,
    pdq_dihedral_from_rgb,
    pdq_from_rgb,
    pdq_many,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "pdq"


def _golden_rows() -> list[dict[str, str]]:
    with (DATA / "expected.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("row", _golden_rows(), ids=lambda row: row["file"])
def test_golden_dihedral(row: dict[str, str]) -> None:
    rgb = np.asarray(Image.open(DATA / row["file"]).convert("RGB"))
    hashes, quality = pdq_dihedral_from_rgb(rgb)
    assert [h.hex() for h in hashes] == row["pdq_dihedral"].split(",")
    assert quality == int(row["pdq_quality"])


def _reference(rgb: np.ndarray) -> tuple[list[bytes], int]:
    bits, quality = pdqhash.compute_dihedral(rgb)
    return [np.packbits(b).tobytes() for b in bits], int(quality)


def test_random_images_match_the_reference() -> None:
    rng = np.random.default_rng(2026)
    for n in range(80):
        h, w = (int(x) for x in rng.integers(5, 900, 2))
        if n % 3 == 0:  # smooth pictures, where many coefficients are close to the median
            small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
            rgb = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
        elif n % 3 == 1:
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            rgb = np.full((h, w, 3), int(rng.integers(0, 256)), dtype=np.uint8)
        ours = pdq_dihedral_from_rgb(rgb)
        assert ours == _reference(rgb), (h, w, n)
        assert ours[0][0] == pdq_from_rgb(rgb)[0]


def test_variant_names_and_tiny_images() -> None:
    assert len(DIHEDRAL_VARIANTS) == 8 and DIHEDRAL_VARIANTS[0] == "original"
    assert pdq_dihedral_from_rgb(np.zeros((4, 9, 3), dtype=np.uint8)) == ([bytes(32)] * 8, 0)


def test_pdq_many_on_a_pool_equals_one_by_one() -> None:
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (int(h), 77, 3), dtype=np.uint8) for h in range(3, 60, 7)]
    expected = [pdq_from_rgb(rgb) for rgb in images]
    assert pdq_many(images) == expected
    with ThreadPoolExecutor(3) as pool:
        assert pdq_many(images, pool) == expected
