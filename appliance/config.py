"""Configuration as data: one frozen dataclass tree, validated at start.

Sources, later ones winning: built-in defaults, a TOML file (``--config``),
environment variables ``APPLIANCE_<SECTION>_<KEY>`` (e.g.
``APPLIANCE_LIMITS_MAX_FILE_BYTES=1048576``), then command-line flags. The
environment is passed in explicitly by the caller; no module reads
``os.environ`` on its own.

The sections and their settings are declared once, in appliance.settings
(the flags derive from them: appliance.cli_parser); the lists to load in
appliance.listspec. This module puts the tree together (``Config``), checks
it (``Config.validate``) and reads it from its sources (``load``), old names
of renamed keys included (``RENAMED``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args

from appliance.errors import ConfigError
from appliance.listspec import AUTO_KIND, SPEC_FORMS, ListKind, ListSpec, SpecKind
from appliance.settings import (
    IMAGE_FORMATS,
    SECTIONS,
    Backend,
    BatchingConfig,
    GpuConfig,
    HashingConfig,
    Isolation,
    LimitsConfig,
    LogFormat,
    MatchingConfig,
    MiB,
    SecurityConfig,
    ServerConfig,
)
from appliance.signals import SIGNALS
from appliance.signals import options as signal_options
from appliance.signals.pdq import PdqMode

__all__ = [
    "AUTO_KIND", "IMAGE_FORMATS", "NOT_CONFIGURATION", "RENAMED", "SPEC_FORMS", "Backend",
    "BatchingConfig", "Config", "GpuConfig", "HashingConfig", "Isolation", "LimitsConfig",
    "ListKind", "ListSpec", "LogFormat", "MatchingConfig", "MiB", "PdqMode",
    "SecurityConfig", "ServerConfig", "SpecKind", "as_dict", "load",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    hashing: HashingConfig = field(default_factory=HashingConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # Empty: the embedded demo list (see appliance.demo).
    lists: tuple[ListSpec, ...] = ()

    def _validate_security(self) -> None:
        sec = self.security
        if bool(sec.tls_cert) != bool(sec.tls_key):
            raise ConfigError("security.tls_cert and security.tls_key go together")
        if sec.tls_client_ca and not sec.tls_cert:
            raise ConfigError("security.tls_client_ca needs security.tls_cert and tls_key")
        if sec.metrics_tls and not sec.tls_cert:
            raise ConfigError("security.metrics_tls needs security.tls_cert and tls_key")
        if not 1 <= sec.probe_band <= 32:
            raise ConfigError(f"security.probe_band must be 1..32, got {sec.probe_band}")
        if sec.probe_budget < 1:
            raise ConfigError(f"security.probe_budget must be positive, got {sec.probe_budget}")

    def validate(self) -> Config:
        s, lim, h, b = self.server, self.limits, self.hashing, self.batching
        if s.log_format not in get_args(LogFormat):
            raise ConfigError(
                f"server.log_format must be one of {get_args(LogFormat)}, got {s.log_format!r}"
            )
        if h.fast_min_side < 64:
            raise ConfigError(f"hashing.fast_min_side must be >= 64, got {h.fast_min_side}")
        for section in ("hashing", "matching"):
            for signal, option in signal_options(section):
                key = signal.field(option.key)
                problem = option.check(f"{section}.{key}", getattr(getattr(self, section), key))
                if problem:
                    raise ConfigError(problem)
        if s.backend not in get_args(Backend):
            raise ConfigError(
                f"server.backend must be one of {get_args(Backend)}, got {s.backend!r}"
            )
        for name, value in (("server.port", s.port), ("server.metrics_port", s.metrics_port),
                            ("server.health_port", s.health_port)):
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be 0..65535, got {value}")
        positive = {
            "server.max_inflight_requests": s.max_inflight_requests,
            "server.max_inflight_streams": s.max_inflight_streams,
            "server.max_inflight_lookups": s.max_inflight_lookups,
            "server.max_inflight_control": s.max_inflight_control,
            "limits.max_decode_bytes": lim.max_decode_bytes,
            "limits.max_decode_bytes_in_flight": lim.max_decode_bytes_in_flight,
            "limits.max_decode_seconds": lim.max_decode_seconds,
            "limits.max_scans": lim.max_scans,
            "limits.max_segments": lim.max_segments,
            "limits.max_frames": lim.max_frames,
            "limits.heavy_decode_bytes": lim.heavy_decode_bytes,
            "limits.max_id_chars": lim.max_id_chars,
            "limits.stream_idle_seconds": lim.stream_idle_seconds,
            "limits.stream_max_seconds": lim.stream_max_seconds,
            "limits.max_file_bytes": lim.max_file_bytes,
            "limits.max_pixels": lim.max_pixels,
            "limits.max_request_files": lim.max_request_files,
            "limits.max_request_bytes": lim.max_request_bytes,
            "limits.max_lookup_hashes": lim.max_lookup_hashes,
            "limits.max_response_bytes": lim.max_response_bytes,
            "limits.max_stream_bytes": lim.max_stream_bytes,
            "limits.max_video_seconds": lim.max_video_seconds,
            "limits.max_video_frames": lim.max_video_frames,
            "limits.max_video_pixels": lim.max_video_pixels,
            "limits.max_video_decode_seconds": lim.max_video_decode_seconds,
            "batching.max_batch_bytes": b.max_batch_bytes,
            "batching.max_queue_items": b.max_queue_items,
            "batching.max_queue_bytes": b.max_queue_bytes,
            "gpu.digest_cpu_min_bytes": self.gpu.digest_cpu_min_bytes,
        }
        for name, amount in positive.items():
            if amount <= 0:
                raise ConfigError(f"{name} must be positive, got {amount}")
        non_negative = {
            "batching.max_batch_items": b.max_batch_items,
            "batching.max_delay_ms": b.max_delay_ms,
            "batching.max_queue_wait_ms": b.max_queue_wait_ms,
            "batching.max_inflight_bytes": b.max_inflight_bytes,
            "batching.max_concurrent_batches": b.max_concurrent_batches,
            "gpu.device": self.gpu.device,
            "server.heavy_workers": s.heavy_workers,
            "limits.max_decode_wait_seconds": lim.max_decode_wait_seconds,
        }
        for name, number in non_negative.items():
            if number < 0:
                raise ConfigError(f"{name} must not be negative, got {number}")
        if s.workers < 0 or s.grace_seconds < 0 or s.max_connection_age_seconds < 0:
            raise ConfigError("server.workers, server.grace_seconds and "
                              "server.max_connection_age_seconds must not be negative")
        unknown_formats = [f for f in lim.image_formats if f not in IMAGE_FORMATS]
        if unknown_formats or not lim.image_formats:
            raise ConfigError(f"limits.image_formats must be a non-empty subset of "
                              f"{list(IMAGE_FORMATS)}, got {list(lim.image_formats)}")
        if lim.decode_isolation not in get_args(Isolation):
            raise ConfigError(f"limits.decode_isolation must be one of {get_args(Isolation)}, "
                              f"got {lim.decode_isolation!r}")
        if lim.max_decode_bytes > lim.max_decode_bytes_in_flight:
            raise ConfigError("limits.max_decode_bytes must not exceed "
                              "limits.max_decode_bytes_in_flight (such a file could never run)")
        self._validate_security()
        for spec in self.lists:
            unknown_signals = [n for n in spec.signals if n not in SIGNALS]
            if unknown_signals:
                raise ConfigError(f"list {spec.name!r}: unknown signals {unknown_signals}")
        names = [spec.name for spec in self.lists]
        if len(set(names)) != len(names):
            raise ConfigError(f"list names must be unique, got {names}")
        return self


# Keys renamed, per section: old -> new. The old keys are still read, from
# the file, the environment and overrides alike, and each one given is logged
# once per load as deprecated. limits.max_batch_* named one request's limits
# as batching.max_batch_* name where the batcher cuts.
RENAMED: dict[str, dict[str, str]] = {
    "limits": {"max_batch_files": "max_request_files", "max_batch_bytes": "max_request_bytes"},
}


def _coerce(section: str, key: str, raw: Any, target: type[Any] | str) -> Any:
    kind = target if isinstance(target, str) else target.__name__
    if kind.startswith("tuple"):
        # A TOML list, or a comma-separated string from the environment or a
        # flag. The one such setting is limits.image_formats: names in upper case.
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(str(item).strip().upper() for item in items if str(item).strip())
    try:
        if "int" in kind and not isinstance(raw, bool):
            return int(raw)
        if "float" in kind:
            return float(raw)
        if "bool" in kind:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}.{key}: cannot read {raw!r} as {kind}") from exc
    return str(raw)


def _signal_tables(section: str, values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """``values`` with a signal's table (``[matching.pdq] threshold = 31``) read
    as its keys (``pdq_threshold = 31``)."""
    out = {k: v for k, v in values.items() if not (isinstance(v, dict) and k in SIGNALS)}
    for name, table in values.items():
        if name not in out:
            for key, raw in table.items():
                flat = SIGNALS[name].field(key)
                if flat in out:
                    raise ConfigError(f"{origin}: {section}.{flat} and {section}.{name}.{key} "
                                      f"are the same setting; give only one")
                out[flat] = raw
    return out


def _apply(config: Config, section: str, values: Mapping[str, Any], origin: str,
           deprecated: dict[str, list[str]]) -> Config:
    """``config`` with ``values`` set in ``section``; old keys given are noted in
    ``deprecated`` (old key -> where it was given)."""
    values = _signal_tables(section, values, origin)
    current = getattr(config, section)
    known = {f.name: f.type for f in fields(current)}
    renamed = RENAMED.get(section, {})
    updates = {}
    for given, raw in values.items():
        key = renamed.get(given, given)
        if key != given:
            if key in values:
                raise ConfigError(f"{origin}: {section}.{given} and {section}.{key} are the "
                                  f"same setting; give only {section}.{key}")
            deprecated.setdefault(f"{section}.{given}", []).append(origin)
        if key not in known:
            raise ConfigError(f"{origin}: unknown key {section}.{key}")
        updates[key] = _coerce(section, key, raw, known[key])
    return replace(config, **{section: replace(current, **updates)})


def _warn_deprecated(deprecated: Mapping[str, list[str]]) -> None:
    # Logged, not warnings.warn: a DeprecationWarning is hidden by default, and
    # the operator who has to rename the key reads the log.
    for old, origins in deprecated.items():
        section, _, key = old.partition(".")
        _log.warning("%s is deprecated (given in %s): it is read as %s.%s; rename it",
                     old, ", ".join(origins), section, RENAMED[section][key])


# APPLIANCE_* variables that are not configuration: the client's token, and
# the kernel tests' demand for a real GPU (tests/kernels/conftest.py), which
# the GPU check exports to every command it runs, servers included.
NOT_CONFIGURATION = frozenset({"APPLIANCE_TOKEN", "APPLIANCE_REQUIRE_GPU"})


# The variables Kubernetes gives a pod for each Service of its namespace: a
# Service "appliance-grpc" makes APPLIANCE_GRPC_SERVICE_HOST,
# APPLIANCE_GRPC_PORT=tcp://..., APPLIANCE_GRPC_PORT_50051_TCP_ADDR, ... They
# are not configuration, and in a pod (KUBERNETES_SERVICE_HOST is set) they
# are passed over; no key is spelt like them (server.port is a number, never
# tcp://...).
_SERVICE_LINK = re.compile(
    r"(_SERVICE_HOST|_SERVICE_PORT(_\w+)?|_PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$")
_SERVICE_URL = re.compile(r"(tcp|udp|sctp)://\S+")


def _service_link(name: str, value: str, env: Mapping[str, str]) -> bool:
    if "KUBERNETES_SERVICE_HOST" not in env:
        return False
    if _SERVICE_LINK.search(name):
        return True
    return name.endswith("_PORT") and _SERVICE_URL.fullmatch(value) is not None


def load(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    lists: Sequence[str] | None = None,
) -> Config:
    """Build and validate the configuration.

    ``overrides`` maps section -> key -> value (from flags); ``lists`` are
    SPEC strings that replace the file's lists when given.
    """
    config = Config()
    deprecated: dict[str, list[str]] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        for section, values in data.items():
            if section == "lists":
                specs = [ListSpec.from_table(item) if isinstance(item, dict)
                         else ListSpec.parse(str(item)) for item in values]
                config = replace(config, lists=tuple(specs))
            elif section in SECTIONS and isinstance(values, dict):
                config = _apply(config, section, values, path, deprecated)
            else:
                raise ConfigError(f"{path}: unknown section {section!r}")
    for name, raw in sorted((env or {}).items()):
        if not name.startswith("APPLIANCE_") or name in NOT_CONFIGURATION or \
                _service_link(name, raw, env or {}):
            continue
        rest = name[len("APPLIANCE_"):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS:
            # A misspelt section would otherwise be silently ignored.
            raise ConfigError(f"environment {name}: no section {section!r}; the variables are "
                              f"APPLIANCE_<SECTION>_<KEY> with SECTION one of "
                              f"{', '.join(s.upper() for s in SECTIONS)}")
        config = _apply(config, section, {key: raw}, f"environment {name}", deprecated)
    for section, values in (overrides or {}).items():
        config = _apply(config, section, {k: v for k, v in values.items() if v is not None},
                        "flags", deprecated)
    if lists:
        config = replace(config, lists=tuple(ListSpec.parse(s) for s in lists))
    _warn_deprecated(deprecated)
    return config.validate()


def as_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
