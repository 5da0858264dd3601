"""Video hashing: TMK+PDQF and vPDQ together, against the reference hashers.

    .venv/bin/python benchmarks/video.py [--videos DIR] [--repeat 3] [--long-minutes 30]
        [--tmk-hash-video PATH] [--skip-setup]

Each tool runs as one process per video set, process start included, best of
``--repeat``; on one core (``taskset -c 0``) and on all of them. Ours:
``appliance hash --signals tmk,vpdq`` (one decode per video for both). The
references, as ThreatExchange ships them:

- vPDQ: the ``vpdq`` package (its C++ behind Cython), built here from its
  PyPI source against this machine's FFmpeg development packages (set-up,
  into ``benchmarks/.refs``; needs gcc, cmake and libav*-dev: Debian's
  ``ffmpeg libavcodec-dev libavformat-dev libavdevice-dev libavutil-dev
  libswscale-dev libswresample-dev libavfilter-dev``), one
  ``vpdq.computeHash`` per video;
- TMK: ``tmk-hash-video`` given with ``--tmk-hash-video`` (ThreatExchange
  ``tmk/cpp``, which no registry this machine reaches carries). Without it,
  its decode alone stands in: the ``ffmpeg`` command it pipes frames from,
  run exactly as it runs it, one process per video. That is a lower bound on
  its time (it also computes every frame's features), so the ratio printed
  against it is a lower bound on ours.

Printed: seconds, frames/s and videos/s of each, and ours / (vPDQ + TMK).
Then peak memory (the process's max RSS) per video, ours against the vPDQ
reference, and for a ``--long-minutes`` 1080p video against a one-minute
one (frames are never all held: ours must not grow with the length).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "benchmarks" / ".refs"
GOLDEN = ROOT.parent / "shared" / "golden" / "video" / "videos"
TMK_COMMAND = ["-loglevel", "warning", "-hide_banner", "-nostdin", "-i", "{}", "-s", "64:64",
               "-an", "-f", "rawvideo", "-c:v", "rawvideo", "-pix_fmt", "rgb24", "-r", "15",
               "pipe:1"]
_VPDQ = ("import sys, vpdq\n"
         "for f in sys.argv[2:]:\n"
         "    vpdq.computeHash(f, seconds_per_hash=1, thread_count=int(sys.argv[1]))\n")


def setup_vpdq() -> Path | None:
    """The reference vPDQ's Python, built once into benchmarks/.refs; None (and why) if not."""
    python = REFS / "venv" / "bin" / "python"
    if python.exists():
        return python
    missing = [t for t in ("gcc", "g++", "cmake", "pkg-config") if shutil.which(t) is None]
    if missing or subprocess.run(["pkg-config", "--exists", "libavcodec", "libswscale"]).returncode:
        print(f"vPDQ reference not built: needs {', '.join(missing) or 'libav*-dev'}")
        return None
    subprocess.run([sys.executable, "-m", "venv", str(REFS / "venv")], check=True)
    built = subprocess.run([str(python), "-m", "pip", "install", "-q", "vpdq==0.2.5",
                            "--no-binary", "vpdq"])
    return python if built.returncode == 0 else None


def clips(directory: Path) -> list[Path]:
    """The golden clips when this checkout has them, else synthetic 30 fps clips."""
    if GOLDEN.is_dir():
        return sorted(GOLDEN.glob("*.mp4"))
    from appliance.video import synthetic

    codec = "libx264" if synthetic.has_encoder("libx264") else "mpeg4"
    out = []
    for i, (w, h, n) in enumerate([(640, 360, 300), (1280, 720, 150), (854, 480, 240),
                                   (1920, 1080, 90), (320, 240, 600), (1080, 1080, 150)]):
        path = directory / f"clip{i}.mp4"
        path.write_bytes(synthetic.encode("mp4", codec, width=w, height=h, frames=n, rate=30))
        out.append(path)
    return out


def frame_count(paths: list[Path]) -> int:
    from appliance.video.decode import open_video

    total = 0
    for path in paths:
        with open_video(path.read_bytes()) as video:
            total += sum(1 for _ in video.frames())
    return total


def timed(commands: list[list[str]], parallel: int) -> float:
    """Wall seconds to run ``commands``, ``parallel`` at a time."""
    started = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    pending = list(commands)
    while pending or running:
        while pending and len(running) < parallel:
            running.append(subprocess.Popen(pending.pop(0), stdout=subprocess.DEVNULL))
        pid, status = os.wait()
        running = [p for p in running if p.pid != pid]
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"a benchmark command failed ({status})")
    return time.perf_counter() - started


# A process forked from this one starts with this one's peak RSS counted as
# its own (Linux keeps the high-water mark across fork and exec), so peaks are
# read by a small fresh interpreter that runs the command as its child.
_PEAK = ("import resource, subprocess, sys\n"
         "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak_mib(command: list[str]) -> int:
    """The max RSS of ``command``'s process (MiB)."""
    out = subprocess.run([sys.executable, "-c", _PEAK, *command], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1]) >> 10


def best(commands: list[list[str]], parallel: int, repeat: int) -> float:
    return min(timed(commands, parallel) for _ in range(repeat))


def ours(paths: list[Path], one_core: bool) -> list[list[str]]:
    # One core: one worker thread, decoded in it (no decode worker process).
    extra = ["env", "APPLIANCE_SERVER_WORKERS=1", "APPLIANCE_LIMITS_DECODE_ISOLATION=inline"] \
        if one_core else []
    return [[*_core(one_core), *extra, sys.executable, "-m", "appliance", "hash", "--signals",
             "tmk,vpdq", *map(str, paths)]]


def _core(one_core: bool) -> list[str]:
    return ["taskset", "-c", "0"] if one_core else []


def tmk_reference(paths: list[Path], one_core: bool, binary: str | None) -> list[list[str]]:
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    if binary:
        return [[*_core(one_core), binary, "-f", ffmpeg, "-i", str(p), "-o", os.devnull]
                for p in paths]
    return [[*_core(one_core), ffmpeg, *[str(p) if a == "{}" else a for a in TMK_COMMAND]]
            for p in paths]


def vpdq_reference(paths: list[Path], one_core: bool, python: Path) -> list[list[str]]:
    threads = "1" if one_core else "0"
    return [[*_core(one_core), str(python), "-c", _VPDQ, threads, *map(str, paths)]]


def table(paths: list[Path], args: argparse.Namespace, vpdq_python: Path | None) -> None:
    frames = frame_count(paths)
    cores = os.cpu_count() or 1
    print(f"{len(paths)} videos, {frames} frames, {sum(p.stat().st_size for p in paths) >> 10}"
          f" KiB; best of {args.repeat}; this machine: {cores} cores")
    tmk_name = "tmk-hash-video" if args.tmk_hash_video else "TMK's ffmpeg decode (lower bound)"
    print(f"| cores | ours s | vPDQ ref s | {tmk_name} s | refs together s | "
          f"ours frames/s | ours videos/s | refs / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for one_core in (True, False):
        width = 1 if one_core else cores
        mine = best(ours(paths, one_core), 1, args.repeat)
        tmk = best(tmk_reference(paths, one_core, args.tmk_hash_video), width, args.repeat)
        vp = (best(vpdq_reference(paths, one_core, vpdq_python), 1, args.repeat)
              if vpdq_python else float("nan"))
        refs = tmk + vp
        print(f"| {width} | {mine:.2f} | {vp:.2f} | {tmk:.2f} | {refs:.2f} | "
              f"{frames / mine:.0f} | {len(paths) / mine:.2f} | {refs / mine:.2f}x |")


def memory(paths: list[Path], args: argparse.Namespace, vpdq_python: Path | None,
           scratch: Path) -> None:
    from appliance.video import synthetic

    print("\npeak memory (max RSS of the process, MiB), one video a process, one core")
    print("(ours holds the file's bytes in memory, as the server does: it never writes them)")
    print("| video | file MiB | ours | vPDQ ref | TMK's ffmpeg |")
    print("|---|---:|---:|---:|---:|")
    long = []
    # 1080p at 2 frames a second, 8 pictures over and over (so that encoding it
    # here takes seconds): the length, not the rate, must not make memory grow.
    base = [synthetic.clip(i, 1920, 1080) for i in range(8)]
    for minutes in (1, args.long_minutes):
        path = scratch / f"long-{minutes}min-1080p.mp4"
        pictures = [base[i % len(base)] for i in range(minutes * 120)]
        path.write_bytes(synthetic.encode("mp4", "mpeg4", width=1920, height=1080,
                                          rate=2, pictures=pictures))
        long.append(path)
    for path in [*paths, *long]:
        [mine] = [peak_mib(c) for c in ours([path], True)]
        ref = peak_mib(vpdq_reference([path], True, vpdq_python)[0]) if vpdq_python else 0
        [ff] = [peak_mib(c) for c in tmk_reference([path], True, None)]
        print(f"| {path.name} | {path.stat().st_size / (1 << 20):.1f} | {mine} | {ref or '-'} "
              f"| {ff} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, help="a directory of videos (default: golden)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--long-minutes", type=int, default=30)
    parser.add_argument("--tmk-hash-video", help="ThreatExchange's tmk-hash-video binary")
    parser.add_argument("--skip-setup", action="store_true", help="do not build the vPDQ reference")
    parser.add_argument("--no-memory", action="store_true", help="the speed table only")
    args = parser.parse_args()
    if shutil.which("taskset") is None or shutil.which("ffmpeg") is None:
        print("needs taskset and ffmpeg (Debian: util-linux, ffmpeg)")
        return 1
    built = REFS / "venv" / "bin" / "python"
    vpdq_python = (built if built.exists() else None) if args.skip_setup else setup_vpdq()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        paths = sorted(args.videos.iterdir()) if args.videos else clips(scratch)
        table(paths, args, vpdq_python)
        if not args.no_memory:
            memory(paths, args, vpdq_python, scratch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
