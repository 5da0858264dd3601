"""The GPU wrappers with a CuPy stand-in, on the CPU, without the simulator.

Under the simulator ``xp`` is NumPy, which takes NumPy arrays anywhere, so a
wrapper that hands CuPy a NumPy array passes every simulator test and fails on
the first real GPU (``digest_batch`` with NumPy offsets, as
benchmarks/gpu_kernels.py calls it: cupy#3511). ``tests.cupy_standin`` refuses
what CuPy refuses, and its kernels refuse NumPy arguments and host reads of an
unsynchronised stream; the kernels' work is done by CPU twins, so the answers
are checked too.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from appliance.config import Config, GpuConfig, LimitsConfig, MatchingConfig
from appliance.gpu.device import Device
from appliance.gpu.index import DeviceIndex
from appliance.gpu.pipeline import GpuPipeline
from appliance.index.hamming import pack
from appliance.index.snapshot import Snapshot
from appliance.lists import parse_csv
from appliance.pipeline import Pipeline
from appliance.results import Item
from kernels import digests, exact, hamming, pdq
from tests import cupy_standin
from tests.cupy_standin import DeviceArray, FakeKernel, FakeStream, StandIn, UnsynchronisedRead

xp = StandIn

# -- the CPU twins of the kernels (arguments as the kernels get them) -------------


def _digest_twin(data: NDArray[np.uint8], offsets: NDArray[np.int64], lengths: NDArray[np.int64],
                 order: NDArray[np.int64], md5: NDArray[np.uint8], sha1: NDArray[np.uint8],
                 sha256: NDArray[np.uint8]) -> None:
    assert sorted(order.tolist()) == list(range(len(lengths)))
    for i, (o, n) in enumerate(zip(offsets.tolist(), lengths.tolist(), strict=True)):
        content = data[o : o + n].tobytes()
        for out, algorithm in ((md5, hashlib.md5), (sha1, hashlib.sha1),
                               (sha256, hashlib.sha256)):
            out[i] = np.frombuffer(algorithm(content).digest(), dtype=np.uint8)


def _exact_twin(keys: NDArray[np.uint64], queries: NDArray[np.uint64],
                first: NDArray[np.int64], count: NDArray[np.int64]) -> None:
    rows = [tuple(r) for r in keys.tolist()]
    for q, query in enumerate(tuple(r) for r in queries.tolist()):
        first[q] = bisect.bisect_left(rows, query)
        count[q] = bisect.bisect_right(rows, query) - first[q]


def _hamming_twin(entries: NDArray[np.uint64], queries: NDArray[np.uint64], radius: int,
                  out_q: NDArray[np.int32], out_e: NDArray[np.int64],
                  out_d: NDArray[np.int32], counter: NDArray[np.int64]) -> None:
    for q in range(len(queries)):
        for e in range(len(entries)):
            d = sum(int(a ^ b).bit_count() for a, b in zip(entries[e], queries[q], strict=True))
            if d <= radius:
                slot = int(counter[0])
                counter[0] += 1
                if slot < len(out_q):
                    out_q[slot], out_e[slot], out_d[slot] = q, e, d


def _nothing(*args: Any) -> None:
    """The PDQ kernels: only their arguments are checked (by FakeKernel)."""


@pytest.fixture(autouse=True)
def kernels(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeKernel]]:
    fakes = {"digest": FakeKernel(_digest_twin), "exact": FakeKernel(_exact_twin),
             "hamming": FakeKernel(_hamming_twin), "luma": FakeKernel(_nothing),
             "box_filter": FakeKernel(_nothing), "finish": FakeKernel(_nothing)}
    monkeypatch.setattr(digests, "_kernel", lambda: fakes["digest"])
    monkeypatch.setattr(exact, "_kernel", lambda: fakes["exact"])
    monkeypatch.setattr(hamming, "_kernel", lambda: fakes["hamming"])
    module = SimpleNamespace(luma=fakes["luma"], box_filter=fakes["box_filter"],
                             finish=fakes["finish"])
    monkeypatch.setattr(pdq, "_kernel", lambda: module)
    cupy_standin.reset()
    yield fakes
    cupy_standin.reset()


def _expected(files: list[bytes]) -> list[tuple[bytes, bytes, bytes]]:
    return [(hashlib.md5(f).digest(), hashlib.sha1(f).digest(), hashlib.sha256(f).digest())
            for f in files]


def _rows(columns: tuple[Any, Any, Any], n: int) -> list[tuple[bytes, bytes, bytes]]:
    host = [c.get() for c in columns]
    return [(host[0][i].tobytes(), host[1][i].tobytes(), host[2][i].tobytes()) for i in range(n)]


def test_the_stand_in_refuses_what_cupy_refuses() -> None:
    a = xp.asarray(np.arange(3))
    with pytest.raises(TypeError, match="incorrect type"):
        xp.ascontiguousarray(np.arange(3))
    with pytest.raises(TypeError):
        _ = a + np.arange(3)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="NumPy array"):
        FakeKernel(_nothing)[1, 1, 0](np.zeros(3))
    stream = FakeStream()
    FakeKernel(_nothing)[1, 1, stream](a)
    with pytest.raises(UnsynchronisedRead):
        a.get()
    stream.synchronize()
    assert a.get().tolist() == [0, 1, 2]


def test_digest_batch_as_the_benchmarks_call_it(kernels: dict[str, FakeKernel]) -> None:
    """The buffer on the device, offsets and lengths as NumPy arrays."""
    files = [b"", b"abc", b"x" * 64, bytes(range(200))]
    lengths = np.array([len(f) for f in files], dtype=np.int64)
    offsets = np.zeros(len(files), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    data = xp.asarray(np.frombuffer(b"".join(files), dtype=np.uint8))
    stream = FakeStream()
    columns = digests.digest_batch(data, offsets, lengths, xp, stream=stream)
    assert all(isinstance(c, DeviceArray) for c in columns)
    assert _rows(columns, len(files)) == _expected(files)
    assert kernels["digest"].launches == 1 and stream.syncs == 1


def test_digest_batch_with_everything_on_the_host() -> None:
    files = [b"one", b"two!"]
    flat = np.frombuffer(b"".join(files), dtype=np.uint8)
    columns = digests.digest_batch(flat, [0, 3], [3, 4], xp, stream=FakeStream())
    assert _rows(columns, 2) == _expected(files)


def test_exact_find_with_numpy_keys_and_queries() -> None:
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 50, (40, 2), dtype=np.uint64), axis=0)
    queries = np.concatenate([keys[::5], np.full((3, 2), 99, dtype=np.uint64)])
    first, count = exact.find(keys, queries, xp, stream=FakeStream())
    assert isinstance(first, DeviceArray)
    assert count.get().tolist() == [1] * len(keys[::5]) + [0, 0, 0]
    assert (keys[first.get()[: len(keys[::5])]] == keys[::5]).all()


def test_hamming_search_with_numpy_entries_and_queries() -> None:
    rng = np.random.default_rng(2)
    entries = rng.integers(0, 256, (30, 32), dtype=np.uint8)
    queries = entries[:4].copy()
    queries[:, 0] ^= 0b11  # 2 bits from entries 0..3
    stream = FakeStream()
    qi, ei, di = hamming.search(pack(entries), pack(queries), 31, xp, capacity=2, stream=stream)
    assert isinstance(qi, np.ndarray)
    assert list(zip(qi.tolist(), ei.tolist(), di.tolist(), strict=True)) == [
        (q, q, 2) for q in range(4)]
    assert stream.syncs == 2  # the overflow (capacity 2) launched it twice


def test_pdq_batch_hands_the_kernels_device_arrays(kernels: dict[str, FakeKernel]) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    hashes, qualities = pdq.pdq_batch([rgb, rgb[:3]], xp, dihedral=True, stream=FakeStream())
    assert isinstance(hashes, np.ndarray) and hashes.shape == (2, 8, 32)
    assert isinstance(qualities, np.ndarray) and qualities.shape == (2,)
    assert [kernels[k].launches for k in ("luma", "box_filter", "finish")] == [1, 4, 1]


def _device() -> Device:
    # simulated=True: upload() hands NumPy arrays to the wrappers, which must
    # take them; the kernels' stream is one that has to be synchronised.
    device = Device(xp, simulated=True, name="CuPy stand-in")
    device.kernel_stream = FakeStream()
    return device


def _snapshot(files: list[bytes]) -> Snapshot:
    rng = np.random.default_rng(4)
    pdq_values = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(3)]
    rows = ["id,md5,pdq"] + [f"e{i},{hashlib.md5(f).hexdigest()},{p.hex()}"
                             for i, (f, p) in enumerate(zip(files, pdq_values, strict=False))]
    return Snapshot([parse_csv("\n".join(rows).encode(), "listed")], MatchingConfig())


def test_the_device_index_answers_as_the_host_snapshot() -> None:
    files = [b"first", b"second", b"third"]
    snapshot = _snapshot(files)
    index = DeviceIndex(snapshot, _device())
    md5s = [hashlib.md5(f).digest() for f in files] + [bytes(16)]
    assert index.match("md5", md5s) == snapshot.match("md5", md5s)
    listed = [v.tobytes() for v in snapshot.lists[0].columns["pdq"].values]
    queries = [bytes([v[0] ^ 1]) + v[1:] for v in listed] + [bytes(32)]
    got = index.match("pdq", queries, [100] * len(queries))
    assert got == snapshot.match("pdq", queries, [100] * len(queries)) and got[0]


def test_a_strict_gpu_pipeline_digests_and_matches_on_the_stand_in(
    kernels: dict[str, FakeKernel]
) -> None:
    """The pipeline's own calls: strict, so a refused array would raise, not fall back."""
    config = Config(gpu=GpuConfig(strict=True, digest_cpu_min_bytes=100),
                    limits=LimitsConfig(decode_isolation="inline"))
    files = [b"first", b"second", b"z" * 300, b""]
    snapshot = _snapshot(files[:2])
    gpu = GpuPipeline(config, _device())
    gpu.prepare_snapshot(snapshot)
    items = [Item(f"f{i}", f, ("md5", "sha1", "sha256")) for i, f in enumerate(files)]
    with ThreadPoolExecutor(2) as pool:
        got = gpu.run(items, snapshot, pool)
        want = Pipeline(config).run(items, snapshot, pool)
    assert [(r.hashes, r.matches, r.error) for r in got] == [
        (r.hashes, r.matches, r.error) for r in want]
    assert [h.entry_id for h in got[0].matches] == ["e0"]
    assert gpu.fallbacks == 0 and kernels["digest"].launches == 1 and kernels["exact"].launches
