"""Client-side balancing (appliance.balancing): one client's calls spread over
three real servers on loopback, and a stopped server's share moves to the
others with no failed call."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from appliance.balancing import OPTIONS, target
from appliance.client import ClientAuth
from appliance.config import Config
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.helpers import ServerThread, make_config


def test_targets_keep_resolver_schemes_and_resolve_plain_names_by_dns() -> None:
    assert target("appliance.ns.svc.cluster.local:50051") == \
        "dns:///appliance.ns.svc.cluster.local:50051"
    assert target(" 127.0.0.1:1 ") == "dns:///127.0.0.1:1"
    for given in ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "dns:///a:1", "unix:/run/a.sock",
                  "ipv6:[::1]:50051"):
        assert target(given) == given


def _hashes(server: ServerThread) -> float:
    value = server.handle.app.metrics.registry.get_sample_value(
        "appliance_requests_total", {"method": "Hash", "code": "OK"})
    return value or 0.0


def test_calls_spread_over_three_servers_and_move_off_a_stopped_one(
        serve: Callable[[Config], ServerThread]) -> None:
    servers = [serve(make_config()) for _ in range(3)]
    address = "ipv4:" + ",".join(f"127.0.0.1:{s.handle.port}" for s in servers)
    with ClientAuth().channel(address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        for _ in range(60):
            stub.Hash(pb.FileRequest(content=b"spread me", signals=["md5"]), timeout=10)
        shares = [_hashes(s) for s in servers]
        assert sum(shares) == 60 and min(shares) >= 10, shares  # round robin: 20 each
        servers[0].stop()
        for _ in range(60):  # none may fail: UNAVAILABLE is retried on another replica
            result = stub.Hash(pb.FileRequest(content=b"moved", signals=["md5"]),
                               timeout=10).result
            assert result.hashes and not result.HasField("error")
        after = [_hashes(s) for s in servers[1:]]
    assert sum(after) - sum(shares[1:]) == 60 and min(a - b for a, b in
                                                      zip(after, shares[1:], strict=True)) >= 20


def test_the_options_name_round_robin_and_the_retried_codes() -> None:
    config = dict(OPTIONS)["grpc.service_config"]
    assert isinstance(config, str) and '"round_robin"' in config
    assert "UNAVAILABLE" in config and "RESOURCE_EXHAUSTED" in config


def test_a_request_over_a_size_limit_says_not_to_retry_it(
        serve: Callable[[Config], ServerThread]) -> None:
    server = serve(make_config(max_lookup_hashes=2))
    hashes = [pb.Hash(signal="md5", value="0" * 32) for _ in range(3)]
    with ClientAuth().channel(f"127.0.0.1:{server.handle.port}") as channel:
        stub = pb_grpc.ApplianceStub(channel)
        try:
            stub.Lookup(pb.LookupRequest(hashes=hashes), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailing = {m.key: m.value for m in exc.trailing_metadata() or ()}
            assert trailing.get("grpc-retry-pushback-ms") in ("-1", b"-1")
        else:
            raise AssertionError("a Lookup over max_lookup_hashes was answered")
    # Sent once: the retry policy honoured the pushback. (The server counts an
    # answer just after sending it: wait for the count, then for any retry.)
    registry = server.handle.app.metrics.registry
    labels = {"method": "Lookup", "code": "RESOURCE_EXHAUSTED"}
    stop = time.monotonic() + 5
    while not registry.get_sample_value("appliance_requests_total", labels) \
            and time.monotonic() < stop:
        time.sleep(0.02)
    time.sleep(0.5)
    assert registry.get_sample_value("appliance_requests_total", labels) == 1


def test_connections_past_their_age_are_ended_so_clients_resolve_again(
        serve: Callable[[Config], ServerThread]) -> None:
    """server.max_connection_age_seconds: the server ends each connection with a
    GOAWAY after that long; the client's channel leaves READY (and a DNS target
    is resolved again when it reconnects), and the next call simply works."""
    from dataclasses import replace

    config = make_config()
    server = serve(replace(config, server=replace(config.server,
                                                  max_connection_age_seconds=0.5)))
    seen: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        assert stub.Hash(pb.FileRequest(content=b"a", signals=["md5"]), timeout=10).result.hashes
        channel.subscribe(seen.append, try_to_connect=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and grpc.ChannelConnectivity.IDLE not in seen:
            time.sleep(0.05)
        assert grpc.ChannelConnectivity.IDLE in seen, seen  # the GOAWAY ended the connection
        assert stub.Hash(pb.FileRequest(content=b"b", signals=["md5"]), timeout=10).result.hashes
    # Without the setting, a connection stays up.
    server = serve(make_config())
    seen.clear()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        assert stub.Hash(pb.FileRequest(content=b"a", signals=["md5"]), timeout=10).result.hashes
        channel.subscribe(seen.append, try_to_connect=False)
        time.sleep(1.5)
    assert grpc.ChannelConnectivity.IDLE not in seen, seen
