"""Bulk scans and retro-matching on Ray Data (a local Ray, two CPUs).

``bulk scan`` is checked file for file against ``appliance scan`` (and its
digests against hashlib); ``bulk rematch`` against a brute-force match of the
same records written here, with and without ``--only-new-since``, from
Parquet and from CSV, with a compiled snapshot on either side of the delta.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from appliance import cli, demo
from tests.helpers import scene_image

VIDEO = Path(__file__).parent / "data" / "video" / "test-padded-dimensions.mp4"
THRESHOLD, QUALITY_MIN = 31, 50


@pytest.fixture(scope="module")
def ray_here() -> Iterator[Path]:
    """A local Ray for the in-process runs, in a temporary directory of its own
    (its logs, sockets and spill directory), which the content test searches."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    ray.init(num_cpus=2, object_store_memory=96 * 1024 * 1024, include_dashboard=False,
             _temp_dir=str(temp), _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    try:
        yield temp
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _parquet(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(folder).to_pylist()
    return rows


# -- bulk scan -------------------------------------------------------------------------------


def _corpus(root: Path) -> dict[str, bytes]:
    """Pictures that match the demo list and pictures that do not, a video, and
    files that fail: truncated, empty, not a picture, over the stream limit."""
    files = {name: data for name, data in demo.build().files.items()}
    for seed in range(6):
        out = io.BytesIO()
        scene_image(seed).save(out, "JPEG" if seed % 2 else "PNG")
        files[f"scene-{seed}.{'jpg' if seed % 2 else 'png'}"] = out.getvalue()
    files["truncated.jpg"] = files["scene-1.jpg"][:700]
    files["empty.bin"] = b""
    files["notes.txt"] = b"not a picture at all\n" * 10
    files["big.bin"] = os.urandom(300_000)  # over the limit of the config below
    files["clip.mp4"] = VIDEO.read_bytes()
    for name, data in files.items():
        path = root / ("nested" if name.startswith("scene-") else "") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _setup(tmp: Path) -> tuple[Path, dict[str, bytes], list[str]]:
    source = tmp / "files"
    files = _corpus(source)
    (tmp / "demo").mkdir()
    demo.write(tmp / "demo")
    config = tmp / "appliance.toml"
    config.write_text("[limits]\nmax_stream_bytes = 200000\n")
    common = ["--config", str(config), "--lists", f"demo={tmp / 'demo' / 'demo-list.csv'}"]
    return source, files, common


def _hit_key(hit: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(hit[k] for k in ("signal", "list", "list_version", "entry_id", "category",
                                  "distance"))


def test_bulk_scan_gives_what_appliance_scan_gives_file_for_file(ray_here, tmp_path) -> None:
    source, files, common = _setup(tmp_path)
    scan_out = tmp_path / "scan.jsonl"
    assert cli.main(["scan", str(source), *common, "--out", str(scan_out), "--no-progress"]) == 1
    expected = {json.loads(line)["file"]: json.loads(line)
                for line in scan_out.read_text().splitlines()}
    out = tmp_path / "bulk"
    assert cli.main(["bulk", "scan", str(source), *common, "--out", str(out),
                     "--no-progress"]) == 1  # some files fail: as scan, exit 1
    rows = {r["path"]: r for r in _parquet(out)}
    assert set(rows) == set(expected) == {str(p) for p in source.rglob("*") if p.is_file()}
    matched = 0
    for path, want in expected.items():
        row = rows[path]
        data = files[Path(path).name]
        if "error" in want:
            assert row["error"] == want["error"]["code"], path
            continue
        assert row["error"] is None and row["size"] == len(data)
        # Independent of both commands: hashlib.
        assert row["md5"] == hashlib.md5(data).hexdigest()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        for signal in ("md5", "sha1", "sha256", "pdq", "tmk", "vpdq"):
            assert row[signal] == want.get(signal), (path, signal)
        assert row["pdq_quality"] == want.get("pdq_quality")
        assert row["matched"] == want["matched"]
        assert sorted(map(_hit_key, row["matches"])) == sorted(map(_hit_key, want["matches"]))
        assert {s["signal"]: s["code"] for s in row["skipped"]} == \
            {s: v["code"] for s, v in want.get("skipped", {}).items()}
        matched += row["matched"]
    assert matched >= 3  # the demo's listed pictures and their near copy
    codes = {Path(p).name: r["error"] for p, r in rows.items() if r["error"]}
    assert codes["big.bin"] == "TOO_LARGE"
    assert rows[str(source / "clip.mp4")]["tmk"]  # the video got its video hashes
    # Only paths and results went through Ray: no file's bytes are in its
    # temporary directory (logs, sockets, spill), nor in the results.
    needles = [data[len(data) // 2:len(data) // 2 + 48] for data in files.values()
               if len(data) > 1000]
    for path in [*ray_here.rglob("*"), *out.rglob("*")]:
        if path.is_file() and not path.is_socket():
            blob = path.read_bytes()
            assert not any(n in blob for n in needles), path


def test_a_text_file_of_paths_is_a_source_and_a_missing_file_is_a_row(
        ray_here, tmp_path) -> None:
    source, _, common = _setup(tmp_path)
    listing = tmp_path / "paths.txt"
    chosen = [source / "listed-by-pdq.jpg", source / "nested" / "scene-2.png"]
    listing.write_text("".join(f"{p}\n" for p in chosen) + "\n" + str(source / "gone.png") + "\n")
    out = tmp_path / "bulk"
    assert cli.main(["bulk", "scan", str(listing), *common, "--signals", "md5,pdq",
                     "--out", str(out), "--no-progress", "--actors", "2",
                     "--threads", "1"]) == 1
    rows = {Path(r["path"]).name: r for r in _parquet(out)}
    assert set(rows) == {"listed-by-pdq.jpg", "scene-2.png", "gone.png"}
    assert rows["gone.png"]["error"] == "UNREADABLE"
    assert rows["listed-by-pdq.jpg"]["matched"]
    assert "sha1" not in pq.read_schema(next(out.glob("*.parquet"))).names  # --signals
    # A second run into the same directory would mix two runs: refused.
    assert cli.main(["bulk", "scan", str(listing), *common, "--out", str(out),
                     "--no-progress"]) == 2


def test_uris_go_through_pyarrow_filesystems(ray_here, tmp_path) -> None:
    """A source and an output named by URI (file:// here; s3:// and the others
    take the same path through pyarrow): listed, read by the actors and
    written through the filesystem, with the same answers as local paths."""
    source, _, common = _setup(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "deep" / "er" / "remote"
    args = [*common, "--signals", "md5,pdq", "--no-progress"]
    assert cli.main(["bulk", "scan", str(source), *args, "--out", str(local)]) == 1
    assert cli.main(["bulk", "scan", f"file://{source}", *args,
                     "--out", f"file://{remote}"]) == 1
    want = {r["path"]: r for r in _parquet(local)}
    got = {r["path"]: r for r in _parquet(remote)}  # its parents were made: a prefix
    assert set(got) == {f"file://{p}" for p in want}
    for path, row in got.items():
        assert {**row, "path": path[len("file://"):]} == want[path[len("file://"):]]
    assert sum(r["matched"] for r in got.values()) >= 3


# -- bulk rematch -----------------------------------------------------------------------------


def _flip(value: bytes, bits: int, rng: np.random.Generator) -> bytes:
    raw = np.unpackbits(np.frombuffer(value, dtype=np.uint8))
    raw[rng.choice(raw.size, bits, replace=False)] ^= 1
    return np.packbits(raw).tobytes()


def _entries(n: int, rng: np.random.Generator, start: int = 0) -> list[dict[str, str]]:
    out = []
    for i in range(start, start + n):
        out.append({"id": f"e{i:04d}", "category": "csam" if i % 3 else "other",
                    "md5": rng.bytes(16).hex() if i % 2 == 0 else "",
                    "pdq": rng.bytes(32).hex()})
    return out


def _write_list(path: Path, entries: list[dict[str, str]]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "category", "md5", "pdq"])
        writer.writeheader()
        writer.writerows(entries)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # the list's version


def _records(entries: list[dict[str, str]], n: int, rng: np.random.Generator) -> pa.Table:
    ids, pdqs, md5s, qualities = [], [], [], []
    for i in range(n):
        target = entries[(i * 7) % len(entries)]
        if i % 3 == 0:  # near a listed value, at every distance around the threshold
            pdq: str | None = _flip(bytes.fromhex(target["pdq"]), i % 45, rng).hex()
        else:
            pdq = rng.bytes(32).hex() if i % 3 == 1 else None
        if i % 97 == 0:
            pdq = "zz" * 32  # malformed: counted, skipped, the row's md5 still matched
        md5 = target["md5"] if i % 5 == 0 and target["md5"] else rng.bytes(16).hex()
        ids.append(f"r{i}")
        pdqs.append(pdq)
        md5s.append(md5 if i % 11 else None)
        qualities.append(30 if i % 10 == 1 else 90)  # 30: below the quality gate
    return pa.table({"id": ids, "pdq": pdqs, "md5": md5s,
                     "pdq_quality": pa.array(qualities, pa.int32())})


_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def _brute(records: pa.Table, lists: dict[str, tuple[str, list[dict[str, str]]]],
           only: dict[str, set[tuple[str, str]]] | None = None) -> set[tuple[Any, ...]]:
    """Every (id, signal, list, version, entry, category, distance) by brute
    force: equal digests, PDQ within the threshold unless its quality is known
    and below the minimum; ``only``: per list, the (signal, hex) values allowed."""
    hits = set()
    rows = records.to_pylist()
    for name, (version, entries) in lists.items():
        allowed = only.get(name, set()) if only is not None else None
        pdq = np.array([list(bytes.fromhex(e["pdq"])) for e in entries], dtype=np.uint8)
        for row in rows:
            for e in entries:
                hit = (row["id"], name, version, e["id"], e["category"])
                if row["md5"] and e["md5"] == row["md5"] and (
                        allowed is None or ("md5", e["md5"]) in allowed):
                    hits.add((hit[0], "md5", *hit[1:], 0))
            value, quality = row["pdq"], row.get("pdq_quality")
            if not value or value.startswith("zz") or (quality is not None
                                                       and quality < QUALITY_MIN):
                continue
            q = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
            distance = _POP[pdq ^ q].sum(axis=1)
            for k in np.flatnonzero(distance <= THRESHOLD).tolist():
                e = entries[k]
                if allowed is None or ("pdq", e["pdq"]) in allowed:
                    hits.add((row["id"], "pdq", name, version, e["id"], e["category"],
                              int(distance[k])))
    return hits


def _found(folder: Path) -> set[tuple[Any, ...]]:
    return {(r["id"], r["signal"], r["list"], r["list_version"], r["entry_id"], r["category"],
             r["distance"]) for r in _parquet(folder)}


def _summary(stderr: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(stderr.strip().splitlines()[-1])
    return found


def test_rematch_equals_brute_force_in_a_local_ray_of_its_own(tmp_path) -> None:
    """Run as users run it: a process that starts its own local Ray."""
    rng = np.random.default_rng(7)
    entries = _entries(300, rng)
    version = _write_list(tmp_path / "ncmec.csv", entries)
    records = _records(entries, 3000, rng)
    pq.write_table(records, tmp_path / "records.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "RAY_"))}
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "bulk", "rematch", str(tmp_path / "records.parquet"),
         "--lists", f"ncmec={tmp_path / 'ncmec.csv'}", "--pdq-threshold", str(THRESHOLD),
         "--pdq-quality-min", str(QUALITY_MIN), "--out", str(tmp_path / "hits"),
         "--no-progress", "--summary-json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr  # malformed values: exit 1, all else matched
    want = _brute(records, {"ncmec": (version, entries)})
    assert len(want) > 500 and {h[1] for h in want} == {"md5", "pdq"}
    assert _found(tmp_path / "hits") == want
    summary = _summary(done.stderr)
    assert summary["rows"] == 3000 and summary["hits"] == len(want)
    assert summary["malformed"] == len(range(0, 3000, 97))
    assert summary["rows_hit"] == len({h[0] for h in want})


def _delta_case(tmp: Path) -> tuple[pa.Table, str, list[dict[str, str]], list[dict[str, str]]]:
    """An old list of 200 entries, and its update: 150 of them kept, one with a
    new PDQ, 120 entries added, one of which reuses a kept entry's PDQ."""
    rng = np.random.default_rng(11)
    old = _entries(200, rng)
    kept = [dict(e) for e in old[:150]]
    kept[3]["pdq"] = rng.bytes(32).hex()  # a new value for an old entry: added
    fresh = _entries(120, rng, start=1000)
    fresh[0]["pdq"] = kept[10]["pdq"]  # an old value under a new entry: not added
    new = kept + fresh
    _write_list(tmp / "old.csv", old)
    version = _write_list(tmp / "new.csv", new)
    return _records(old + fresh, 4000, rng), version, old, new


def _added(old: list[dict[str, str]], new: list[dict[str, str]]) -> set[tuple[str, str]]:
    before = {(s, e[s]) for e in old for s in ("md5", "pdq") if e[s]}
    return {(s, e[s]) for e in new for s in ("md5", "pdq") if e[s]} - before


def test_rematch_only_new_since_an_older_snapshot_equals_brute_force(ray_here, tmp_path) -> None:
    records, version, old, new = _delta_case(tmp_path)
    pq.write_table(records, tmp_path / "records.parquet")
    # The older snapshot compiled (its values come back out of its indexes).
    assert cli.main(["lists", "compile", f"ncmec={tmp_path / 'old.csv'}",
                     "-o", str(tmp_path / "old.snap")]) == 0
    added = _added(old, new)
    assert ("pdq", new[3]["pdq"]) in added and ("pdq", new[150]["pdq"]) not in added
    want = _brute(records, {"ncmec": (version, new)}, {"ncmec": added})
    everything = _brute(records, {"ncmec": (version, new)})
    assert want and len(want) < len(everything)
    flags = ["--pdq-threshold", str(THRESHOLD), "--pdq-quality-min", str(QUALITY_MIN),
             "--no-progress"]
    out = tmp_path / "delta"
    assert cli.main(["bulk", "rematch", str(tmp_path / "records.parquet"),
                     "--lists", f"ncmec={tmp_path / 'new.csv'}",
                     "--only-new-since", str(tmp_path / "old.snap"),
                     "--out", str(out), *flags]) == 1
    assert _found(out) == want
    # The other way round: the newer lists compiled, the older parsed; and CSV records.
    assert cli.main(["lists", "compile", f"ncmec={tmp_path / 'new.csv'}",
                     "-o", str(tmp_path / "new.snap")]) == 0
    pyarrow.csv.write_csv(records, tmp_path / "records.csv")
    out = tmp_path / "delta-csv"
    assert cli.main(["bulk", "rematch", str(tmp_path / "records.csv"),
                     "--lists", str(tmp_path / "new.snap"),
                     "--only-new-since", f"ncmec={tmp_path / 'old.csv'}",
                     "--out", str(out), *flags]) == 1
    assert _found(out) == want
    # Records without a quality column: PDQ matched with no quality gate.
    ungated = records.drop_columns(["pdq_quality"])
    pq.write_table(ungated, tmp_path / "ungated.parquet")
    out = tmp_path / "ungated"
    assert cli.main(["bulk", "rematch", str(tmp_path / "ungated.parquet"),
                     "--lists", f"ncmec={tmp_path / 'new.csv'}",
                     "--only-new-since", str(tmp_path / "old.snap"),
                     "--out", str(out), *flags]) == 1
    more = _brute(ungated, {"ncmec": (version, new)}, {"ncmec": added})
    assert len(more) > len(want) and _found(out) == more


def test_rematch_refuses_records_it_cannot_match(ray_here, tmp_path) -> None:
    pq.write_table(pa.table({"key": ["a"], "md5": ["0" * 32]}), tmp_path / "noid.parquet")
    pq.write_table(pa.table({"id": ["a"], "name": ["x"]}), tmp_path / "nosignal.parquet")
    pq.write_table(pa.table({"id": ["a"], "tmk": ["00"]}), tmp_path / "video.parquet")
    demo.write(tmp_path / "demo")
    lists = ["--lists", str(tmp_path / "demo" / "demo-list.csv")]
    for name in ("noid", "nosignal", "video"):
        assert cli.main(["bulk", "rematch", str(tmp_path / f"{name}.parquet"), *lists,
                         "--out", str(tmp_path / f"out-{name}"), "--no-progress"]) == 2
    assert cli.main(["bulk", "rematch", str(tmp_path / "noid.parquet"), *lists, "--dihedral",
                     "--out", str(tmp_path / "out-d"), "--no-progress"]) == 2


# -- the actor pool ---------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "resources", "asked", "want"), [
    ("gpu", {"CPU": 16, "GPU": 2}, (0, 0), (2, 8, 1.0)),  # one actor per GPU, a GPU each
    ("auto", {"CPU": 16, "GPU": 4}, (0, 0), (4, 4, 1.0)),
    ("auto", {"CPU": 16}, (0, 0), (8, 2, 0.0)),  # no GPU: CPU actors of 2 threads
    ("cpu", {"CPU": 16, "GPU": 4}, (0, 0), (8, 2, 0.0)),  # cpu asked: the GPUs are not taken
    ("cpu", {"CPU": 16}, (3, 0), (3, 5, 0.0)),
    ("cpu", {"CPU": 1}, (0, 0), (1, 1, 0.0)),
])
def test_the_pool_follows_the_backend_and_the_cluster(monkeypatch, backend, resources, asked,
                                                      want) -> None:
    import ray

    from appliance.bulk import engine

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    pool = engine.size_pool(backend, *asked)
    assert (pool.actors, pool.threads, pool.gpus) == want
    args = pool.remote_args()
    assert args["num_gpus"] == (1.0 if want[2] else None) and args["num_cpus"] == want[1]
    assert args["compute"].min_size == args["compute"].max_size == want[0]


def test_the_gpu_backend_on_a_cluster_without_gpus_is_refused(monkeypatch) -> None:
    import ray

    from appliance.bulk import engine
    from appliance.errors import ApplianceError

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8})
    with pytest.raises(ApplianceError, match="no GPU"):
        engine.size_pool("gpu")
    # A rematch keeps a CPU for the readers: 8 CPUs, 7 actors of one thread.
    pool = engine.size_pool("cpu", reserve=1, default_threads=1)
    assert (pool.actors, pool.threads) == (7, 1)
