"""The pipeline: per-item faults never fail a batch; hashes against oracles."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pdqhash
from PIL import Image

from appliance.config import Config, LimitsConfig, MatchingConfig
from appliance.errors import ItemCode
from appliance.index.snapshot import Snapshot
from appliance.lists.csv_format import parse_csv
from appliance.pipeline import Pipeline
from appliance.results import Item
from tests.helpers import encode, synthetic_image


def _pdq_reference(image: Image.Image) -> tuple[str, int]:
    bits, quality = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(bits).tobytes().hex(), int(quality)


def test_batch_with_bad_items_keeps_the_good_ones() -> None:
    good = synthetic_image(1, (120, 90))
    good_bytes = encode(good, "PNG")
    items = [
        Item("good", good_bytes),
        Item("empty", b""),
        Item("big", b"x" * (len(good_bytes) + 10_001)),
        Item("text", b"just some text, not an image"),
        Item("truncated", encode(synthetic_image(2, (200, 200)), "JPEG")[:500]),
        Item("unknown-signal", good_bytes, ("md5", "nope")),
        Item("photodna", good_bytes, ("photodna",)),
        Item("good-again", good_bytes, ("sha1",)),
    ]
    pipeline = Pipeline(Config(limits=LimitsConfig(max_file_bytes=len(good_bytes) + 10_000)))
    with ThreadPoolExecutor(2) as pool:
        results = {r.id: r for r in pipeline.run(items, None, pool)}
    assert [r for r in results] == [i.id for i in items]

    good_hashes = {h.signal: h for h in results["good"].hashes}
    assert results["good"].error is None and not results["good"].skipped
    assert good_hashes["md5"].value == hashlib.md5(good_bytes).digest()
    assert good_hashes["sha1"].value == hashlib.sha1(good_bytes).digest()
    assert good_hashes["sha256"].value == hashlib.sha256(good_bytes).digest()
    assert (good_hashes["pdq"].hex, good_hashes["pdq"].quality) == _pdq_reference(good)

    def code(name: str) -> str | None:
        error = results[name].error
        return error.code if error else None

    assert code("empty") == ItemCode.EMPTY
    assert code("big") == ItemCode.TOO_LARGE and not results["big"].hashes
    assert code("unknown-signal") == ItemCode.UNKNOWN_SIGNAL
    assert code("photodna") == ItemCode.NOT_COMPUTABLE
    # Not an image: digests are still given, PDQ is skipped with a reason.
    text = results["text"]
    assert text.error is None
    assert {h.signal for h in text.hashes} == {"md5", "sha1", "sha256"}
    assert text.skipped["pdq"].code == ItemCode.NOT_AN_IMAGE
    assert results["truncated"].skipped["pdq"].code == ItemCode.CORRUPT_IMAGE
    assert [h.signal for h in results["good-again"].hashes] == ["sha1"]


def test_only_unmakeable_signals_is_an_item_error() -> None:
    pipeline = Pipeline(Config(limits=LimitsConfig()))
    result = pipeline.hash_item(Item("t", b"plain text", ("pdq",)))
    assert result.error is not None and result.error.code == ItemCode.NOT_AN_IMAGE
    assert not result.hashes


def test_precomputed_stream_digests_are_used_not_recomputed() -> None:
    pipeline = Pipeline(Config(limits=LimitsConfig()))
    fake = {"md5": b"\x01" * 16, "sha1": b"\x02" * 20, "sha256": b"\x03" * 32}
    result = pipeline.hash_item(Item("s", b"data", ("md5", "sha256"), digests=fake))
    assert {h.signal: h.value for h in result.hashes} == {
        "md5": fake["md5"], "sha256": fake["sha256"]
    }


def test_match_reports_exact_and_near_hits() -> None:
    image = synthetic_image(9, (160, 120))
    data = encode(image, "PNG")
    near = encode(image, "JPEG", quality=60)
    pdq_hex, _ = _pdq_reference(image)
    csv = f"id,category,md5,pdq\ne1,cat-a,{hashlib.md5(data).hexdigest()},{pdq_hex}\n"
    hash_list = parse_csv(csv.encode(), "L")
    snapshot = Snapshot([hash_list], MatchingConfig())
    pipeline = Pipeline(Config(limits=LimitsConfig()))
    with ThreadPoolExecutor(2) as pool:
        exact, close, other = pipeline.run(
            [Item("a", data), Item("b", near), Item("c", encode(synthetic_image(99), "PNG"))],
            snapshot, pool,
        )
    assert {(h.signal, h.entry_id, h.distance) for h in exact.matches} == {
        ("md5", "e1", 0), ("pdq", "e1", 0)
    }
    assert exact.matched and exact.matches[0].list == "L"
    assert exact.matches[0].list_version == hashlib.sha256(csv.encode()).hexdigest()[:16]
    assert [h.signal for h in close.matches] == ["pdq"]
    assert 0 < close.matches[0].distance <= 31
    assert close.matches[0].category == "cat-a"
    assert not other.matched


def test_an_unexpected_failure_fails_only_its_pixel_signals(monkeypatch) -> None:
    from appliance.hashers.registry import GROUPS

    def broken(decoded, names, options):
        raise RuntimeError("boom")

    # Inline: the patch must reach the code that decodes (a worker process would not see it).
    monkeypatch.setitem(GROUPS, "pdq", broken)
    good = encode(synthetic_image(4), "PNG")
    with ThreadPoolExecutor(2) as pool:
        bad, text = Pipeline(Config(limits=LimitsConfig(decode_isolation="inline"))).run(
            [Item("img", good), Item("txt", b"plain text")], None, pool
        )
    assert bad.error is None and [h.signal for h in bad.hashes] == ["md5", "sha1", "sha256"]
    assert bad.skipped["pdq"].code == ItemCode.INTERNAL
    assert "boom" not in bad.skipped["pdq"].message  # no internals leak to clients
    assert text.error is None and text.hashes
