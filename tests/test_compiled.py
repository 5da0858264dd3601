"""Compiled snapshots: compile, inspect, serve from one file, same answers as the lists."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from appliance.config import ListSpec
from appliance.decode import decode_rgb
from appliance.errors import ListError
from appliance.hashers.pdq import pdq_from_rgb
from appliance.index.compiled import open_compiled, write_compiled
from appliance.loading import Catalog
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, encode, make_config, scene_image


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[bytes]]:
    root = tmp_path_factory.mktemp("lists")
    rng = np.random.default_rng(4)
    files = [encode(scene_image(s), "PNG") for s in (11, 12)]
    pdq = pdq_from_rgb(decode_rgb(files[0], 10**8))[0].hex()
    rows = [f"R{i},cat{i % 3},{rng.bytes(16).hex()},{rng.bytes(32).hex()}" for i in range(500)]
    rows.append(f"HIT,special,{hashlib.md5(files[1]).hexdigest()},{pdq}")
    block = root / "block.csv"
    block.write_text("id,category,md5,pdq\n" + "\n".join(rows) + "\n")
    allow = root / "allow.csv"
    allow.write_text(f"id,sha1\nOK1,{hashlib.sha1(files[1]).hexdigest()}\n")
    return block, allow, files


def test_compiled_snapshot_answers_like_the_lists(
    tmp_path: Path, lists: tuple[Path, Path, list[bytes]]
) -> None:
    block, allow, files = lists
    config = replace(make_config(), lists=(ListSpec("block", str(block)),
                                           ListSpec("nsrl", str(allow), kind="allow")))
    loaded = Catalog().load(config)
    out = tmp_path / "all.snap"
    write_compiled(out, loaded.snapshot.indexes, loaded.sources)
    indexes, meta = open_compiled(out)
    assert [(x.name, x.kind) for x in indexes] == [("block", "block"), ("nsrl", "allow")]
    assert indexes[0].hash_list.entry_ids[500] == "HIT"
    assert indexes[0].hash_list.categories[7] == "cat1"
    assert meta["lists"][0]["counts"] == {"md5": 501, "pdq": 501}
    served = []
    for spec in (ListSpec("x", str(out)),), config.lists:
        srv = ServerThread(replace(make_config(), lists=spec))
        srv.wait_ready()
        try:
            with grpc.insecure_channel(srv.address) as channel:
                stub = pb_grpc.ApplianceStub(channel)
                results = stub.MatchBatch(pb.BatchRequest(files=[
                    pb.FileRequest(content=f) for f in files])).results
                served.append([[(m.list, m.list_version, m.entry_id, m.category, m.signal,
                                 m.distance, m.kind, m.suppressed) for m in r.matches]
                               for r in results])
        finally:
            srv.stop()
    assert served[0] == served[1]
    assert any(hit[2] == "HIT" for hit in served[0][0])


def test_cli_compile_inspect_and_refuse_damage(
    tmp_path: Path, lists: tuple[Path, Path, list[bytes]]
) -> None:
    block, allow, _ = lists
    out = tmp_path / "l.snap"
    run = [sys.executable, "-m", "appliance", "lists"]
    proc = subprocess.run([*run, "compile", f"block={block}", str(allow), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*run, "inspect", "--verify", str(out)], capture_output=True,
                          text=True, timeout=120)
    info = json.loads(proc.stdout)
    assert info["verified"] and [x["name"] for x in info["lists"]] == ["block", "allow"]
    assert info["lists"][0]["counts"] == {"md5": 501, "pdq": 501}
    assert "HIT" not in proc.stdout and "R1" not in proc.stdout  # never the contents
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    proc = subprocess.run([*run, "inspect", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "truncated" in proc.stderr
    with pytest.raises(ListError, match="truncated"):
        open_compiled(out)
