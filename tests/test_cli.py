"""The command line, through subprocesses, against hashlib and pdqhash."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pdqhash
import pytest
from PIL import Image

from tests.helpers import encode, scene_image, start_server_process, synthetic_image

ENV = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True, text=True, timeout=300, env=ENV,
    )
    if check and proc.returncode not in (0, 1):
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def reference(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    bits, quality = pdqhash.compute(np.asarray(Image.open(path).convert("RGB")))
    return {
        "md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "pdq": np.packbits(bits).tobytes().hex(), "pdq_quality": int(quality),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("images")
    out = []
    for i, (fmt, size) in enumerate(
        [("PNG", (64, 64)), ("JPEG", (301, 207)), ("WEBP", (90, 300)), ("GIF", (45, 31)),
         ("BMP", (128, 129)), ("TIFF", (7, 500))]
    ):
        path = root / f"img{i}.{fmt.lower()}"
        path.write_bytes(encode(synthetic_image(100 + i, size), fmt))
        out.append(path)
    return out


def test_hash_agrees_with_hashlib_and_pdqhash(images: list[Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    proc = run("hash", *map(str, images), str(text), str(empty))
    assert proc.returncode == 1  # one file had an error
    got = lines(proc)
    assert [g["file"] for g in got] == [*map(str, images), str(text), str(empty)]
    for path, obj in zip(images, got, strict=False):
        assert {k: v for k, v in obj.items() if k != "file"} == reference(path), path
    assert got[-2]["md5"] == hashlib.md5(b"not an image").hexdigest()
    assert got[-2]["skipped"]["pdq"]["code"] == "NOT_AN_IMAGE"
    assert got[-1] == {"file": str(empty), "error": {"code": "EMPTY",
                                                      "message": "the file is empty"}}


def test_hash_signals_flag(images: list[Path]) -> None:
    [obj] = lines(run("hash", "--signals", "sha1", str(images[0])))
    assert set(obj) == {"file", "sha1"}
    # A misspelt signal is a usage error (exit 2, one line), not a per-file one.
    proc = run("hash", "--signals", "md5,bogus", str(images[0]), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "appliance: error: --signals: unknown signal 'bogus'; known: md5, sha1, sha256, pdq, "
        "phash, dhash, ahash, whash, photodna, tmk, vpdq"]


def test_match_with_a_list(images: list[Path], tmp_path: Path) -> None:
    ref0, ref1 = reference(images[0]), reference(images[1])
    listing = tmp_path / "known.csv"
    listing.write_text(
        f"id;category;md5;pdq\nk1;A1;{ref0['md5']};\nk2;B2;;{ref1['pdq']}\n"
    )
    proc = run("match", "--lists", f"mine={listing}", *map(str, images[:3]))
    got = lines(proc)
    assert proc.returncode == 0
    version = hashlib.sha256(listing.read_bytes()).hexdigest()[:16]
    assert got[0]["matches"] == [{
        "signal": "md5", "list": "mine", "list_version": version, "entry_id": "k1",
        "category": "A1", "distance": 0, "query": ref0["md5"], "kind": "block",
        "suppressed": False,
    }]
    assert got[0]["matched"] is True and got[2]["matched"] is False
    assert [(m["entry_id"], m["signal"]) for m in got[1]["matches"]] == [("k2", "pdq")]
    assert got[2]["matches"] == []


def test_match_refuses_a_bad_list(images: list[Path], tmp_path: Path) -> None:
    listing = tmp_path / "bad.csv"
    listing.write_text("md5,id\n0123,x\n")
    proc = run("match", "--lists", str(listing), str(images[0]), check=False)
    assert proc.returncode == 2
    assert "line 2" in proc.stderr


def test_scan_writes_json_lines_and_a_summary(images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    demo_proc = run("demo", "--out", str(root / "sub" / "deeper"))
    assert demo_proc.returncode == 0
    for path in images:
        (root / "sub" / path.name).write_bytes(path.read_bytes())
    (root / "junk.txt").write_text("hello")
    out = tmp_path / "scan.jsonl"
    proc = run("scan", str(root), "--out", str(out), "--summary-json")
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == len(images) + 5 + 1
    by_name = {Path(g["file"]).name: g for g in got}
    assert by_name["junk.txt"]["skipped"]["pdq"]["code"] == "NOT_AN_IMAGE"
    assert [m["entry_id"] for m in by_name["listed-by-pdq.jpg"]["matches"]] == ["demo-0002"]
    assert by_name["img1.jpeg"]["pdq"] == reference(images[1])["pdq"]
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    assert summary["files"] == len(got) and summary["errors"] == 0
    assert summary["matched_files"] == 3
    assert summary["bytes"] == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert "files/s" in proc.stderr


def test_demo_writes_what_it_promises(tmp_path: Path) -> None:
    proc = run("demo", "--out", str(tmp_path))
    assert proc.returncode == 0
    listing = (tmp_path / "demo-list.csv").read_text().splitlines()
    assert listing[0] == "id,category,md5,sha1,sha256,pdq"
    first = reference(tmp_path / "listed-by-digest-and-pdq.png")
    assert listing[1].split(",")[2:] == [first["md5"], first["sha1"], first["sha256"],
                                         first["pdq"]]
    assert listing[2].split(",")[-1] == reference(tmp_path / "listed-by-pdq.jpg")["pdq"]


def test_bad_usage_exits_2() -> None:
    assert run("frobnicate", check=False).returncode == 2
    proc = run("serve", "--backend", "gpu", "--port", "0", "--metrics-port", "0", check=False)
    assert proc.returncode == 2 and "--backend gpu: " in proc.stderr
    assert "use --backend cpu" in proc.stderr


def test_serve_then_match_against_it(tmp_path: Path) -> None:
    run("demo", "--out", str(tmp_path))
    server, address, ready = start_server_process()
    try:
        assert "embedded demo list" in ready and "metrics=http://" in ready
        proc = run("match", "--server", address,
                   str(tmp_path / "near-copy-of-listed.jpg"), str(tmp_path / "not-listed.png"))
        near, clean = lines(proc)
        assert [m["entry_id"] for m in near["matches"]] == ["demo-0001"]
        assert clean["matches"] == []
        assert near["pdq"] == reference(tmp_path / "near-copy-of-listed.jpg")["pdq"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_dihedral_and_fast_mode_flags(tmp_path: Path) -> None:
    picture = scene_image(77)
    original, mirrored = tmp_path / "o.png", tmp_path / "m.png"
    original.write_bytes(encode(picture, "PNG"))
    mirrored.write_bytes(encode(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"))
    listing = tmp_path / "l.csv"
    listing.write_text(f"id,pdq\nX,{reference(original)['pdq']}\n")
    [plain] = lines(run("match", "--lists", str(listing), str(mirrored)))
    assert plain["matches"] == []
    [turned] = lines(run("match", "--dihedral", "--lists", str(listing), str(mirrored)))
    assert [(m["entry_id"], m["variant"]) for m in turned["matches"]] == [("X", "flipy")]
    [hashed] = lines(run("hash", "--dihedral", "--signals", "pdq", str(original)))
    assert hashed["pdq"] == reference(original)["pdq"]
    assert sorted(hashed["pdq_variants"]) == sorted(
        ["rot90", "rot180", "rot270", "flipx", "flipy", "flip+1", "flip-1"]
    )
    big = tmp_path / "big.jpg"
    big.write_bytes(encode(scene_image(78, (2400, 2100)), "JPEG", quality=90))
    [exact] = lines(run("hash", "--signals", "pdq", str(big)))
    [fast] = lines(run("hash", "--pdq-mode", "fast", "--signals", "pdq", str(big)))
    assert exact["pdq"] == reference(big)["pdq"]
    drift = bin(int(exact["pdq"], 16) ^ int(fast["pdq"], 16)).count("1")
    assert 0 < drift <= 24


def test_hash_match_and_scan_take_videos_and_pictures_together(images: list[Path],
                                                               tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "video"
    root = tmp_path / "mixed"
    root.mkdir()
    clip = root / "clip.mp4"
    clip.write_bytes((data / "test-padded-dimensions.mp4").read_bytes())
    (root / images[0].name).write_bytes(images[0].read_bytes())
    [hashed] = lines(run("hash", str(clip)))
    assert {"md5", "sha1", "sha256", "tmk", "vpdq"} <= set(hashed) and "pdq" not in hashed
    # The list holds the reference tool's .tmk of the clip (a directory of .tmk files).
    tmks = tmp_path / "tmks"
    tmks.mkdir()
    (tmks / "the-clip.tmk").write_bytes((data / "test-padded-dimensions.tmk").read_bytes())
    [matched] = lines(run("match", "--lists", f"videos={tmks}", str(clip)))
    [hit] = matched["matches"]
    assert (hit["signal"], hit["entry_id"]) == ("tmk", "the-clip")
    assert hit["scores"]["level1"] >= 0.999 and hit["scores"]["level2"] >= 0.999
    out = tmp_path / "scan.jsonl"
    proc = run("scan", str(root), "--lists", f"videos={tmks}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    by_name = {Path(g["file"]).name: g for g in map(json.loads, out.read_text().splitlines())}
    assert by_name["clip.mp4"]["matched"] and "pdq" in by_name[images[0].name]
    assert not by_name[images[0].name]["matched"]
