"""Hostile files through the pipeline: each refused or bounded, digests kept, nothing written.

The files are made by tests/hostile.py at sizes that keep this suite quick;
benchmarks/hostile.py sends the full-size ones to a real server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.config import Config, LimitsConfig
from appliance.errors import ItemCode
from appliance.pipeline import Pipeline
from appliance.results import Item
from tests import hostile
from tests.helpers import encode, synthetic_image

# (name, file, the code its pixel signals get)
HOSTILE = [
    ("progressive JPEG, 150 empty scans", lambda: hostile.jpeg_empty_scans(150, 512, 512),
     ItemCode.TOO_COMPLEX),
    ("JPEG padded with empty COM markers", lambda: hostile.jpeg_with_markers(
        hostile.jpeg_small(), 300_000), ItemCode.TOO_COMPLEX),
    ("JPEG of Photoshop resources", lambda: hostile.jpeg_photoshop_resources(
        hostile.jpeg_small(), 70), ItemCode.TOO_COMPLEX),
    ("PNG padded with unknown chunks", lambda: hostile.png_unknown_chunks(900_000),
     ItemCode.TOO_COMPLEX),
    ("PNG of 1 x 100,000,000", lambda: hostile.png_gray(1, 100_000_000),
     ItemCode.DECOMPRESSION_BOMB),
    ("PNG of 100,000,000 x 1", lambda: hostile.png_gray(100_000_000, 1),
     ItemCode.DECOMPRESSION_BOMB),
    ("GIF with a 20000 x 20000 screen", lambda: hostile.gif_screen(20000, 20000),
     ItemCode.DECOMPRESSION_BOMB),
    ("GIF frame far beyond its screen", lambda: hostile.gif_frame_beyond_screen(10, 30000),
     ItemCode.DECOMPRESSION_BOMB),
    ("GIF of 40,000 comment blocks", lambda: hostile.gif_comment_blocks(40_000),
     ItemCode.TOO_COMPLEX),
    ("animated WebP with a 16000 x 16000 canvas", lambda: hostile.webp_animated_canvas(
        16000, 16000), ItemCode.DECOMPRESSION_BOMB),
    ("TIFF of 16 x 16 with a 20000 x 20000 tile", lambda: hostile.tiff_tiles(16, 16, 20000),
     ItemCode.DECOMPRESSION_BOMB),
    ("RLE BMP padded row by row in Python", lambda: hostile.bmp_rle8_eol(4000, 4000),
     ItemCode.TOO_COMPLEX),
    ("ICO whose directory lies", lambda: hostile.ico_lying(16, 2000),
     ItemCode.UNSUPPORTED_FORMAT),
    ("ICNS holding a large PNG", lambda: hostile.icns_lying(2000), ItemCode.UNSUPPORTED_FORMAT),
    ("EPS (Ghostscript)", hostile.eps_file, ItemCode.UNSUPPORTED_FORMAT),
    ("PDF", hostile.pdf_file, ItemCode.NOT_AN_IMAGE),
]


@pytest.fixture(scope="module", params=["process", "inline"])
def pipeline(request):
    p = Pipeline(Config(limits=LimitsConfig(decode_isolation=request.param)))
    yield p
    p.close()


@pytest.mark.parametrize(("name", "make", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_are_refused_with_their_digests(pipeline, name, make, code) -> None:
    data = make()
    with ThreadPoolExecutor(1) as pool:
        [result] = pipeline.run([Item(name, data)], None, pool)
    assert result.error is None
    assert {h.signal: h.value for h in result.hashes} == {
        "md5": hashlib.md5(data).digest(), "sha1": hashlib.sha1(data).digest(),
        "sha256": hashlib.sha256(data).digest(),
    }
    assert result.skipped["pdq"].code == code, result.skipped["pdq"].message


def test_a_file_at_the_pixel_limit_is_decoded(pipeline) -> None:
    # 100 MP of 1-byte palette pixels: allowed, and within the memory limit.
    data = hostile.gif_screen(10000, 10000)
    with ThreadPoolExecutor(1) as pool:
        [result] = pipeline.run([Item("big", data, ("pdq",))], None, pool)
    assert result.error is None and result.hashes[0].quality == 0  # flat: hashed, unmatchable


def test_decode_limits_come_from_the_configuration() -> None:
    small = LimitsConfig(decode_isolation="inline", max_decode_bytes=32 << 20,
                         max_decode_bytes_in_flight=64 << 20, max_scans=5,
                         image_formats=("PNG",))
    p = Pipeline(Config(limits=small))
    cases = {
        "big": (encode(synthetic_image(1, (3000, 2000)), "PNG"), ItemCode.DECOMPRESSION_BOMB),
        "scans": (encode(synthetic_image(2, (64, 64)), "JPEG", progressive=True),
                  ItemCode.UNSUPPORTED_FORMAT),
    }
    with ThreadPoolExecutor(1) as pool:
        results = p.run([Item(k, d, ("pdq",)) for k, (d, _) in cases.items()], None, pool)
    assert [r.error.code if r.error else None for r in results] == [c for _, c in cases.values()]


# -- nothing is ever written --------------------------------------------------------


def _every_format() -> dict[str, bytes]:
    """One file of every format the appliance reads, and of every one it refuses."""
    image = synthetic_image(3, (48, 40))
    files = {fmt: encode(image, fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")}
    files.update({
        "progressive": encode(image, "JPEG", progressive=True),
        "tiff-lzw": encode(image, "TIFF", compression="tiff_lzw"),
        "tiff-jpeg": encode(image, "TIFF", compression="jpeg"),
        "EPS": hostile.eps_file(), "PDF": hostile.pdf_file(),
        "ICO": encode(image, "ICO"), "ICNS": hostile.icns_lying(64),
        "PSD": b"8BPS\x00\x01" + bytes(40), "JPEG2000": encode(image, "JPEG2000"),
        "TGA": encode(image, "TGA"), "PPM": encode(image, "PPM"), "PCX": encode(image, "PCX"),
        "XBM": encode(image.convert("1"), "XBM"), "SGI": encode(image, "SGI"),
    })
    return files


_WATCH = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from concurrent.futures import ThreadPoolExecutor
    from appliance.config import Config, LimitsConfig
    from appliance.pipeline import Pipeline
    from appliance.results import Item

    files = {k: bytes.fromhex(v) for k, v in json.loads(sys.stdin.read()).items()}
    pipeline = Pipeline(Config(limits=LimitsConfig(decode_isolation=sys.argv[2])))
    with ThreadPoolExecutor(2) as pool:
        pipeline.run([Item("warm", files["PNG"])], None, pool)  # kernels, workers, caches
        events = []
        write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def hook(event, args):
            if event == "open" and args[0] is not None and not isinstance(args[0], int):
                mode, flags = args[1] or "", args[2] or 0
                if any(c in mode for c in "wax+") or flags & write:
                    events.append(f"open {args[0]} {mode} {flags}")
            elif event.startswith(("os.mkdir", "os.rename", "os.replace", "os.remove",
                                   "os.symlink", "os.link", "os.truncate", "shutil.",
                                   "tempfile.", "subprocess.", "os.exec", "os.posix_spawn",
                                   "os.system", "os.fork", "ctypes.dlopen")):
                events.append(f"{event} {args!r}"[:200])

        sys.addaudithook(hook)
        results = pipeline.run([Item(k, d) for k, d in files.items()], None, pool)
    print(json.dumps({"events": events, "codes": {
        r.id: (r.error.code if r.error else r.skipped["pdq"].code if "pdq" in r.skipped
               else "OK") for r in results}}))
""")


def _listing(*folders: Path) -> set[str]:
    out: set[str] = set()
    for folder in folders:
        if folder.is_dir():
            for root, dirs, names in os.walk(folder):
                out.update(os.path.join(root, n) for n in (*dirs, *names))
    return out


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_no_file_is_created_while_hashing_any_format(tmp_path: Path, isolation: str) -> None:
    files = _every_format()
    work, tmp, home, bin_dir = (tmp_path / n for n in ("cwd", "tmp", "home", "bin"))
    for folder in (work, tmp, home, bin_dir):
        folder.mkdir()
    # A Ghostscript that leaves a mark if anything ever runs it.
    marker = tmp_path / "gs-ran"
    fake = bin_dir / "gs"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    # Where a decoder, a library or a worker could write: the temporary
    # directory, the working directory, the home directory (all this test's
    # own), and shared memory. (Not the whole of /tmp: other processes write there.)
    env = {**os.environ, "TMPDIR": str(tmp), "HOME": str(home),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    before = _listing(Path("/dev/shm"))
    out = subprocess.run(
        [sys.executable, "-c", _WATCH, str(Path(__file__).parents[1]), isolation],
        input=json.dumps({k: v.hex() for k, v in files.items()}), capture_output=True,
        text=True, cwd=work, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["events"] == []  # the hook sees this process: inline decoding
    assert not marker.exists()
    assert list(work.iterdir()) == [] and list(tmp.iterdir()) == [] and list(home.iterdir()) == []
    assert _listing(Path("/dev/shm")) - before == set()
    codes = report["codes"]
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "progressive", "tiff-lzw",
                "tiff-jpeg"):
        assert codes[fmt] == "OK", fmt
    for fmt in ("EPS", "ICO", "ICNS", "PSD", "JPEG2000"):
        assert codes[fmt] == ItemCode.UNSUPPORTED_FORMAT, fmt
    for fmt in ("PDF", "TGA", "PPM", "PCX", "XBM", "SGI"):
        assert codes[fmt] == ItemCode.NOT_AN_IMAGE, fmt
