"""Configuration: defaults, file, environment and flags, in that order; validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config as cfg
from appliance.errors import ConfigError


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
