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
