"""The GPU pipeline (backend gpu-sim here: NumPy and the CUDA simulator; on a
real GPU the same tests run on the device) against the CPU pipeline: the same
hashes in the same order, the same matches, the same errors; the device index
against the host snapshot; reloads; and the fall-back to the CPU on a fault.

Every GPU pipeline here is strict (``gpu.strict``) unless a test is about the
fall-back: a device fault raises instead of being answered by the CPU, so a
broken kernel fails these tests rather than passing them on the CPU path.

Images stay tiny: the simulator runs every CUDA thread as a Python thread.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from appliance.backend import Backend, make_pipeline
from appliance.config import Config, GpuConfig, HashingConfig, MatchingConfig
from appliance.gpu.index import DeviceIndex
from appliance.gpu.pipeline import GpuFault, GpuPipeline
from appliance.hashers.pdq import pdq_from_rgb
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.lists import parse_csv
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline
from appliance.results import Item, ItemResult
from appliance.work import Work
from tests.imaging import encode, synthetic_image

SIGNALS = ("md5", "sha1", "sha256", "pdq", "phash", "dhash")
STRICT = Config(gpu=GpuConfig(strict=True))
STAGES = ["upload", "lookup", "digest", "perceptual", "match"]


def _images() -> list[tuple[str, bytes]]:
    pictures = [synthetic_image(i, size) for i, size in
                enumerate([(32, 24), (40, 40), (64, 64), (20, 30), (9, 7)])]
    files = [(f"img{i}.png", encode(p)) for i, p in enumerate(pictures)]
    files.append(("img.jpg", encode(synthetic_image(9, (48, 36)), "JPEG", quality=80)))
    # EXIF orientation 6 (turned 90 degrees): the "exif" variant is hashed too.
    exif = Image.Exif()
    exif[0x0112] = 6
    files.append(("exif.jpg", encode(synthetic_image(11, (36, 28)), "JPEG", exif=exif)))
    return files


def _items(signals: tuple[str, ...] = SIGNALS) -> list[Item]:
    files = _images()
    items = [Item(name, data, signals) for name, data in files]
    items += [
        Item("text.txt", b"not an image " * 40, signals),  # digests, PDQ skipped
        Item("empty", b"", signals),
        Item("edge-55", b"x" * 55, ("md5", "sha1", "sha256")),
        Item("edge-64", b"y" * 64, ("sha256",)),
        Item("corrupt.png", files[0][1][:60], signals),
        Item("hash-only", files[1][1], signals, match=False),
    ]
    return items


def _listed_snapshot(matching: MatchingConfig) -> Snapshot:
    """A list with some of the test files' digests and PDQ hashes."""
    files = dict(_images())
    rgb = np.asarray(Image.open(__import__("io").BytesIO(files["img2.png"])).convert("RGB"))
    pdq, _ = pdq_from_rgb(rgb)
    near = bytearray(pdq)
    near[0] ^= 0b111  # 3 bits away
    rows = [
        "id,md5,sha256,pdq,category",
        f"by-md5,{hashlib.md5(files['img0.png']).hexdigest()},,,a",
        f"by-sha256,,{hashlib.sha256(files['img.jpg']).hexdigest()},,b",
        f"by-pdq,,,{bytes(near).hex()},c",
        f"text,{hashlib.md5(b'not an image ' * 40).hexdigest()},,,d",
    ]
    listed = parse_csv("\n".join(rows).encode(), "listed")
    return Snapshot([listed], matching)


def _config(strict: bool = True, **matching: object) -> Config:
    return Config(
        matching=MatchingConfig(pdq_quality_min=0, **matching),
        hashing=HashingConfig(exif_orientation=True),
        # Small, so that some of the files are digested on the CPU threads.
        gpu=GpuConfig(digest_cpu_min_bytes=3000, strict=strict),
    )


def _as_tuples(results: list[ItemResult]) -> list[object]:
    return [
        (r.id, r.size, r.hashes, sorted(r.skipped.items()), r.error, r.matches) for r in results
    ]


@pytest.mark.parametrize("dihedral", [False, True], ids=["plain", "dihedral"])
def test_gpu_pipeline_answers_as_the_cpu_pipeline(
    backend: Backend, pool: ThreadPoolExecutor, dihedral: bool
) -> None:
    config = _config(pdq_dihedral=dihedral)
    snapshot = _listed_snapshot(config.matching)
    gpu = make_pipeline(config, backend)
    assert isinstance(gpu, GpuPipeline)
    gpu.prepare_snapshot(snapshot)
    items = _items()
    want = Pipeline(config).run(items, snapshot, pool)
    got = gpu.run(items, snapshot, pool)
    assert _as_tuples(got) == _as_tuples(want)
    # The comparison has teeth: matches, errors, skipped signals and variants occur.
    by_id = {r.id: r for r in got}
    assert {h.entry_id for h in by_id["img0.png"].matches} == {"by-md5"}
    assert {h.entry_id for h in by_id["img.jpg"].matches} == {"by-sha256"}
    assert [h.entry_id for h in by_id["img2.png"].matches] == ["by-pdq"]
    assert by_id["empty"].error is not None and by_id["corrupt.png"].skipped
    assert not by_id["hash-only"].matches
    # With dihedral on, the EXIF turn is one of the 8 variants already hashed.
    assert any(h.variant == "exif" for h in by_id["exif.jpg"].hashes) != dihedral
    variants = {h.variant for h in by_id["img1.png"].hashes if h.signal == "pdq"}
    assert len(variants) == (8 if dihedral else 1)


def test_digests_of_small_and_large_files_equal_hashlib(
    backend: Backend, pool: ThreadPoolExecutor
) -> None:
    config = replace(Config(), gpu=GpuConfig(digest_cpu_min_bytes=100, strict=True))
    rng = np.random.default_rng(5)
    lengths = [1, 55, 56, 63, 64, 65, 99, 100, 119, 120, 4097]
    items = [Item(str(n), rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
                  ("md5", "sha1", "sha256")) for n in lengths]
    results = make_pipeline(config, backend).run(items, None, pool)
    for item, result in zip(items, results, strict=True):
        assert [h.value for h in result.hashes] == [
            hashlib.md5(item.content).digest(),
            hashlib.sha1(item.content).digest(),
            hashlib.sha256(item.content).digest(),
        ], item.id


def _lookup_snapshot() -> Snapshot:
    rng = np.random.default_rng(3)
    pdq = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(40)]
    phash = [bytes(rng.integers(0, 256, 8, dtype=np.uint8)) for _ in range(40)]
    rows = ["id,md5,sha1,pdq,phash"]
    for i in range(40):
        md5 = hashlib.md5(str(i % 30).encode()).hexdigest()  # duplicates across entries
        sha1 = hashlib.sha1(str(i).encode()).hexdigest() if i % 3 else ""
        rows.append(f"e{i},{md5},{sha1},{pdq[i].hex()},{phash[i].hex()}")
    return Snapshot([parse_csv("\n".join(rows).encode(), "big")], MatchingConfig())


def _flip(value: bytes, n: int, rng: np.random.Generator) -> bytes:
    bits = np.frombuffer(value, dtype=np.uint8).copy()
    for b in rng.choice(len(value) * 8, n, replace=False):
        bits[b // 8] ^= 1 << (b % 8)
    return bits.tobytes()


def test_device_index_answers_as_the_host_snapshot(backend: Backend) -> None:
    snapshot = _lookup_snapshot()
    device_index = DeviceIndex(snapshot, backend.gpu)
    hl = snapshot.lists[0]
    rng = np.random.default_rng(9)
    pdq_values = hl.columns["pdq"].values
    pdq_queries = [_flip(pdq_values[i].tobytes(), int(d), rng)
                   for i, d in zip(range(0, 40, 2), rng.integers(0, 45, 20), strict=True)]
    phash_queries = [_flip(v.tobytes(), 3 * k % 13, rng)
                     for k, v in enumerate(hl.columns["phash"].values[:12])]
    cases = {
        "md5": [hashlib.md5(str(i).encode()).digest() for i in range(35)],
        "sha1": [hashlib.sha1(str(i).encode()).digest() for i in range(45)],
        "pdq": pdq_queries,
        "phash": phash_queries,
    }
    hits = 0
    for signal, queries in cases.items():
        want = snapshot.match(signal, queries)
        got = device_index.match(signal, queries)
        assert got == want, signal
        hits += sum(map(len, got))
    assert hits > 60
    assert device_index.nbytes > 0


def test_a_reload_uploads_only_the_lists_that_changed(backend: Backend) -> None:
    metrics = Metrics()
    gpu = make_pipeline(STRICT, backend, metrics)
    assert isinstance(gpu, GpuPipeline)
    keep = ListIndex(_lookup_snapshot().lists[0])
    first = Snapshot([keep, ListIndex(parse_csv(b"id,md5\nx," + b"a" * 32, "other"))],
                     MatchingConfig())
    gpu.prepare_snapshot(first)
    index_one = gpu._device_index(first)
    assert index_one is not None
    second = Snapshot([keep, ListIndex(parse_csv(b"id,md5\ny," + b"b" * 32, "other"))],
                      MatchingConfig())
    gpu.prepare_snapshot(second)
    index_two = gpu._device_index(second)
    assert index_two is not None and gpu._device_index(first) is None
    assert index_two._lists[id(keep)][1] is index_one._lists[id(keep)][1]
    other_one = next(d for i, d in index_one._lists.values() if i.name == "other")
    other_two = next(d for i, d in index_two._lists.values() if i.name == "other")
    assert other_two is not other_one
    assert metrics.registry.get_sample_value(
        "appliance_gpu_memory_bytes", {"kind": "index"}) == index_two.nbytes


@pytest.mark.parametrize("stage", ["digest", "perceptual", "match"])
def test_a_gpu_fault_redoes_the_batch_on_the_cpu(
    backend: Backend, pool: ThreadPoolExecutor, stage: str
) -> None:
    config = _config(strict=False)
    snapshot = _listed_snapshot(config.matching)
    metrics = Metrics()
    gpu = make_pipeline(config, backend, metrics)
    assert isinstance(gpu, GpuPipeline)
    gpu.prepare_snapshot(snapshot)

    def fail(at: str) -> None:
        if at == stage:
            raise GpuFault(f"injected fault in {at}")

    gpu.fault_hook = fail
    # The listed files and one that is not an image: matches on every signal kind.
    items = [i for i in _items() if i.id in ("img0.png", "img2.png", "img.jpg", "text.txt")]
    got = gpu.run(items, snapshot, pool)
    want = Pipeline(config).run(items, snapshot, pool)
    assert _as_tuples(got) == _as_tuples(want)
    assert metrics.registry.get_sample_value(
        "appliance_gpu_fallbacks_total", {"stage": stage}) == 1
    assert gpu.fallbacks == 1
    gpu.fault_hook = None  # and the next batch is back on the device
    assert _as_tuples(gpu.run(items, snapshot, pool)) == _as_tuples(want)
    assert metrics.registry.get_sample_value(
        "appliance_gpu_fallbacks_total", {"stage": stage}) == 1
    assert gpu.fallbacks == 1


def test_a_failed_upload_matches_on_the_host(backend: Backend, pool: ThreadPoolExecutor) -> None:
    config = _config(strict=False)
    snapshot = _listed_snapshot(config.matching)
    metrics = Metrics()
    gpu = make_pipeline(config, backend, metrics)
    assert isinstance(gpu, GpuPipeline)

    def fail(at: str) -> None:
        if at == "upload":
            raise GpuFault("out of memory (injected)")

    gpu.fault_hook = fail
    gpu.prepare_snapshot(snapshot)
    assert gpu._device_index(snapshot) is None
    items = [i for i in _items() if i.id in ("img0.png", "img2.png", "text.txt")]
    got = gpu.run(items, snapshot, pool)
    assert _as_tuples(got) == _as_tuples(Pipeline(config).run(items, snapshot, pool))
    assert metrics.registry.get_sample_value(
        "appliance_gpu_fallbacks_total", {"stage": "upload"}) == 1
    assert gpu.fallbacks == 1


def test_the_cpu_stage_of_one_batch_overlaps_the_device_stage_of_another(
    backend: Backend, pool: ThreadPoolExecutor
) -> None:
    """Only the device stage holds the device: while batch 1 is on it, batch 2
    is decoded and hashed on the CPU threads (and then waits for the device)."""
    import threading

    gpu = make_pipeline(STRICT, backend)
    assert isinstance(gpu, GpuPipeline)
    on_device, release = threading.Event(), threading.Event()
    second_prepared = threading.Event()

    def hold(stage: str) -> None:
        if stage == "digest" and not on_device.is_set():
            on_device.set()
            assert release.wait(60)

    gpu.fault_hook = hold
    original = gpu.hash_item

    def watched(item: Item, work: Work | None = None) -> ItemResult:
        result = original(item, work)
        if item.id.startswith("second"):
            second_prepared.set()
        return result

    gpu.hash_item = watched  # type: ignore[method-assign]
    first = [Item("first", b"one" * 10, ("md5",))]
    second = [Item("second", b"two" * 10, ("md5",))]
    with ThreadPoolExecutor(2) as drivers:
        one = drivers.submit(gpu.run, first, None, pool)
        assert on_device.wait(60)
        two = drivers.submit(gpu.run, second, None, pool)
        # Batch 2's CPU stage runs while batch 1 still holds the device.
        assert second_prepared.wait(60)
        assert not one.done() and not two.done()
        release.set()
        [r1], [r2] = one.result(60), two.result(60)
    assert r1.hashes[0].value == hashlib.md5(b"one" * 10).digest()
    assert r2.hashes[0].value == hashlib.md5(b"two" * 10).digest()


def test_lookup_on_the_device_and_after_a_fault(backend: Backend) -> None:
    snapshot = _lookup_snapshot()
    metrics = Metrics()
    gpu = make_pipeline(STRICT, backend, metrics)
    assert isinstance(gpu, GpuPipeline)
    gpu.prepare_snapshot(snapshot)
    values = [v.tobytes() for v in snapshot.lists[0].columns["pdq"].values[:6]]
    want = snapshot.match("pdq", values, [None] * len(values))
    assert gpu.lookup(snapshot, "pdq", values, [None] * len(values)) == want
    assert all(hits for hits in want)
    assert gpu.fallbacks == 0
    gpu.strict = False  # from here on, a fault falls back

    def fail(at: str) -> None:
        raise GpuFault(f"injected fault in {at}")

    gpu.fault_hook = fail
    assert gpu.lookup(snapshot, "pdq", values, [None] * len(values)) == want
    assert metrics.registry.get_sample_value(
        "appliance_gpu_fallbacks_total", {"stage": "lookup"}) == 1
    assert gpu.fallbacks == 1


def test_metrics_are_not_needed_to_count_fallbacks(
    backend: Backend, pool: ThreadPoolExecutor
) -> None:
    gpu = make_pipeline(Config(), backend)  # no metrics
    assert isinstance(gpu, GpuPipeline) and gpu.fallbacks == 0

    def fail(at: str) -> None:
        raise GpuFault(f"injected fault in {at}")

    gpu.fault_hook = fail
    items = [Item("a", b"abc" * 10, ("md5",))]
    [result] = gpu.run(items, None, pool)
    assert result.hashes[0].value == hashlib.md5(b"abc" * 10).digest()
    assert gpu.fallbacks == 1


class _Broken(Exception):
    """Stands in for a numba typing error, a CUDA error, an out-of-memory."""


@pytest.mark.parametrize("stage", STAGES)
def test_a_strict_pipeline_raises_every_device_fault(
    backend: Backend, pool: ThreadPoolExecutor, stage: str
) -> None:
    """No fall-back with gpu.strict: the fault of any stage reaches the caller
    as a GpuFault whose cause is the original exception, and is counted."""
    config = _config(strict=True)
    snapshot = _listed_snapshot(config.matching)
    metrics = Metrics()
    gpu = make_pipeline(config, backend, metrics)
    assert isinstance(gpu, GpuPipeline) and gpu.strict
    original = _Broken(f"broken in {stage}")

    def fail(at: str) -> None:
        if at == stage:
            raise original

    if stage != "upload":
        gpu.prepare_snapshot(snapshot)
    gpu.fault_hook = fail
    items = [i for i in _items() if i.id in ("img0.png", "img2.png", "text.txt")]
    with pytest.raises(GpuFault, match=f"GPU fault in the {stage} stage") as raised:
        if stage == "upload":
            gpu.prepare_snapshot(snapshot)
        elif stage == "lookup":
            gpu.lookup(snapshot, "md5", [bytes(16)], [None])
        else:
            gpu.run(items, snapshot, pool)
    assert raised.value.__cause__ is original
    assert "\n" not in str(raised.value)
    assert gpu.fallbacks == 1
    # Raised, not fallen back from: the metric of fall-backs stays at zero.
    assert not metrics.registry.get_sample_value(
        "appliance_gpu_fallbacks_total", {"stage": stage})
