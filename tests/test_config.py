"""Configuration: defaults, file, environment and flags, in that order; validation;
the flags derived from the settings; the renamed keys."""

from __future__ import annotations

import argparse
import logging
import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance import cli
from appliance import config as cfg
from appliance.cli_parser import flagged, setting_overrides
from appliance.errors import ConfigError
from appliance.settings import Setting, settings


def test_defaults_are_the_documented_ones() -> None:
    c = cfg.load()
    assert c.matching.pdq_threshold == 31 and c.matching.pdq_quality_min == 50
    assert c.server.backend == "cpu" and c.lists == ()


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        "[server]\nport = 1111\nmetrics_port = 2222\n[limits]\nmax_pixels = 5000\n"
        "[matching]\npdq_threshold = 20\n"
        '[[lists]]\nname = "ncmec"\npath = "/lists/ncmec.csv"\n'
    )
    env = {"APPLIANCE_SERVER_PORT": "3333", "APPLIANCE_MATCHING_PDQ_THRESHOLD": "25",
           "OTHER": "ignored"}
    c = cfg.load(str(path), env, overrides={"server": {"port": 4444, "host": None}})
    assert c.server.port == 4444  # flag beats env beats file
    assert c.server.metrics_port == 2222
    assert c.matching.pdq_threshold == 25
    assert c.limits.max_pixels == 5000
    assert c.lists == (cfg.ListSpec("ncmec", "/lists/ncmec.csv"),)
    c = cfg.load(str(path), lists=["x=/a.csv", "/b/iwf.csv"])
    assert c.lists == (cfg.ListSpec("x", "/a.csv"), cfg.ListSpec("iwf", "/b/iwf.csv"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nbogus = 1\n", "unknown key"),
        ("[nope]\n", "unknown section"),
        ("[matching]\npdq_threshold = 300\n", "pdq_threshold"),
        ("[matching]\npdq_quality_min = -1\n", "pdq_quality_min"),
        ("[limits]\nmax_file_bytes = 0\n", "max_file_bytes"),
        ("[server]\nbackend = \"tpu\"\n", "backend"),
        ("[hashing]\npdq_mode = \"turbo\"\n", "pdq_mode"),
        ("[hashing]\nfast_min_side = 10\n", "fast_min_side"),
        ("[matching]\nphash_threshold = 65\n", "phash_threshold"),
        ("[server]\nport = \"abc\"\n", "cannot read"),
        ("not toml [", "cannot read config"),
        ('[[lists]]\nname = "a"\npath = "x"\n[[lists]]\nname = "a"\npath = "y"\n', "unique"),
    ],
)
def test_invalid_configuration_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        cfg.load(str(path))


def test_hashing_and_dihedral_options() -> None:
    c = cfg.load(env={"APPLIANCE_HASHING_PDQ_MODE": "fast",
                      "APPLIANCE_MATCHING_PDQ_DIHEDRAL": "true",
                      "APPLIANCE_HASHING_EXIF_ORIENTATION": "yes"})
    assert c.hashing.pdq_mode == "fast" and c.matching.pdq_dihedral
    assert c.hashing.exif_orientation
    assert cfg.load().hashing.pdq_mode == "exact" and not cfg.load().matching.pdq_dihedral


def test_bad_environment_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="APPLIANCE_LIMITS_NOPE"):
        cfg.load(env={"APPLIANCE_LIMITS_NOPE": "1"})


def test_list_spec_parse() -> None:
    assert cfg.ListSpec.parse("a=b.csv") == cfg.ListSpec("a", "b.csv")
    assert cfg.ListSpec.parse("dir/list.csv") == cfg.ListSpec("list", "dir/list.csv")
    with pytest.raises(ConfigError):
        cfg.ListSpec.parse("=x")


def test_batching_gpu_and_log_settings_from_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(
        "[batching]\nmax_batch_items = 32\nmax_queue_wait_ms = 100\n"
        '[gpu]\ndigest_cpu_min_bytes = 4096\n[server]\nlog_format = "json"\n'
    )
    env = {"APPLIANCE_BATCHING_MAX_DELAY_MS": "7.5", "APPLIANCE_GPU_DEVICE": "1",
           "APPLIANCE_SERVER_BACKEND": "gpu-sim"}
    c = cfg.load(str(path), env, overrides={"batching": {"max_queue_items": 10}})
    assert (c.batching.max_batch_items, c.batching.max_queue_wait_ms) == (32, 100.0)
    assert (c.batching.max_delay_ms, c.batching.max_queue_items) == (7.5, 10)
    assert (c.gpu.digest_cpu_min_bytes, c.gpu.device) == (4096, 1)
    assert c.server.log_format == "json" and c.server.backend == "gpu-sim"
    defaults = cfg.load()
    assert defaults.batching.max_batch_items == 0  # by backend: batching.resolve
    assert defaults.batching.max_queue_wait_ms == 500.0


def test_gpu_strict_from_file_and_env_and_the_gpu_checks_variable(tmp_path: Path) -> None:
    assert cfg.load().gpu.strict is False  # serving falls back to the CPU on a fault
    path = tmp_path / "strict.toml"
    path.write_text("[gpu]\nstrict = true\n")
    assert cfg.load(str(path)).gpu.strict is True
    assert cfg.load(None, {"APPLIANCE_GPU_STRICT": "1"}).gpu.strict is True
    assert cfg.load(str(path), {"APPLIANCE_GPU_STRICT": "0"}).gpu.strict is False
    # The kernel tests' variable, exported by the GPU check to the servers it
    # starts too, is not a (misspelt) configuration section.
    assert cfg.load(None, {"APPLIANCE_REQUIRE_GPU": "1"}) == cfg.load()


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("batching", "max_queue_items", 0, "batching.max_queue_items must be positive"),
        ("batching", "max_batch_items", -1, "batching.max_batch_items must not be negative"),
        ("batching", "max_queue_wait_ms", -5, "batching.max_queue_wait_ms must not be negative"),
        ("gpu", "digest_cpu_min_bytes", 0, "gpu.digest_cpu_min_bytes must be positive"),
        ("server", "log_format", "xml", "server.log_format must be one of"),
        ("server", "backend", "tpu", "server.backend must be one of"),
    ],
)
def test_bad_batching_gpu_and_log_settings_are_refused(
    section: str, key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg.load(overrides={section: {key: value}})


# Every flag that sets a configuration key, as spelt before the flags were
# derived from the fields' metadata: other programs and checks use them.
SERVE_FLAGS = {
    "--host": "server.host", "--port": "server.port", "--metrics-port": "server.metrics_port",
    "--health-port": "server.health_port",
    "--backend": "server.backend", "--workers": "server.workers",
    "--audit-log": "server.audit_log", "--log-format": "server.log_format",
    "--log-requests": "server.log_requests", "--grace-seconds": "server.grace_seconds",
    "--tls-cert": "security.tls_cert", "--tls-key": "security.tls_key",
    "--tls-client-ca": "security.tls_client_ca", "--identities": "security.identities_file",
    "--allow-insecure": "security.allow_insecure", "--metrics-tls": "security.metrics_tls",
    "--max-batch-items": "batching.max_batch_items",
    "--max-batch-bytes": "batching.max_batch_bytes",
    "--max-delay-ms": "batching.max_delay_ms", "--max-queue-items": "batching.max_queue_items",
    "--max-queue-bytes": "batching.max_queue_bytes",
    "--max-queue-wait-ms": "batching.max_queue_wait_ms",
    "--max-inflight-bytes": "batching.max_inflight_bytes",
    "--max-concurrent-batches": "batching.max_concurrent_batches",
    "--pdq-mode": "hashing.pdq_mode", "--exif-orientation": "hashing.exif_orientation",
    "--decode-isolation": "limits.decode_isolation",
    "--pdq-threshold": "matching.pdq_threshold",
    "--pdq-quality-min": "matching.pdq_quality_min", "--dihedral": "matching.pdq_dihedral",
    "--tmk-level1": "matching.tmk_level1", "--tmk-level2": "matching.tmk_level2",
    "--vpdq-threshold": "matching.vpdq_threshold",
    "--vpdq-quality-min": "matching.vpdq_quality_min",
    "--vpdq-query-percent": "matching.vpdq_query_percent",
    "--vpdq-compared-percent": "matching.vpdq_compared_percent",
    "--vpdq-seconds-per-hash": "hashing.vpdq_seconds_per_hash",
}


def _other_value(s: Setting) -> Any:
    """A valid value of the setting that is not its default."""
    if s.type is bool:
        return not s.default
    if s.choices is not None:
        return next(c for c in s.choices if c != s.default)
    if s.type is int:
        return s.default + 1
    if s.type is float:  # halved: scores and percentages have upper bounds
        return s.default / 2 if s.default else 0.5
    return f"/etc/appliance/{s.name}"


def _argv(s: Setting, value: Any) -> list[str]:
    assert s.flag is not None
    return [s.flag] if s.type is bool else [s.flag, str(value)]


def _serve_parser() -> argparse.ArgumentParser:
    [sub] = [a for a in cli.build_parser()._actions
             if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = sub.choices["serve"]
    return parser


def test_the_flags_are_the_settings_with_a_flag_and_keep_their_spelling() -> None:
    assert {s.flag: s.key for s in flagged()} == SERVE_FLAGS
    given = {o for a in _serve_parser()._actions for o in a.option_strings
             if o.startswith("--")}
    assert given - {"--help", "--config", "--lists"} == set(SERVE_FLAGS)


@pytest.mark.parametrize("setting", flagged(), ids=lambda s: s.key)
def test_every_flag_sets_its_key(setting: Setting) -> None:
    value = _other_value(setting)
    args = cli.build_parser().parse_args(["serve", *_argv(setting, value)])
    assert setting_overrides(args) == {setting.section: {setting.name: value}}


def test_all_flags_at_once_reach_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("APPLIANCE_")]:
        monkeypatch.delenv(name)
    values = {s.key: _other_value(s) for s in flagged()}
    argv = [word for s in flagged() for word in _argv(s, values[s.key])]
    config = cli._config(cli.build_parser().parse_args(["serve", *argv]))
    for s in flagged():
        assert getattr(getattr(config, s.section), s.name) == values[s.key], s.key
    # Unset flags leave the defaults (and the file's and environment's values).
    assert cli._config(cli.build_parser().parse_args(["serve"])) == cfg.load()


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["hash", "--dihedral", "f"], "matching.pdq_dihedral", True),
        (["hash", "--backend", "gpu-sim", "f"], "server.backend", "gpu-sim"),
        (["match", "--pdq-threshold", "12", "f"], "matching.pdq_threshold", 12),
        (["scan", "--workers", "3", "d"], "server.workers", 3),
        (["scan", "--decode-isolation", "inline", "d"], "limits.decode_isolation", "inline"),
    ],
)
def test_the_other_commands_flags_set_the_same_keys(argv: list[str], key: str,
                                                    value: object) -> None:
    section, _, name = key.partition(".")
    assert setting_overrides(cli.build_parser().parse_args(argv)) == {section: {name: value}}


def test_help_shows_the_defaults_of_the_fields() -> None:
    help_text = _serve_parser().format_help()
    assert "(default 64 MiB)" in help_text and "(default 1 GiB)" in help_text
    assert "{default}" not in help_text
    assert "(default 500;" in str(settings()["batching.max_queue_wait_ms"].help_text())


def _deprecations(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "appliance.config" and "deprecated" in r.getMessage()]


def test_the_old_request_limit_keys_are_read_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="appliance.config")
    path = tmp_path / "old.toml"
    path.write_text("[limits]\nmax_batch_files = 8\nmax_batch_bytes = 4096\n")
    c = cfg.load(str(path), env={"APPLIANCE_LIMITS_MAX_BATCH_FILES": "9"})
    assert (c.limits.max_request_files, c.limits.max_request_bytes) == (9, 4096)
    assert c.batching.max_batch_bytes == cfg.BatchingConfig().max_batch_bytes  # not the batcher's
    warned = _deprecations(caplog)
    assert len(warned) == 2  # one per old key, though max_batch_files was given twice
    [files] = [m for m in warned if "limits.max_batch_files" in m]
    assert "limits.max_request_files" in files and str(path) in files
    assert "APPLIANCE_LIMITS_MAX_BATCH_FILES" in files
    new = tmp_path / "new.toml"
    new.write_text("[limits]\nmax_request_files = 8\nmax_request_bytes = 4096\n")
    assert cfg.load(str(new)) == replace(cfg.load(str(path)), limits=replace(
        c.limits, max_request_files=8))


def test_the_old_keys_from_the_environment_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="appliance.config")
    c = cfg.load(env={"APPLIANCE_LIMITS_MAX_BATCH_BYTES": "2048"})
    assert c.limits.max_request_bytes == 2048
    assert c == cfg.load(env={"APPLIANCE_LIMITS_MAX_REQUEST_BYTES": "2048"})
    assert len(_deprecations(caplog)) == 1
    caplog.clear()
    cfg.load(env={"APPLIANCE_LIMITS_MAX_REQUEST_BYTES": "2048"})
    assert _deprecations(caplog) == []


def test_an_old_and_a_new_key_in_one_table_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "both.toml"
    path.write_text("[limits]\nmax_batch_files = 8\nmax_request_files = 9\n")
    with pytest.raises(ConfigError, match=r"give only limits\.max_request_files"):
        cfg.load(str(path))


def test_lookup_and_message_limits_are_settings(tmp_path: Path) -> None:
    defaults = cfg.load().limits
    assert (defaults.max_lookup_hashes, defaults.max_response_bytes) == (100_000, 64 << 20)
    path = tmp_path / "l.toml"
    path.write_text("[limits]\nmax_lookup_hashes = 10\n")
    c = cfg.load(str(path), env={"APPLIANCE_LIMITS_MAX_RESPONSE_BYTES": "4096"})
    assert (c.limits.max_lookup_hashes, c.limits.max_response_bytes) == (10, 4096)
    for key in ("max_lookup_hashes", "max_response_bytes", "max_request_files"):
        with pytest.raises(ConfigError, match=f"limits.{key} must be positive"):
            cfg.load(overrides={"limits": {key: 0}})


def test_the_server_enforces_the_lookup_and_response_limits() -> None:
    import grpc

    from appliance.v1 import appliance_pb2 as pb
    from appliance.v1 import appliance_pb2_grpc as pb_grpc
    from tests.helpers import ServerThread, make_config

    srv = ServerThread(make_config(max_lookup_hashes=2, max_response_bytes=1024))
    try:
        srv.wait_ready()
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.ApplianceStub(channel)
            md5 = pb.Hash(signal="md5", value="0" * 32)
            assert len(stub.Lookup(pb.LookupRequest(hashes=[md5, md5])).results) == 2
            with pytest.raises(grpc.RpcError) as info:
                stub.Lookup(pb.LookupRequest(hashes=[md5] * 3))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limits.max_lookup_hashes=2" in str(info.value.details())
            one = pb.FileRequest(id="a", content=b"x")
            assert len(stub.MatchBatch(pb.BatchRequest(files=[one])).results) == 1
            with pytest.raises(grpc.RpcError) as info:  # an answer over 1024 bytes
                stub.MatchBatch(pb.BatchRequest(files=[one] * 20))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        srv.stop()


def test_the_readmes_configuration_is_every_setting_at_its_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    [sample] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[server]" in b]
    documented = {f"{section}.{key}" for section, table in tomllib.loads(sample).items()
                  if section != "lists" for key in table}
    assert documented == set(settings())
    path = tmp_path / "readme.toml"
    path.write_text(sample)
    caplog.set_level(logging.WARNING, logger="appliance.config")
    assert replace(cfg.load(str(path)), lists=()) == cfg.load()
    assert _deprecations(caplog) == []


def _links(service: str, port: int) -> dict[str, str]:
    """What the kubelet sets for a Service (enableServiceLinks, the default)."""
    p = service.upper().replace("-", "_")
    url = f"tcp://10.0.0.7:{port}"
    return {f"{p}_SERVICE_HOST": "10.0.0.7", f"{p}_SERVICE_PORT": str(port),
            f"{p}_SERVICE_PORT_GRPC": str(port), f"{p}_PORT": url,
            f"{p}_PORT_{port}_TCP": url, f"{p}_PORT_{port}_TCP_PROTO": "tcp",
            f"{p}_PORT_{port}_TCP_PORT": str(port), f"{p}_PORT_{port}_TCP_ADDR": "10.0.0.7"}


def test_kubernetes_service_links_are_not_configuration_in_a_pod() -> None:
    links = {**_links("appliance", 50051), **_links("appliance-grpc", 50051),
             **_links("appliance-server", 9464)}
    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", **links, "APPLIANCE_SERVER_PORT": "6000",
           "APPLIANCE_SERVER_METRICS_PORT": "6001"}
    config = cfg.load(env=pod)
    assert (config.server.port, config.server.metrics_port) == (6000, 6001)  # real keys apply
    # Outside a pod, or spelt as a key, they are what they look like: errors.
    with pytest.raises(ConfigError):
        cfg.load(env=links)
    with pytest.raises(ConfigError):
        cfg.load(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                      "APPLIANCE_SERVER_PORTS": "tcp://10.0.0.7:1"})
    with pytest.raises(ConfigError):
        cfg.load(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "APPLIANCE_SERVER_PORT": "6x"})
    # A Service "appliance-server" sets APPLIANCE_SERVER_PORT=tcp://...: passed over.
    assert cfg.load(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                         **_links("appliance-server", 9464)}).server.port == 50051
