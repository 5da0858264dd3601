"""Hostile uploads and hostile clients against a real server with its defaults.

    .venv/bin/python -m benchmarks.hostile [--quick] [--only SUBSTRING,...] [--json FILE]

One ``appliance serve`` subprocess (CPU backend, default settings, a block
list with digests, PDQ and 50 PhotoDNA rows, an NSRL SQLite allow list, an
audit log) takes every attack of benchmarks/hostile_attacks.py in turn: the
files and clients seen when the hostile-input issue was filed, at their
sizes. Beside every attack a legitimate client (one caller, a 640x480 JPEG
every 50 ms, 5 s deadlines) keeps calling Match; its calls that start while
the attack runs (or in the 2 s after it starts) are its figures for that
attack. The peer is the same client with no attack (``unloaded``): the
table prints its p99 beside each attack's and the ratio.

Per attack: the answer the attacker got, the seconds it took, the server's
peak memory above idle (resident memory of the server and all its
descendants, the decode zygote and workers, sampled every 25 ms), and the
legitimate client's calls, the share of them that were OK and their p99. A
last row sends SIGTERM to a second server (``--grace-seconds 2``) while it
decodes four 100 MP pictures and times its exit.

Targets (issue "hostile uploads and hostile clients"): no single file over
1 GB above idle or 10 s to answer; 16 in one batch under 1.5 GB; the
legitimate client at least 90 % OK with p99 under 2 s beside any attack.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import numpy as np

from appliance import demo
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from benchmarks import hostile_attacks as a
from benchmarks.load_server import ServerProcess, metric, scrape
from tests import hostile
from tests.helpers import encode, scene_image

Attack = Callable[[a.Target], a.Outcome]


def webp_10k() -> bytes:
    return hostile.webp_flat(10000, 10000)


def gif_10k() -> bytes:
    return hostile.gif_screen(10000, 10000)


ATTACKS: list[tuple[str, Attack]] = [
    ("lossless WebP 10000x10000 (3.9 KB)", a.Files(webp_10k)),
    ("GIF, 10000x10000 screen (35 B)", a.Files(gif_10k)),
    ("MatchBatch of 16 such WebPs", a.Files(webp_10k, 16)),
    ("MatchBatch of 16 such GIFs", a.Files(gif_10k, 16)),
    ("PNG 1x100,000,000 (194 KB)", a.Files(lambda: hostile.png_gray(1, 100_000_000))),
    ("PNG 100,000,000x1", a.Files(lambda: hostile.png_gray(100_000_000, 1))),
    ("ICO saying 16x16, holding a 24000x24000 PNG",
     a.Files(lambda: hostile.ico_lying(16, 24000))),
    ("ICNS holding a 20000x20000 PNG", a.Files(lambda: hostile.icns_lying(20000))),
    ("progressive JPEG, 15,000 empty scans", a.Files(a.scans_jpeg)),
    ("two of those with 1 s deadlines", a.TwoSlowJpegs()),
    ("64 MB JPEG of empty COM markers",
     a.Files(lambda: hostile.jpeg_with_markers(hostile.jpeg_small(), 64_000_000))),
    ("60 MB PNG of unknown chunks", a.Files(lambda: hostile.png_unknown_chunks(60_000_000))),
    ("EPS (Ghostscript)", a.Files(hostile.eps_file)),
    ("300 MatchStreams of 1 byte, stalled", a.stalled_streams),
    ("8 MatchStreams of 200 MiB, stalled", a.big_stalled_streams),
    ("6 concurrent Match of 250 MiB", a.huge_messages),
    ("Lookup: 100,000 x a listed MD5, audited", a.lookup_listed_md5),
    ("Lookup: 100,000 random PDQ", a.lookup_random_pdq),
    ("Lookup: 100,000 PhotoDNA vs 50 rows", a.lookup_photodna),
    ("Lookup quality 1000", a.lookup_quality_1000),
    ("Match with a 2 MB id", a.long_id),
    ("200 idle connections to /metrics", a.idle_metrics_connections),
    ("ReloadLists during an in-place rewrite", a.reload_during_rewrite),
    ("ReloadLists of a corrupt NSRL SQLite", a.corrupt_sqlite),
]


@dataclass
class Row:
    attack: str
    answer: str
    seconds: float
    peak_mb: float
    legit_calls: int
    legit_ok: float
    legit_p99_ms: float


class Legit:
    """The legitimate client: Match of a normal photo every 50 ms, 5 s deadline."""

    def __init__(self, address: str, content: bytes) -> None:
        self.calls: list[tuple[float, float, str]] = []  # (start, seconds, code)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address, content), daemon=True)
        self._thread.start()

    def _run(self, address: str, content: bytes) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    stub.Match(pb.FileRequest(id="legit", content=content), timeout=5.0)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                self.calls.append((started, time.perf_counter() - started, code))
                time.sleep(0.05)

    def window(self, start: float, end: float) -> tuple[int, float, float]:
        """(calls, OK fraction, p99 ms) of the calls started in [start, end]."""
        chosen = [c for c in self.calls if start <= c[0] <= end]
        if not chosen:
            return 0, 1.0, 0.0
        ok = sum(c[2] == "OK" for c in chosen) / len(chosen)
        return len(chosen), ok, float(np.percentile([c[1] for c in chosen], 99)) * 1000

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class Sampler:
    """The server tree's resident memory every 25 ms; peaks over a window."""

    def __init__(self, server: ServerProcess) -> None:
        self.samples: list[tuple[float, float]] = []
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._server.tree_rss_mb()))
            time.sleep(0.025)

    def peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)

    def idle(self, start: float, end: float) -> float:
        return min((mb for t, mb in self.samples if start <= t <= end), default=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _lists(folder: Path) -> Path:
    """A block list (the demo's rows, 50 PhotoDNA rows, 80,000 filler MD5s), an
    NSRL SQLite allow list, and a configuration that loads both and audits."""
    rng = np.random.default_rng(0)
    lines = demo.build().list_csv.decode().splitlines()
    rows = [lines[0] + ",photodna", *(line + "," for line in lines[1:])]
    blank = "," * (lines[0].count(",") - 1)
    rows += [f"pd{i},photodna{blank},{rng.integers(0, 256, 144, dtype=np.uint8).tobytes().hex()}"
             for i in range(50)]
    rows += [f"fill{i},filler,{rng.bytes(16).hex()},,,," for i in range(80_000)]
    (folder / "block.csv").write_text("\n".join(rows) + "\n")
    a.write_nsrl(folder / "nsrl.db")
    config = folder / "appliance.toml"
    config.write_text(
        f'[server]\naudit_log = "{folder / "audit.jsonl"}"\n\n'
        f'[[lists]]\nname = "block"\npath = "{folder / "block.csv"}"\n\n'
        f'[[lists]]\nname = "nsrl"\npath = "{folder / "nsrl.db"}"\nkind = "allow"\n'
        f'format = "nsrl-sqlite"\n'
    )
    return config


def sigterm_while_decoding(config: Path) -> Row:
    server = ServerProcess.start(["--grace-seconds", "2"], config=str(config))
    data = gif_10k()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        calls = [stub.Match.future(pb.FileRequest(content=data), timeout=120) for _ in range(4)]
        end = time.monotonic() + 60
        while time.monotonic() < end and metric(scrape(server.metrics_url),
                                                "appliance_decode_budget_bytes",
                                                'state="in_use"') == 0:
            time.sleep(0.02)
        seconds, rc = server.stop(wait=30)
        for call in calls:
            cast(Any, call).exception(timeout=30)  # answered, or cut off at shutdown
    return Row("SIGTERM (grace 2 s) while 100 MP pictures decode", f"exit code {rc}",
               seconds, 0.0, 0, 1.0, 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, shorter phases")
    parser.add_argument("--only", default="", help="comma-separated substrings of attack names")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    attacks = [(n, f) for n, f in ATTACKS if not wanted or any(w in n.lower() for w in wanted)]
    legit_file = encode(scene_image(7, (640, 480)), "JPEG", quality=90)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        folder = Path(tmp)
        config = _lists(folder)
        server = ServerProcess.start([], config=str(config))
        target = a.Target(server, folder, demo.build().files["listed-by-digest-and-pdq.png"],
                          args.quick)
        sampler = Sampler(server)
        legit = Legit(server.address, legit_file)
        try:
            settle = 3.0 if args.quick else 8.0
            begin = time.perf_counter()
            time.sleep(settle)
            calls, ok, unloaded = legit.window(begin + 1, time.perf_counter())
            rows.append(Row("unloaded (no attack)", "", 0.0, 0.0, calls, ok, unloaded))
            for name, attack in attacks:
                prepare = getattr(attack, "prepare", None)
                if prepare is not None:
                    prepare()
                idle_from = time.perf_counter()
                time.sleep(1.0)
                idle = sampler.idle(idle_from, time.perf_counter())
                started = time.perf_counter()
                outcome = attack(target)
                ended = max(time.perf_counter(), started + 2.0)
                while time.perf_counter() < ended:
                    time.sleep(0.05)
                calls, ok, p99 = legit.window(started, ended)
                rows.append(Row(name, "; ".join([outcome.answer, *outcome.notes]),
                                outcome.seconds, sampler.peak(started, ended) - idle,
                                calls, ok, p99))
                print(_line(rows[-1], unloaded), flush=True)
        finally:
            legit.stop()
            sampler.stop()
            server.stop()
        if not wanted or any(w in "sigterm" for w in wanted):
            rows.append(sigterm_while_decoding(config))
        problems = server.problems
    print()
    print(_table(rows, unloaded))
    if problems:
        print("\nthe server's warnings and errors:\n" + "\n".join(problems[:30]))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def _line(row: Row, unloaded: float) -> str:
    ratio = f"{row.legit_p99_ms / unloaded:.1f}x" if unloaded and row.legit_calls else ""
    return (f"| {row.attack} | {row.answer} | {row.seconds:.2f} | {row.peak_mb:.0f} | "
            f"{row.legit_calls} | {100 * row.legit_ok:.0f} % | {row.legit_p99_ms:.0f} | {ratio} |")


def _table(rows: list[Row], unloaded: float) -> str:
    head = ("| attack | what the attacker got | s to answer | peak MB over idle | legit calls "
            "| legit OK | legit p99 ms | p99 / unloaded |\n| --- | --- | ---: | ---: | ---: | ---: "
            "| ---: | ---: |")
    return "\n".join([head, *(_line(r, unloaded) for r in rows)])


if __name__ == "__main__":
    raise SystemExit(main())


