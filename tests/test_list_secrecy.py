"""A listed PDQ value cannot be rebuilt from a protected identity's answers.

Both attacks of tests/probing.py, against a real server, starting from a hash
20 bits from a listed entry. As an identity with ``reveal = "full"`` they
rebuild the entry exactly (so the attacks work, and the test can fail); as a
protected identity neither comes within 10 bits of it: distances are
withheld, and the edge walk is suspended by the probe guard. Matches are
reported all the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from appliance import demo
from appliance.config import SecurityConfig
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, make_config
from tests.probing import Ask, Refused, distance_descent, edge_walk, flip, group_test, hamming

TOKENS = {"prober": "token-of-the-prober", "trusted": "token-of-a-trusted-service"}


def _identities(path: Path, budget_note: str = "") -> Path:
    path.write_text(
        "[[identity]]\n"
        'name = "prober"\n'
        f'token_sha256 = "{hashlib.sha256(TOKENS["prober"].encode()).hexdigest()}"\n'
        'scopes = ["lookup", "match"]\n\n'
        "[[identity]]\n"
        'name = "trusted"\n'
        f'token_sha256 = "{hashlib.sha256(TOKENS["trusted"].encode()).hexdigest()}"\n'
        'scopes = ["lookup", "match", "admin"]\n'
        'reveal = "full"\n' + budget_note
    )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder = tmp_path_factory.mktemp("secrecy")
    config = make_config()
    config = replace(config, security=SecurityConfig(
        identities_file=str(_identities(folder / "identities.toml"))))
    srv = ServerThread(config)
    srv.wait_ready()
    yield srv
    srv.stop()


def _entry() -> bytes:
    """The demo list's first PDQ value: the entry the attacker wants."""
    lines = demo.build().list_csv.decode().splitlines()
    header = lines[0].split(",")
    return bytes.fromhex(dict(zip(header, lines[1].split(","), strict=True))["pdq"])


def _start(entry: bytes, bits: int = 20, seed: int = 5) -> bytes:
    start = entry
    for bit in np.random.default_rng(seed).choice(256, bits, replace=False).tolist():
        start = flip(start, bit)
    return start


def _asker(server: ServerThread, who: str) -> tuple[Ask, grpc.Channel]:
    channel = grpc.insecure_channel(server.address)
    stub = pb_grpc.ApplianceStub(channel)
    metadata = (("authorization", f"Bearer {TOKENS[who]}"),)

    def ask(value: bytes) -> int | None:
        try:
            answer = stub.Lookup(pb.LookupRequest(hashes=[
                pb.Hash(signal="pdq", value=value.hex(), quality=100)]), metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise Refused(exc.details()) from exc
            raise
        hits = [m for m in answer.results[0].matches if m.signal == "pdq"]
        return int(hits[0].distance) if hits else None

    return ask, channel


def _reload_identities(server: ServerThread) -> None:
    server.handle.app.security.reload()  # as SIGHUP does: lifts suspensions


def test_the_attacks_work_against_full_answers(server: ServerThread) -> None:
    entry = _entry()
    ask, channel = _asker(server, "trusted")
    with channel:
        assert ask(_start(entry)) == 20  # full answers: the exact distance
        descent = distance_descent(ask, _start(entry))
        walk = edge_walk(ask, _start(entry))
        groups = group_test(ask, _start(entry), 31, size=4, tests=2000)
    assert hamming(descent.rebuilt, entry) == 0 and descent.queries == 257
    assert hamming(walk.rebuilt, entry) == 0 and not walk.refused
    # Match / no-match answers alone, never one bit from an earlier query.
    assert hamming(groups.rebuilt, entry) <= 2 and not groups.refused
    assert not server.handle.app.security.guard.suspended  # trusted: never counted


def test_protected_answers_report_the_match_but_not_how_close(server: ServerThread) -> None:
    _reload_identities(server)
    ask, channel = _asker(server, "prober")
    with channel:
        assert ask(_start(_entry())) == -1  # a match, distance withheld
        stub = pb_grpc.ApplianceStub(channel)
        answer = stub.Lookup(pb.LookupRequest(hashes=[
            pb.Hash(signal="pdq", value=_start(_entry()).hex(), quality=100)]),
            metadata=(("authorization", f"Bearer {TOKENS['prober']}"),))
    [hit] = answer.results[0].matches
    assert (hit.list, hit.entry_id, hit.category) == ("demo", "demo-0001", "demo")
    assert hit.list_version and hit.distance == -1 and hit.query == ""


def test_distance_descent_learns_nothing_without_distances(server: ServerThread) -> None:
    _reload_identities(server)
    entry = _entry()
    ask, channel = _asker(server, "prober")
    with channel:
        outcome = distance_descent(ask, _start(entry))
    assert hamming(outcome.rebuilt, entry) > 10


def test_the_edge_walk_is_stopped_before_it_comes_close(server: ServerThread) -> None:
    _reload_identities(server)
    entry = _entry()
    ask, channel = _asker(server, "prober")
    with channel:
        outcome = edge_walk(ask, _start(entry))
        assert outcome.refused  # suspended by the probe guard
        with pytest.raises(Refused):
            ask(entry)  # the suspension holds for every question
    assert hamming(outcome.rebuilt, entry) > 10
    assert "prober" in server.handle.app.security.guard.suspended
    budget = server.handle.app.config.security.probe_budget
    assert outcome.queries < budget + 80  # stopped soon after its budget of edge probes
    _reload_identities(server)  # an operator lifts it
    assert ask_once(server, entry) == -1


@pytest.mark.parametrize("size", [4, 6, 8])
def test_group_testing_is_stopped_before_it_comes_close(server: ServerThread, size: int) -> None:
    _reload_identities(server)
    entry = _entry()
    ask, channel = _asker(server, "prober")
    with channel:
        outcome = group_test(ask, _start(entry), 31, size=size, tests=2000, seed=size)
    assert outcome.refused and hamming(outcome.rebuilt, entry) > 10


def ask_once(server: ServerThread, value: bytes) -> int | None:
    ask, channel = _asker(server, "prober")
    with channel:
        return ask(value)


def test_ordinary_traffic_is_not_suspended(server: ServerThread) -> None:
    """Resending the same near copy, and near copies well inside the threshold."""
    _reload_identities(server)
    entry = _entry()
    ask, channel = _asker(server, "prober")
    with channel:
        for _ in range(100):
            assert ask(_start(entry, 29)) == -1  # one file at the edge, again and again
        for seed in range(200):
            assert ask(_start(entry, 12, seed)) == -1  # many near copies, deep inside
    assert not server.handle.app.security.guard.suspended
