"""Turned, mirrored and EXIF-rotated copies; fast PDQ; the imagehash family in the pipeline."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import imagehash
import numpy as np
import pytest
from PIL import Image

from appliance.config import Config, HashingConfig, MatchingConfig
from appliance.hashers.pdq import pdq_from_rgb
from appliance.index.snapshot import Snapshot
from appliance.lists.csv_format import parse_csv
from appliance.pipeline import Pipeline
from appliance.results import Item, ItemResult
from tests.helpers import encode, scene_image, synthetic_image

TRANSPOSES = {
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip": Image.Transpose.FLIP_TOP_BOTTOM,
    "transpose": Image.Transpose.TRANSPOSE,
}


# Which of the query's dihedral variants undoes each transform (measured on
# photograph-like pictures; the reference's names).
UNDOES = {
    "rot90": "rot270", "rot180": "rot180", "rot270": "rot90", "mirror": "flipy",
    "flip": "flipx", "transpose": "flip+1",
}


def _listed(image: Image.Image) -> Snapshot:
    pdq, _ = pdq_from_rgb(np.asarray(image.convert("RGB")))
    hash_list = parse_csv(f"id,pdq\nE1,{pdq.hex()}\n".encode(), "L")
    return Snapshot([hash_list], MatchingConfig())


def _run(config: Config, snapshot: Snapshot | None, *items: Item) -> list[ItemResult]:
    with ThreadPoolExecutor(2) as pool:
        return Pipeline(config).run(items, snapshot, pool)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return scene_image(7)


@pytest.mark.parametrize("name", sorted(TRANSPOSES))
def test_dihedral_matching_finds_turned_and_mirrored_copies(
    picture: Image.Image, name: str
) -> None:
    snapshot = _listed(picture)
    data = encode(picture.transpose(TRANSPOSES[name]), "PNG")
    [plain] = _run(Config(), snapshot, Item("q", data))
    assert not plain.matches  # a turned copy is far from the original as stored
    dihedral = Config(matching=MatchingConfig(pdq_dihedral=True))
    [result] = _run(dihedral, snapshot, Item("q", data))
    [hit] = result.matches  # one hit per entry, however many variants match
    assert hit.entry_id == "E1" and hit.variant == UNDOES[name]
    # Not 0 for every transform: with an even box-filter window (here along the
    # 240 rows: window 2) the reference's filter is off-centre by half a pixel,
    # so a turned picture is sampled slightly differently. Well within 31.
    assert hit.distance <= 24
    variants = [h.variant for h in result.hashes if h.signal == "pdq"]
    assert variants == ["", "rot90", "rot180", "rot270", "flipx", "flipy", "flip+1", "flip-1"]


def test_dihedral_prefers_the_stored_orientation_on_ties(picture: Image.Image) -> None:
    dihedral = Config(matching=MatchingConfig(pdq_dihedral=True))
    [result] = _run(dihedral, _listed(picture), Item("q", encode(picture, "PNG")))
    [hit] = result.matches
    assert (hit.variant, hit.distance) == ("", 0)


def test_exif_orientation_option(picture: Image.Image) -> None:
    # Stored turned, with a tag that says how to turn it upright again.
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    stored = picture.transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    snapshot = _listed(picture)
    [plain] = _run(Config(), snapshot, Item("q", data))
    assert not plain.matches
    config = Config(hashing=HashingConfig(exif_orientation=True))
    [result] = _run(config, snapshot, Item("q", data))
    assert [(h.entry_id, h.variant) for h in result.matches] == [("E1", "exif")]
    assert [h.variant for h in result.hashes if h.signal == "pdq"] == ["", "exif"]
    # An image without the tag gets no extra hash.
    [upright] = _run(config, snapshot, Item("q", encode(picture, "JPEG")))
    assert [h.variant for h in upright.hashes if h.signal == "pdq"] == [""]


def test_fast_mode_decodes_jpegs_small_and_drifts_little() -> None:
    big = scene_image(5, (2400, 1800))
    data = encode(big, "JPEG", quality=90)
    exact_hash = pdq_from_rgb(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))[0]
    fast = Config(hashing=HashingConfig(pdq_mode="fast", fast_min_side=256))
    [result] = _run(fast, None, Item("f", data))
    [pdq] = [h for h in result.hashes if h.signal == "pdq"]
    draft = Image.open(io.BytesIO(data))
    draft.draft(None, (256, 256))
    assert pdq.value == pdq_from_rgb(np.asarray(draft.convert("RGB")))[0]
    drift = bin(int.from_bytes(pdq.value, "big") ^ int.from_bytes(exact_hash, "big")).count("1")
    assert drift <= 16
    # PNGs have no reduced decode: fast mode hashes them exactly.
    png = encode(synthetic_image(6, (300, 200)), "PNG")
    [exact_png] = _run(Config(), None, Item("p", png))
    [fast_png] = _run(fast, None, Item("p", png))
    assert exact_png.hashes == fast_png.hashes


def test_imagehash_family_through_the_pipeline(picture: Image.Image) -> None:
    data = encode(picture.convert("RGBA"), "PNG")
    names = ("phash", "dhash", "ahash", "whash")
    [result] = _run(Config(), None, Item("i", data, names))
    got = {h.signal: h.hex for h in result.hashes}
    image = Image.open(io.BytesIO(data))
    assert got == {
        "phash": str(imagehash.phash(image)), "dhash": str(imagehash.dhash(image)),
        "ahash": str(imagehash.average_hash(image)), "whash": str(imagehash.whash(image)),
    }
    # And they match lists by Hamming distance at their own thresholds.
    listed = int(got["phash"], 16) ^ 0b1111  # 4 bits away
    hash_list = parse_csv(f"id,phash\nP1,{listed:016x}\n".encode(), "L")
    matching = MatchingConfig(phash_threshold=4)
    snapshot = Snapshot([hash_list], matching)
    [hit_result] = _run(Config(matching=matching), snapshot, Item("i", data, ("phash",)))
    assert [(h.entry_id, h.distance) for h in hit_result.matches] == [("P1", 4)]
    tight = replace(matching, phash_threshold=3)
    [miss] = _run(Config(matching=tight), Snapshot([hash_list], tight),
                  Item("i", data, ("phash",)))
    assert not miss.matches
