"""Can a caller rebuild a listed PDQ value from the answers? The attacks, measured.

    .venv/bin/python -m benchmarks.list_secrecy [--starts 5] [--tests 3000]

A server (CPU backend, the embedded demo list, an identities file) is asked
by two identities: ``trusted`` with ``reveal = "full"`` (the peer: the
answers as they were) and ``prober`` with the default protected answers.
Each attack of tests/probing.py starts from a hash 20 bits from the demo
list's first PDQ entry (a near copy of a listed picture; ``--starts`` of them,
different bits each) and asks Lookup one hash at a time:

- distance descent: the 256 one-bit flips, reading distances;
- edge walk: match / no-match only, out to the threshold, then each bit;
- group testing: match / no-match only, ``--tests`` tests of 4, 6 or 8 bits
  at once from the edge, decoded by how often each bit is in a matching test.

Printed per attack and identity: the median queries asked, how often the
prober was suspended, and the median and the least number of bits between
what the attack rebuilt and the entry (0: rebuilt exactly; the requirement
for protected answers: never within 10).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import numpy as np

from appliance import demo
from appliance.config import SecurityConfig
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, make_config
from tests.probing import Ask, Outcome, Refused, distance_descent, edge_walk, flip, group_test

TOKENS = {"trusted": "benchmark-trusted", "prober": "benchmark-prober"}


def _identities(path: Path) -> Path:
    tables = []
    for name, reveal in (("trusted", "full"), ("prober", "protected")):
        digest = hashlib.sha256(TOKENS[name].encode()).hexdigest()
        tables.append(f'[[identity]]\nname = "{name}"\ntoken_sha256 = "{digest}"\n'
                      f'scopes = ["lookup"]\nreveal = "{reveal}"\n')
    path.write_text("\n".join(tables))
    return path


def _entry() -> bytes:
    lines = demo.build().list_csv.decode().splitlines()
    row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    return bytes.fromhex(row["pdq"])


def _asker(stub: pb_grpc.ApplianceStub, who: str) -> Ask:
    metadata = (("authorization", f"Bearer {TOKENS[who]}"),)

    def ask(value: bytes) -> int | None:
        try:
            answer = stub.Lookup(pb.LookupRequest(hashes=[
                pb.Hash(signal="pdq", value=value.hex(), quality=100)]), metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise Refused(exc.details()) from exc
            raise
        hits = answer.results[0].matches
        return int(hits[0].distance) if hits else None

    return ask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=5, help="starting hashes per attack")
    parser.add_argument("--tests", type=int, default=3000, help="group tests per attack")
    args = parser.parse_args(argv)
    entry = _entry()
    def groups(size: int) -> Callable[[Ask, bytes, int], Outcome]:
        return lambda ask, start, seed: group_test(ask, start, 31, size=size,
                                                   tests=args.tests, seed=seed)

    attacks: dict[str, Callable[[Ask, bytes, int], Outcome]] = {
        "distance descent": lambda ask, start, seed: distance_descent(ask, start),
        "edge walk": lambda ask, start, seed: edge_walk(ask, start, seed),
        **{f"group testing, {k} bits": groups(k) for k in (4, 6, 8)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(make_config(), security=SecurityConfig(
            identities_file=str(_identities(Path(tmp) / "identities.toml"))))
        server = ServerThread(config)
        server.wait_ready()
        budget = config.security.probe_budget
        print(f"probe band {config.security.probe_band} bits, budget {budget} probes per entry; "
              f"{args.starts} starts 20 bits from the entry\n")
        print("| attack | identity | queries (median) | suspended | bits from the entry "
              "(median) | closest |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.ApplianceStub(channel)
                for name, attack in attacks.items():
                    for who in ("trusted", "prober"):
                        outcomes = []
                        for seed in range(args.starts):
                            server.handle.app.security.reload()  # lifts a suspension
                            start = entry
                            for bit in np.random.default_rng(100 + seed).choice(
                                    256, 20, replace=False).tolist():
                                start = flip(start, bit)
                            outcomes.append(attack(_asker(stub, who), start, seed))
                        bits = [_distance(o.rebuilt, entry) for o in outcomes]
                        print(f"| {name} | {who} | "
                              f"{statistics.median(o.queries for o in outcomes):.0f} | "
                              f"{sum(o.refused for o in outcomes)}/{len(outcomes)} | "
                              f"{statistics.median(bits):.0f} | {min(bits)} |", flush=True)
        finally:
            server.stop()
    return 0


def _distance(a: bytes, b: bytes) -> int:
    return int(np.bitwise_count(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


if __name__ == "__main__":
    raise SystemExit(main())
