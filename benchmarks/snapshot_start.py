"""A compiled snapshot at Baseline scale: time to SERVING and resident memory.

    python benchmarks/snapshot_start.py [--entries 10000000] [--quick]

Builds one list of N random PDQ and N random MD5 entries (seeded), compiles
it to a snapshot file, then starts ``appliance serve --lists FILE`` as a new
process and measures: seconds from process start to the ready line (SERVING),
the snapshot's open time in-process, and the server's resident memory (VmRSS)
after answering Lookup queries (half near-duplicates of listed entries),
against the same server on a 10k-entry snapshot queried alike. The peer, for scale:
faiss's multi-hash index alone costs about 246 bytes per PDQ entry
(benchmarks/index.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from appliance.index.compiled import Categories, Strings, open_compiled, write_compiled
from appliance.index.exact import ExactIndex
from appliance.index.mih import MultiIndexHamming
from appliance.index.snapshot import Index, ListIndex
from appliance.lists.model import HashList
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc


def build(n: int, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(2026)
    pdq = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    md5 = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    rows = np.arange(n, dtype=np.int64)
    # Entry ids "0000000042": ten digits each, packed without Python strings.
    digits = (rows[:, None] // 10 ** np.arange(9, -1, -1)) % 10
    blob = (digits + 48).astype(np.uint8).reshape(-1)
    offsets = (np.arange(n + 1, dtype=np.uint64) * 10)
    hash_list = HashList("baseline", "0" * 16, Strings(blob, offsets),
                         Categories(np.zeros(n, np.uint32), ["A1"]), {})
    start = time.perf_counter()
    matchers: dict[str, Index] = {
        "pdq": MultiIndexHamming(pdq, rows),
        "md5": ExactIndex(md5, rows),
    }
    index = ListIndex(hash_list, "block", matchers=matchers, counts={"pdq": n, "md5": n})
    write_compiled(path, [index], {"baseline": "synthetic"})
    return pdq, md5, time.perf_counter() - start


def serve(lists: list[str]) -> tuple[subprocess.Popen[str], str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--port", "0", "--metrics-port", "0",
         *lists], stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "appliance ready" in line:
            found = re.search(r"grpc=(\S+)", line)
            assert found
            return proc, found.group(1), time.perf_counter() - start
    raise RuntimeError(f"server exited: {proc.wait()}")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def query(address: str, pdq: np.ndarray, md5: np.ndarray, rounds: int) -> tuple[float, int]:
    rng = np.random.default_rng(7)
    hits = 0
    start = time.perf_counter()
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length",
                                                  64 << 20)]) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        for _ in range(rounds):
            # Mostly unknown files, as in production; a few listed ones, whose
            # hits read entry ids and categories from the mapped file.
            picks = rng.integers(0, len(pdq), 10)
            near = pdq[picks].copy()
            near[:, 0] ^= 0b111  # 3 bits away
            hashes = [pb.Hash(signal="pdq", value=v.tobytes().hex()) for v in near]
            hashes += [pb.Hash(signal="pdq", value=rng.bytes(32).hex()) for _ in range(1000)]
            hashes += [pb.Hash(signal="md5", value=md5[i].tobytes().hex()) for i in picks]
            hashes += [pb.Hash(signal="md5", value=rng.bytes(16).hex()) for _ in range(1000)]
            reply = stub.Lookup(pb.LookupRequest(hashes=hashes))
            hits += sum(bool(r.matches) for r in reply.results)
    return time.perf_counter() - start, hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M entries")
    parser.add_argument("--rounds", type=int, default=20, help="Lookup calls of 2020 hashes")
    args = parser.parse_args()
    n = 1_000_000 if args.quick else args.entries
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.snap"
        pdq, md5, build_s = build(n, path)
        size = path.stat().st_size
        start = time.perf_counter()
        open_compiled(path)
        open_s = time.perf_counter() - start
        # The baseline: the same server and code on a tiny snapshot, queried alike,
        # so that interpreter, libraries and compiled kernels cancel out.
        tiny = Path(tmp) / "tiny.snap"
        tiny_pdq, tiny_md5, _ = build(10_000, tiny)
        small, small_address, small_start = serve(["--lists", str(tiny)])
        query(small_address, tiny_pdq, tiny_md5, args.rounds)
        baseline_rss = rss_bytes(small.pid)
        small.terminate()
        small.wait(30)
        big, address, ready_s = serve(["--lists", str(path)])
        rss_ready = rss_bytes(big.pid)
        seconds, hits = query(address, pdq, md5, args.rounds)
        rss = rss_bytes(big.pid)
        big.terminate()
        big.wait(30)
    extra = rss - baseline_rss
    n_extra = n - 10_000
    print(f"{n:,} PDQ + {n:,} MD5 entries; snapshot {size / 1e6:.0f} MB "
          f"({size / n:.1f} bytes per PDQ+MD5 pair), built and written in {build_s:.1f} s")
    print(f"{'what':<44} {'value':>12}")
    print("-" * 57)
    print(f"{'process start -> SERVING (ready line)':<44} {ready_s:>10.2f} s")
    print(f"{'  same, a 10k-entry snapshot':<44} {small_start:>10.2f} s")
    print(f"{'snapshot opened in-process':<44} {open_s * 1000:>10.1f} ms")
    print(f"{'RSS, 10k-entry server after queries':<44} {baseline_rss / 1e6:>10.0f} MB")
    print(f"{'RSS, snapshot server at SERVING':<44} {rss_ready / 1e6:>10.0f} MB")
    print(f"{'RSS, snapshot server after queries':<44} {rss / 1e6:>10.0f} MB")
    print(f"{'  over the 10k server, per PDQ+MD5 pair':<44} {extra / n_extra:>10.1f} B "
          f"(budget 100 + 24 = 124)")
    print(f"{'Lookup: hashes/s (2020 per call)':<44} {args.rounds * 2020 / seconds:>10.0f}")
    print(f"{'queries that matched (20 listed per call)':<44} {hits:>10d} "
          f"of {args.rounds * 20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
