"""Who may ask what: TLS, mutual TLS, tokens, scopes, rate limits, reloads, one port."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from appliance import demo
from appliance.config import Config, SecurityConfig
from appliance.errors import ConfigError
from appliance.security.identities import Identities
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from tests.certs import Authority, Pair, subject
from tests.helpers import make_config

TOKENS = {"uploads": "t-uploads", "ops": "t-ops", "slow": "t-slow", "edge": "t-edge"}


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _identities(path: Path, extra: str = "") -> Path:
    path.write_text(
        f'[[identity]]\nname = "uploads"\ntoken_sha256 = "{_sha(TOKENS["uploads"])}"\n'
        'scopes = ["hash", "match"]\n\n'
        f'[[identity]]\nname = "ops"\ntoken_sha256 = "{_sha(TOKENS["ops"])}"\n'
        'scopes = ["status", "admin"]\n\n'
        f'[[identity]]\nname = "slow"\ntoken_sha256 = "{_sha(TOKENS["slow"])}"\n'
        'scopes = ["match", "lookup"]\nfiles_per_second = 2\nlookups_per_second = 10\n\n'
        + extra
    )
    return path


def _config(**security: Any) -> Config:
    config = make_config()
    return replace(config, security=SecurityConfig(**security))


def _auth(who: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[who]}"),)


def _trailers(error: grpc.RpcError) -> dict[str, str]:
    call: Any = error  # the raised error is also the call, with its trailing metadata
    return {str(k): str(v) for k, v in (call.trailing_metadata() or ())}


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# -- tokens and scopes ---------------------------------------------------------------


def test_tokens_name_identities_and_scopes_gate_methods(serve, tmp_path: Path) -> None:
    srv = serve(_config(identities_file=str(_identities(tmp_path / "ids.toml"))))
    listed = demo.build().files["listed-by-digest-and-pdq.png"]
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        match = pb.FileRequest(content=listed)
        assert _code(lambda: stub.Match(match)) == grpc.StatusCode.UNAUTHENTICATED
        bad = (("authorization", "Bearer nope"),)
        assert _code(lambda: stub.Match(match, metadata=bad)) == grpc.StatusCode.UNAUTHENTICATED
        odd = (("authorization", "Basic abc"),)
        assert _code(lambda: stub.Match(match, metadata=odd)) == grpc.StatusCode.UNAUTHENTICATED
        result = stub.Match(match, metadata=_auth("uploads")).result
        assert result.matched
        lookup = pb.LookupRequest(hashes=[pb.Hash(signal="md5", value="0" * 32)])
        denied = _code(lambda: stub.Lookup(lookup, metadata=_auth("uploads")))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        reload = pb.ReloadRequest()
        assert _code(lambda: stub.ReloadLists(reload, metadata=_auth("uploads"))) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert stub.ReloadLists(reload, metadata=_auth("ops")).ok
        # File paths of the lists only for admin identities.
        status = stub.GetStatus(pb.StatusRequest(), metadata=_auth("ops"))
        assert all(s.source for s in status.lists)
        # Health stays open for probes.
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_status_hides_list_paths_from_non_admins(serve, tmp_path: Path) -> None:
    extra = (f'[[identity]]\nname = "edge"\ntoken_sha256 = "{_sha(TOKENS["edge"])}"\n'
             'scopes = ["status"]\n')
    srv = serve(_config(identities_file=str(_identities(tmp_path / "ids.toml", extra))))
    with grpc.insecure_channel(srv.address) as channel:
        status = pb_grpc.ApplianceStub(channel).GetStatus(pb.StatusRequest(),
                                                          metadata=_auth("edge"))
    assert status.lists and not any(s.source for s in status.lists)


def test_reflection_is_for_admins(serve, tmp_path: Path) -> None:
    srv = serve(_config(identities_file=str(_identities(tmp_path / "ids.toml"))))
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    def services(metadata: tuple[tuple[str, str], ...]) -> list[str]:
        with grpc.insecure_channel(srv.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            [answer] = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata))
        return [s.name for s in answer.list_services_response.service]

    assert "appliance.v1.Appliance" in services(_auth("ops"))
    for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                           (_auth("uploads"), grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as info:
            services(metadata)
        assert info.value.code() == code


def test_open_mode_keeps_everything_open(serve) -> None:
    srv = serve(make_config())
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        assert stub.ReloadLists(pb.ReloadRequest()).ok
        assert all(s.source for s in stub.GetStatus(pb.StatusRequest()).lists)
    assert srv.handle.app.security.identities.open_mode
    assert "open mode" in srv.handle.app.security.describe()


def test_rate_limits_refuse_past_rate_and_burst_with_a_pushback(serve, tmp_path: Path) -> None:
    srv = serve(_config(identities_file=str(_identities(tmp_path / "ids.toml"))))
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        request = pb.FileRequest(content=b"abc")
        answers = []
        for _ in range(4):
            try:
                stub.Match(request, metadata=_auth("slow"))
                answers.append("OK")
            except grpc.RpcError as exc:
                answers.append(exc.code().name)
                pushback = _trailers(exc)
        assert answers[:2] == ["OK", "OK"]  # a burst of one second: 2 files
        assert answers[2] == "RESOURCE_EXHAUSTED"
        assert 0 < int(pushback["grpc-retry-pushback-ms"]) <= 1000
        # More hashes in one Lookup than the bucket ever holds: no delay would help.
        many = pb.LookupRequest(hashes=[pb.Hash(signal="md5", value="0" * 32)] * 11)
        with pytest.raises(grpc.RpcError) as info:
            stub.Lookup(many, metadata=_auth("slow"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "split the request" in (info.value.details() or "")
        assert "grpc-retry-pushback-ms" not in _trailers(info.value)
    metric = srv.handle.app.metrics.registry.get_sample_value(
        "appliance_rate_limited_requests_total", {"identity": "slow"})
    assert metric is not None and metric >= 2


def test_identities_reload_on_sighup_path(serve, tmp_path: Path) -> None:
    path = _identities(tmp_path / "ids.toml")
    srv = serve(_config(identities_file=str(path)))
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        assert stub.Hash(pb.FileRequest(content=b"a"), metadata=_auth("uploads")).result.hashes
        path.write_text(f'[[identity]]\nname = "ops"\ntoken_sha256 = "{_sha(TOKENS["ops"])}"\n'
                        'scopes = ["hash"]\n')
        srv.call(srv.handle.reload_all("reloaded on SIGHUP"))
        assert _code(lambda: stub.Hash(pb.FileRequest(content=b"a"), metadata=_auth("uploads"))
                     ) == grpc.StatusCode.UNAUTHENTICATED
        assert stub.Hash(pb.FileRequest(content=b"a"), metadata=_auth("ops")).result.hashes
        # A broken file keeps the identities that serve.
        path.write_text("[[identity]]\nname = 3\n")
        srv.call(srv.handle.reload_all("reloaded on SIGHUP"))
        assert stub.Hash(pb.FileRequest(content=b"a"), metadata=_auth("ops")).result.hashes


@pytest.mark.parametrize(("text", "why"), [
    ("", "no [[identity]]"),
    ('[[identity]]\nname = "a b"\ntoken_sha256 = "' + "0" * 64 + '"\nscopes = ["hash"]\n',
     "name must be"),
    ('[[identity]]\nname = "a"\ntoken_sha256 = "xyz"\nscopes = ["hash"]\n', "64 hex"),
    ('[[identity]]\nname = "a"\nscopes = ["hash"]\n', "needs token_sha256 or client_subject"),
    ('[[identity]]\nname = "a"\ntoken_sha256 = "' + "0" * 64 + '"\nscopes = ["root"]\n',
     "scopes must be"),
    ('[[identity]]\nname = "a"\ntoken_sha256 = "' + "0" * 64 + '"\nscopes = ["hash"]\n'
     'reveal = "some"\n', "reveal must be"),
    ('[[identity]]\nname = "a"\ntoken_sha256 = "' + "0" * 64 + '"\nscopes = ["hash"]\n'
     "files_per_second = -1\n", "positive"),
    ('[[identity]]\nname = "a"\ntoken_sha256 = "' + "0" * 64 + '"\nscopes = ["hash"]\n'
     '[[identity]]\nname = "a"\ntoken_sha256 = "' + "1" * 64 + '"\nscopes = ["hash"]\n',
     "share a name"),
    ('[[identity]]\nname = "a"\ntoken_sha256 = "' + "0" * 64 + '"\nscopes = ["hash"]\n'
     'colour = "red"\n', "unknown keys"),
])
def test_bad_identities_files_are_refused_with_a_reason(tmp_path: Path, text: str,
                                                        why: str) -> None:
    path = tmp_path / "ids.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(why)):
        Identities.load(str(path))


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Pair, Pair]:
    authority = Authority(tmp_path_factory.mktemp("pki"))
    return authority, authority.server(), authority.client("alice")


def _tls(authority: Authority, cert: Pair | None = None) -> grpc.ChannelCredentials:
    own = cert.read() if cert is not None else (None, None)
    return grpc.ssl_channel_credentials(authority.ca.read_bytes(), own[1], own[0])


def test_a_tls_server_refuses_plaintext_clients(serve, pki) -> None:
    authority, server_pair, _ = pki
    srv = serve(_config(tls_cert=str(server_pair.cert), tls_key=str(server_pair.key)))
    target = f"localhost:{srv.handle.port}"
    with grpc.secure_channel(target, _tls(authority)) as channel:
        assert pb_grpc.ApplianceStub(channel).Hash(pb.FileRequest(content=b"a")).result.hashes
    with grpc.insecure_channel(target) as channel:
        code = _code(lambda: pb_grpc.ApplianceStub(channel).Hash(pb.FileRequest(content=b"a"),
                                                                 timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "tls=on" in srv.handle.app.security.describe()


def test_mutual_tls_needs_a_certificate_and_its_subject_names_an_identity(
        serve, pki, tmp_path: Path) -> None:
    authority, server_pair, alice = pki
    ids = tmp_path / "ids.toml"
    ids.write_text(f'[[identity]]\nname = "alice"\nclient_subject = "{subject(alice)}"\n'
                   'scopes = ["hash"]\n')
    srv = serve(_config(tls_cert=str(server_pair.cert), tls_key=str(server_pair.key),
                        tls_client_ca=str(authority.ca), identities_file=str(ids)))
    target = f"localhost:{srv.handle.port}"
    with grpc.secure_channel(target, _tls(authority)) as channel:
        code = _code(lambda: pb_grpc.ApplianceStub(channel).Hash(pb.FileRequest(content=b"a"),
                                                                 timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE  # no client certificate: no handshake
    with grpc.secure_channel(target, _tls(authority, alice)) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        assert stub.Hash(pb.FileRequest(content=b"a")).result.hashes  # alice, by subject
        assert _code(lambda: stub.Match(pb.FileRequest(content=b"a"))) == \
            grpc.StatusCode.PERMISSION_DENIED
    bob = authority.client("bob")  # signed by the CA, but no identity has his subject
    with grpc.secure_channel(target, _tls(authority, bob)) as channel:
        code = _code(lambda: pb_grpc.ApplianceStub(channel).Hash(pb.FileRequest(content=b"a")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_health_port_answers_probes_in_plaintext_and_nothing_else(
        serve, pki, tmp_path: Path) -> None:
    """With mutual TLS on the gRPC port, a probe that has neither a certificate nor
    a token (Kubernetes' grpc probe) asks the health port; it has health alone."""
    authority, server_pair, _ = pki
    config = _config(tls_cert=str(server_pair.cert), tls_key=str(server_pair.key),
                     tls_client_ca=str(authority.ca),
                     identities_file=str(_identities(tmp_path / "ids.toml")))
    port = _free_port()
    srv = serve(replace(config, server=replace(config.server, health_port=port)))
    assert srv.handle.health_port == port
    srv.wait_ready()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        named = health_pb2.HealthCheckRequest(service="appliance.v1.Appliance")
        assert health_pb2_grpc.HealthStub(channel).Check(named, timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        hashing = _code(lambda: pb_grpc.ApplianceStub(channel).Hash(
            pb.FileRequest(content=b"a"), timeout=5))
        assert hashing == grpc.StatusCode.UNIMPLEMENTED
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        reflecting = _code(lambda: list(reflection_pb2_grpc.ServerReflectionStub(
            channel).ServerReflectionInfo(iter([listing]), timeout=5)))
        assert reflecting == grpc.StatusCode.UNIMPLEMENTED
        # Shutting down, the probe sees NOT_SERVING before the port goes.
        srv.call(srv.handle.health.enter_graceful_shutdown())
        assert health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING


def _served_certificate(port: int, authority: Authority) -> bytes:
    context = ssl.create_default_context(cafile=str(authority.ca))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("localhost", port)) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_certificates_are_reloaded_on_sighup(serve, pki, tmp_path: Path) -> None:
    authority, server_pair, _ = pki
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(server_pair.cert.read_bytes())
    key.write_bytes(server_pair.key.read_bytes())
    srv = serve(_config(tls_cert=str(cert), tls_key=str(key)))
    before = _served_certificate(srv.handle.port, authority)
    renewed = authority.issue("renewed", "localhost", server=True)
    cert.write_bytes(renewed.cert.read_bytes())
    key.write_bytes(renewed.key.read_bytes())
    srv.call(srv.handle.reload_all("reloaded on SIGHUP"))
    after = _served_certificate(srv.handle.port, authority)
    assert after != before
    assert ssl.DER_cert_to_PEM_cert(after).strip() == renewed.cert.read_text().strip()


def test_plaintext_off_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    from appliance.server import create_server

    config = _config()
    config = replace(config, server=replace(config.server, host="0.0.0.0"))
    import asyncio

    with pytest.raises(ConfigError, match="without TLS"):
        asyncio.run(create_server(config, metrics_http=False))
    allowed = replace(config, security=SecurityConfig(allow_insecure=True))

    async def start_and_stop() -> str:
        handle = await create_server(allowed, metrics_http=False)
        await handle.wait_ready()
        described = handle.app.security.describe()
        await handle.stop(0)
        return described

    assert "tls=off (security.allow_insecure)" in asyncio.run(start_and_stop())


def test_a_second_server_on_a_used_port_exits_2_with_one_line() -> None:
    from tests.helpers import start_server_process

    first, address, _ = start_server_process()
    try:
        port = address.rsplit(":", 1)[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        second = subprocess.run(
            [sys.executable, "-m", "appliance", "serve", "--port", port, "--metrics-port", "0"],
            capture_output=True, text=True, timeout=120, env=env)
    finally:
        first.terminate()
        first.wait(30)
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if "Traceback" in line]
    assert not errors and f"cannot bind 127.0.0.1:{port}" in second.stderr


def test_the_cli_client_speaks_tls_with_a_token(serve, pki, tmp_path: Path) -> None:
    authority, server_pair, _ = pki
    srv = serve(_config(tls_cert=str(server_pair.cert), tls_key=str(server_pair.key),
                        identities_file=str(_identities(tmp_path / "ids.toml"))))
    listed = tmp_path / "listed.png"
    listed.write_bytes(demo.build().files["listed-by-digest-and-pdq.png"])
    target = f"localhost:{srv.handle.port}"
    base = [sys.executable, "-m", "appliance", "match", "--server", target,
            "--tls-ca", str(authority.ca), str(listed)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    ok = subprocess.run([*base, "--token", TOKENS["uploads"]], capture_output=True, text=True,
                        timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["matches"]
    from_env = subprocess.run(base, capture_output=True, text=True, timeout=120,
                              env={**env, "APPLIANCE_TOKEN": TOKENS["uploads"]})
    assert from_env.returncode == 0, from_env.stderr
    none = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert none.returncode == 2 and "UNAUTHENTICATED" in none.stderr
