"""Match decisions on edited copies: ours against the reference tools' own.

    .venv/bin/python benchmarks/video_edits.py [--clips DIR]

For each source clip (the golden clips that are not themselves edits, their
first 10 seconds), edited copies are made in memory and written to a scratch
directory (re-encode, half size, grey, letterbox, logo, frame rate 15,
container change to Matroska and AVI), and each (source, copy) pair and each
pair of different sources is decided both ways:

- ours: ``appliance.hashers.video`` on both files, scored as the appliance
  scores (TMK level 1 and 2 >= 0.7; python-threatexchange's vPDQ rule);
- the references': TMK from the frames the reference's own ffmpeg command
  writes (FFmpeg's CLI, run exactly as ``tmk-hash-video`` runs it), folded
  by our accumulator, which gives the reference's ``.tmk`` byte for byte on
  those frames (tests/test_video_hashes.py), and scored by the reference's
  two functions (reproduced to the sixth decimal); vPDQ from the ``vpdq``
  package (ThreatExchange's C++, built by benchmarks/video.py's set-up), with
  python-threatexchange's matching rule on its hashes.

Printed: each pair's scores and decisions, and how many decisions agree.
Needs ``ffmpeg`` on PATH and the vPDQ reference (``benchmarks/.refs``).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from numpy.typing import NDArray

from benchmarks.video import GOLDEN, TMK_COMMAND, setup_vpdq

_VPDQ_JSON = ("import json, sys, vpdq\n"
              "out = {}\n"
              "for f in sys.argv[1:]:\n"
              "    out[f] = [[x.hex, x.quality, x.frame_number, x.timestamp]\n"
              "              for x in vpdq.computeHash(f, seconds_per_hash=1)]\n"
              "print(json.dumps(out))\n")


def _edits(path: Path, scratch: Path) -> dict[str, Path]:
    import av
    from PIL import Image

    from appliance.video import synthetic

    with av.open(io.BytesIO(path.read_bytes()), "r") as container:
        # The first 10 s: enough for both hashes, and it keeps memory and encoding short.
        frames: list[NDArray[np.uint8]] = [
            np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f, _ in
            zip(container.decode(video=0), range(300), strict=False)]
    h, w = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    frames = [f[:h, :w] for f in frames]

    def grey(p: NDArray[np.uint8]) -> NDArray[np.uint8]:
        g = (p.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        out: NDArray[np.uint8] = np.repeat(g.astype(np.uint8)[..., None], 3, axis=2)
        return out

    def letterbox(p: NDArray[np.uint8]) -> NDArray[np.uint8]:
        bar = (h // 8) // 2 * 2
        out = np.zeros((h + 2 * bar, w, 3), np.uint8)
        out[bar:bar + h] = p
        return out

    def logo(p: NDArray[np.uint8]) -> NDArray[np.uint8]:
        q = p.copy()
        q[h // 20:h // 20 + h // 8, w // 20:w // 20 + w // 5] = 255
        return q

    def half(p: NDArray[np.uint8]) -> NDArray[np.uint8]:
        small = Image.fromarray(p).resize((w // 4 * 2, h // 4 * 2), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.uint8)

    made: dict[str, tuple[str, list[NDArray[np.uint8]], int]] = {
        "re-encode": ("mp4", frames, 30), "half size": ("mp4", [half(p) for p in frames], 30),
        "grey": ("mp4", [grey(p) for p in frames], 30),
        "letterbox": ("mp4", [letterbox(p) for p in frames], 30),
        "logo": ("mp4", [logo(p) for p in frames], 30), "15 fps": ("mp4", frames[::2], 15),
        "mkv": ("matroska", frames, 30), "avi": ("avi", frames, 30),
    }
    out = {}
    for name, (fmt, pictures, rate) in made.items():
        target = scratch / f"{path.stem}.{name.replace(' ', '-')}.{fmt[:3]}"
        ph, pw = pictures[0].shape[:2]
        target.write_bytes(synthetic.encode(fmt, "mpeg4", width=pw, height=ph, rate=rate,
                                            pictures=pictures))
        out[name] = target
    return out


def _ours(path: Path) -> tuple[bytes, bytes]:
    from appliance.hashers.video import VideoJob, hash_video

    result = hash_video(path.read_bytes(), VideoJob(("tmk", "vpdq")))
    return result.hashes[0].value, result.hashes[1].value


def _reference_tmk(path: Path) -> bytes:
    from appliance.video.tmk import TmkAccumulator

    command = [shutil.which("ffmpeg") or "ffmpeg",
               *[str(path) if a == "{}" else a for a in TMK_COMMAND]]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    sums = TmkAccumulator()
    sums.add(np.frombuffer(raw, np.uint8).reshape(-1, 64, 64, 3))
    return sums.finish().to_bytes()


def _reference_vpdq(paths: list[Path], python: Path) -> dict[str, bytes]:
    from appliance.video.vpdq_format import VpdqFrame, pack

    out = subprocess.run([str(python), "-c", _VPDQ_JSON, *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return {f: pack(VpdqFrame(bytes.fromhex(h), q, n, t) for h, q, n, t in frames)
            for f, frames in json.loads(out).items()}


def _decide(tmk_a: bytes, tmk_b: bytes, vpdq_a: bytes, vpdq_b: bytes
            ) -> tuple[float, float, bool, float, bool]:
    from appliance.video import vpdq
    from appliance.video.tmk import TmkFeatures

    a, b = TmkFeatures.from_bytes(tmk_a), TmkFeatures.from_bytes(tmk_b)
    s1, s2 = a.level1(b), a.level2(b)
    score = vpdq.compare(vpdq_a, vpdq_b)
    rules = vpdq.VpdqRules()
    return (s1, s2, s1 >= 0.7 and s2 >= 0.7, score.query_percent if score else 0.0,
            bool(score and score.matches(rules)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=Path, help="a directory of source clips (default: golden)")
    args = parser.parse_args()
    python = setup_vpdq()
    if python is None or shutil.which("ffmpeg") is None:
        print("needs ffmpeg and the vPDQ reference (see benchmarks/video.py)")
        return 1
    sources = sorted((args.clips or GOLDEN).glob("*.mp4"))
    sources = [s for s in sources if "grey" not in s.name]  # the sources, not the golden edits
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        pairs = []
        for source in sources:
            pairs += [(source, edit, name, True) for name, edit in _edits(source, scratch).items()]
        pairs += [(a, b, "unrelated", False) for a in sources for b in sources if a < b]
        files = sorted({p for pair in pairs for p in pair[:2]})
        ours = {f: _ours(f) for f in files}
        ref_tmk = {f: _reference_tmk(f) for f in files}
        ref_vpdq = _reference_vpdq(files, python)
        print("| source | copy | ours TMK l1/l2 | ref TMK l1/l2 | TMK match ours/ref | "
              "ours vPDQ q% | ref vPDQ q% | vPDQ match ours/ref |")
        print("|---|---|---|---|---|---:|---:|---|")
        agree = total = 0
        for a, b, name, _ in pairs:
            mine = _decide(ours[b][0], ours[a][0], ours[b][1], ours[a][1])
            theirs = _decide(ref_tmk[b], ref_tmk[a], ref_vpdq[str(b)], ref_vpdq[str(a)])
            agree += (mine[2] == theirs[2]) + (mine[4] == theirs[4])
            total += 2
            label = name if name != "unrelated" else f"unrelated: {b.stem}"
            print(f"| {a.stem} | {label} | {mine[0]:.4f}/{mine[1]:.4f} | "
                  f"{theirs[0]:.4f}/{theirs[1]:.4f} | {mine[2]}/{theirs[2]} | {mine[3]:.0f} | "
                  f"{theirs[3]:.0f} | {mine[4]}/{theirs[4]} |", flush=True)
        print(f"\ndecisions that agree: {agree} of {total}")
    return 0 if agree == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
