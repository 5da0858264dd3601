"""Configuration as data: one frozen dataclass tree, validated at start.

Sources, later ones winning: built-in defaults, a TOML file (``--config``),
environment variables ``APPLIANCE_<SECTION>_<KEY>`` (e.g.
``APPLIANCE_LIMITS_MAX_FILE_BYTES=1048576``), then command-line flags. The
environment is passed in explicitly by the caller; no module reads
``os.environ`` on its own.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from appliance.errors import ConfigError
from appliance.signals import SIGNALS

Backend = Literal["auto", "cpu", "gpu", "gpu-sim"]
Isolation = Literal["process", "inline"]
# The image formats the appliance can read (appliance.decode has a walker for
# each), by Pillow's names.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
PdqMode = Literal["exact", "fast"]
LogFormat = Literal["text", "json"]

MiB = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9464
    backend: Backend = "cpu"
    # Threads that hash and decode; 0 means one per core.
    workers: int = 0
    # Requests being served at once, per class of method; beyond its class's
    # limit a request is answered RESOURCE_EXHAUSTED at once, and the other
    # classes are unaffected: file RPCs (Hash, Match, MatchBatch), streams
    # (MatchStream, which hold their slot while the client uploads), lookups
    # (Lookup) and control (GetStatus, ReloadLists; health is never limited).
    max_inflight_requests: int = 256
    max_inflight_streams: int = 32
    max_inflight_lookups: int = 4
    max_inflight_control: int = 16
    # Concurrent heavy-lane decodes (see limits.heavy_decode_bytes); 0: half the workers.
    heavy_workers: int = 0
    # Seconds given to in-flight requests on shutdown.
    grace_seconds: float = 10.0
    # Append-only JSON-lines audit log of every match; empty disables it.
    audit_log: str = ""
    # Seconds between checks of the list files for changes (0: no watching;
    # reloads then come from SIGHUP or the ReloadLists RPC).
    watch_lists_seconds: float = 0.0
    # "text" for people, "json" for log pipelines: one JSON object per line.
    log_format: LogFormat = "text"
    # Log every RPC (an access log: request id, method, code, seconds); without
    # it only RPCs that did not end OK are logged.
    log_requests: bool = False


@dataclass(frozen=True)
class BatchingConfig:
    """The dynamic batcher between the servicer and the pipeline (appliance.batching).

    A batch leaves when it has ``max_batch_items`` files or ``max_batch_bytes``
    bytes, or ``max_delay_ms`` after its first file arrived, whichever comes
    first. The queue in front of it is bounded: a request that would overflow
    ``max_queue_items`` or ``max_queue_bytes``, or that arrives while the
    oldest queued file has waited more than ``max_queue_wait_ms``, is answered
    RESOURCE_EXHAUSTED at once. ``max_batch_items = 1`` turns batching off
    (each file alone, at once). 0 for ``max_batch_items`` or
    ``max_concurrent_batches`` picks by backend (appliance.batching.resolve).
    """

    max_batch_items: int = 0
    max_batch_bytes: int = 64 * MiB
    max_delay_ms: float = 2.0
    max_queue_items: int = 4096
    max_queue_bytes: int = 1024 * MiB
    # Shed new requests while the queue's oldest file has waited longer than
    # this (0: never): the queue then holds about this much work, whatever the
    # machine's speed, so accepted requests keep a bounded latency.
    max_queue_wait_ms: float = 500.0
    # Bytes of files held at once: queued or in a running batch of either
    # lane, or still arriving in a MatchStream (0: no bound beyond the
    # queue's). Bounds the memory of file content and, where files differ
    # much in size, how long a large file waits behind others.
    max_inflight_bytes: int = 512 * MiB
    max_concurrent_batches: int = 0


@dataclass(frozen=True)
class GpuConfig:
    # CUDA device ordinal used by the gpu backend.
    device: int = 0
    # Files of at least this many bytes are digested by CPU threads while the
    # GPU digests the smaller ones: one GPU thread walks one file's blocks in
    # sequence, which for a large file is slower than one CPU core.
    # Provisional: 1 MiB is a placeholder, not a measurement, until the GPU
    # check (benchmarks/gpu_check.sh, the digest size sweep of
    # benchmarks/gpu_kernels.py) measures the crossover on the device; its
    # output and benchmarks/RESULTS.md give the measured value.
    digest_cpu_min_bytes: int = 1 * MiB
    # A device fault (a kernel that fails to compile, launch or answer, no
    # device memory) in any stage (upload, lookup, digest, perceptual, match,
    # warm-up) is raised instead of the work being redone on the CPU: for
    # tests, benchmarks and the GPU check, where a CPU answer under the name
    # of the GPU would mislead; a strict server does not start when its
    # warm-up fails. Off for serving: there a fault costs speed, not answers.
    # APPLIANCE_GPU_STRICT=1 or [gpu] strict = true.
    strict: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """What one file, one request and all decodes together may cost.

    Every file is hostile until decoded within its budget (appliance.decode,
    appliance.admission, appliance.sandbox): its structure is read and its
    memory estimated before any pixel is decoded, the estimate is admitted
    against a budget shared by all decodes, and the decode runs in a worker
    process with a memory limit and a time limit.
    """

    # One file's bytes; larger files get TOO_LARGE (and no hashes at all).
    max_file_bytes: int = 64 * MiB
    # Decoded pixels (width x height); larger images are refused before decoding.
    max_pixels: int = 100_000_000
    max_batch_files: int = 256
    max_batch_bytes: int = 64 * MiB
    # Total bytes of one MatchStream upload.
    max_stream_bytes: int = 256 * MiB
    # The image formats that are read; any other gets UNSUPPORTED_FORMAT (digests kept).
    image_formats: tuple[str, ...] = IMAGE_FORMATS
    # Estimated peak memory of one file's decode and pixel hashes; above it the
    # file is refused DECOMPRESSION_BOMB before decoding. 768 MiB holds a
    # 100 MP JPEG or PNG; a WebP, decoded through two RGBA canvases, tops out
    # near 40 MP.
    max_decode_bytes: int = 768 * MiB
    # The decode budget: estimated memory of all decodes at once. A decode
    # waits for room, then is refused OVERLOADED.
    max_decode_bytes_in_flight: int = 1024 * MiB
    # Wall-clock time of one file's decode and pixel hashes; past it the
    # worker is killed and the file gets DECODE_TIMEOUT.
    max_decode_seconds: float = 8.0
    # How long a decode waits for room in the budget when its request has no
    # deadline (with one, the deadline bounds the wait).
    max_decode_wait_seconds: float = 10.0
    # Structure bounds, checked before decoding (TOO_COMPLEX): scans of a
    # progressive JPEG; container items Pillow parses in Python (markers,
    # chunks, blocks, tags, strips); frames an animation lists.
    max_scans: int = 100
    max_segments: int = 65536
    max_frames: int = 10000
    # "process": decode in sandboxed worker processes (killed past their time,
    # limited in memory, unable to write files); "inline": in the worker
    # threads (no process hop; limits enforced only between reads).
    decode_isolation: Isolation = "process"
    # Files whose estimated decode memory is above this take the heavy lane
    # (a queue and workers of their own), so that large pictures never hold
    # up small ones.
    heavy_decode_bytes: int = 64 * MiB
    # Item (file) ids longer than this are refused (they reach logs and the audit log).
    max_id_chars: int = 256
    # A MatchStream that sends nothing for this long, or lasts longer in
    # all, is ended with DEADLINE_EXCEEDED and its bytes are let go.
    stream_idle_seconds: float = 10.0
    stream_max_seconds: float = 300.0


@dataclass(frozen=True)
class SecurityConfig:
    """Who may ask what (appliance.security). Without ``identities_file`` the
    server is in open mode: one anonymous identity with every scope and full
    answers, for development and for meshes that authenticate callers."""

    # TLS for the gRPC port: a certificate and its key (PEM); with a client
    # CA, client certificates are required (mutual TLS). Reloaded on SIGHUP.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # The identities: tokens (as SHA-256) or certificate subjects, scopes,
    # rate limits, what answers reveal. Reloaded on SIGHUP.
    identities_file: str = ""
    # Serve plaintext on an address other than loopback. Refused unless set:
    # for a mesh whose sidecar terminates TLS in front of the appliance.
    allow_insecure: bool = False
    # The metrics port with the gRPC port's certificate too.
    metrics_tls: bool = False
    # Protected answers (security.secrecy): a hit within this many bits inside
    # its threshold is at the edge; an identity that sends more than
    # probe_budget distinct queries at the edge of one entry is suspended.
    probe_band: int = 4
    probe_budget: int = 32


@dataclass(frozen=True)
class HashingConfig:
    # "exact": PDQ of the full-size decode, bit for bit the reference's.
    # "fast": JPEGs decoded at a reduced DCT scale first (see README for the drift).
    pdq_mode: PdqMode = "exact"
    # Smallest side a fast-mode JPEG decode keeps (chosen by benchmarks/fast_pdq.py).
    fast_min_side: int = 1024
    # Also hash the EXIF-corrected orientation (variant "exif") when the tag turns the image.
    exif_orientation: bool = False


@dataclass(frozen=True)
class MatchingConfig:
    # PDQ matches at Hamming distance <= pdq_threshold (the reference's 31).
    pdq_threshold: int = 31
    # PDQ hashes of quality below this are not matched (python-threatexchange uses 50).
    pdq_quality_min: int = 50
    # Match all 8 rotations/flips of a PDQ hash, so turned or mirrored copies match.
    pdq_dihedral: bool = False
    # The imagehash family (64 bits each): match at distance <= these.
    phash_threshold: int = 10
    dhash_threshold: int = 10
    ahash_threshold: int = 10
    whash_threshold: int = 10
    # PhotoDNA (values from a licensed library, via Lookup): Euclidean distance over
    # the 144 bytes. 0 matches identical vectors only; set the threshold your
    # PhotoDNA licence documentation recommends.
    photodna_threshold: int = 0


ListKind = Literal["block", "allow"]
# What a list spec says of its kind: "auto" (not said) becomes, once the
# list's format is known, that format's kind (appliance.lists.default_kind:
# allow for the NSRL formats, block for the others); block or allow always win.
SpecKind = Literal["auto", "block", "allow"]
AUTO_KIND: SpecKind = "auto"
_SPEC_KINDS: dict[str, SpecKind] = {kind: kind for kind in get_args(SpecKind)}

SPEC_FORMS = "PATH, NAME=PATH, NAME:KIND=PATH or NAME:KIND:FORMAT=PATH"


def _formats() -> tuple[str, ...]:
    # Imported here: the list parsers (NumPy, SQLite) are not needed to read a
    # configuration, and appliance.lists itself imports this module.
    from appliance.lists import AUTO, FORMATS

    return (AUTO, *FORMATS)


@dataclass(frozen=True)
class ListSpec:
    """One hash list to load. On the command line ``PATH`` (name = file stem),
    ``NAME=PATH``, ``NAME:KIND=PATH`` or ``NAME:KIND:FORMAT=PATH`` (``parse``);
    in the configuration file, a ``[[lists]]`` table with:

    - ``format``: "auto" (detected from the content) or a format name;
    - ``kind``: "block" (matches are reported) or "allow" (known-benign files:
      a hit suppresses the block hits of the same file); "auto", the default,
      is allow for the NSRL formats and block for every other;
    - ``enabled``: false keeps the list configured but not loaded;
    - ``signals``: only these of the list's signals are indexed (empty: all);
    - ``categories``: the list's own category values mapped to ours;
    - ``deltas``: files of additions and deletions applied after ``path``, in order.

    For a compiled snapshot, ``name`` names the file, not its lists (they keep
    their compiled names); ``kind``, ``signals`` and ``categories`` apply to
    every list in it, or the load is refused (appliance.loading).
    """

    name: str
    path: str
    format: str = "auto"
    kind: SpecKind = AUTO_KIND
    enabled: bool = True
    signals: tuple[str, ...] = ()
    categories: tuple[tuple[str, str], ...] = ()
    deltas: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> ListSpec:
        """A command-line spec. Without "=" the whole spec is the PATH (which may
        then hold ":"); with one, what comes before the first "=" is
        NAME[:KIND[:FORMAT]], KIND block or allow, FORMAT a list format or auto."""
        head, sep, path = spec.partition("=")
        if not sep:
            if not Path(spec).stem:
                raise _bad_spec(spec, "its PATH has no file name to name the list by")
            return cls(name=Path(spec).stem, path=spec)
        parts = head.split(":")
        if not path:
            raise _bad_spec(spec, "the PATH after '=' is empty")
        if len(parts) > 3:
            raise _bad_spec(spec, f"{head!r} has {len(parts) - 1} ':', at most 2")
        if not all(parts):
            raise _bad_spec(spec, f"{head!r} has an empty part")
        if "/" in head:
            # Most likely a PATH that holds "=": it needs a NAME= in front.
            raise _bad_spec(spec, f"{head!r} is not a NAME (it holds '/')")
        name, kind, fmt = (*parts, "", "")[:3]
        if kind and kind not in get_args(ListKind):
            raise _bad_spec(spec, f"unknown KIND {kind!r}")
        if fmt and fmt not in _formats():
            raise _bad_spec(spec, f"unknown FORMAT {fmt!r}")
        return cls(name=name, path=path, format=fmt or "auto", kind=_SPEC_KINDS[kind or "auto"])

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ListSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"[[lists]]: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if "name" not in table or "path" not in table:
            raise ConfigError(f"[[lists]] needs name and path, got {dict(table)}")
        kind = _SPEC_KINDS.get(str(table.get("kind", AUTO_KIND)))
        if kind is None:
            raise ConfigError(f"list {table['name']!r}: kind must be block or allow "
                              f"(or auto: allow for NSRL formats, else block), "
                              f"got {table['kind']!r}")
        fmt = str(table.get("format", "auto"))
        if fmt not in _formats():
            raise ConfigError(f"list {table['name']!r}: unknown format {fmt!r}; "
                              f"known: {', '.join(_formats())}")
        categories = table.get("categories", {})
        if not isinstance(categories, Mapping):
            raise ConfigError(f"list {table['name']!r}: categories must be a table")
        return cls(
            name=str(table["name"]),
            path=str(table["path"]),
            format=fmt,
            kind=kind,
            enabled=bool(table.get("enabled", True)),
            signals=tuple(str(s) for s in table.get("signals", ())),
            categories=tuple((str(k), str(v)) for k, v in categories.items()),
            deltas=tuple(str(d) for d in table.get("deltas", ())),
        )


def _bad_spec(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"list spec {spec!r}: {why}; a list spec is {SPEC_FORMS} "
        f"(KIND: {' or '.join(get_args(ListKind))}; FORMAT: {', '.join(_formats())})"
    )


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
        s, lim, m, h, b = self.server, self.limits, self.matching, self.hashing, self.batching
        if s.log_format not in get_args(LogFormat):
            raise ConfigError(
                f"server.log_format must be one of {get_args(LogFormat)}, got {s.log_format!r}"
            )
        if h.pdq_mode not in get_args(PdqMode):
            raise ConfigError(
                f"hashing.pdq_mode must be one of {get_args(PdqMode)}, got {h.pdq_mode!r}"
            )
        if h.fast_min_side < 64:
            raise ConfigError(f"hashing.fast_min_side must be >= 64, got {h.fast_min_side}")
        for name in ("phash", "dhash", "ahash", "whash"):
            value = getattr(m, f"{name}_threshold")
            if not 0 <= value <= 64:
                raise ConfigError(f"matching.{name}_threshold must be 0..64, got {value}")
        if s.backend not in get_args(Backend):
            raise ConfigError(
                f"server.backend must be one of {get_args(Backend)}, got {s.backend!r}"
            )
        for name, value in (("server.port", s.port), ("server.metrics_port", s.metrics_port)):
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
            "limits.max_batch_files": lim.max_batch_files,
            "limits.max_batch_bytes": lim.max_batch_bytes,
            "limits.max_stream_bytes": lim.max_stream_bytes,
            "batching.max_batch_bytes": b.max_batch_bytes,
            "batching.max_queue_items": b.max_queue_items,
            "batching.max_queue_bytes": b.max_queue_bytes,
            "gpu.digest_cpu_min_bytes": self.gpu.digest_cpu_min_bytes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
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
        if s.workers < 0 or s.grace_seconds < 0:
            raise ConfigError("server.workers and server.grace_seconds must not be negative")
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
        if m.photodna_threshold < 0:
            raise ConfigError(
                f"matching.photodna_threshold must be >= 0, got {m.photodna_threshold}"
            )
        if not 0 <= m.pdq_threshold <= 256:
            raise ConfigError(f"matching.pdq_threshold must be 0..256, got {m.pdq_threshold}")
        if not 0 <= m.pdq_quality_min <= 100:
            raise ConfigError(f"matching.pdq_quality_min must be 0..100, got {m.pdq_quality_min}")
        for spec in self.lists:
            unknown_signals = [n for n in spec.signals if n not in SIGNALS]
            if unknown_signals:
                raise ConfigError(f"list {spec.name!r}: unknown signals {unknown_signals}")
        names = [spec.name for spec in self.lists]
        if len(set(names)) != len(names):
            raise ConfigError(f"list names must be unique, got {names}")
        return self


_SECTIONS = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "hashing": HashingConfig,
    "matching": MatchingConfig,
    "batching": BatchingConfig,
    "gpu": GpuConfig,
    "security": SecurityConfig,
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


def _apply(config: Config, section: str, values: Mapping[str, Any], origin: str) -> Config:
    current = getattr(config, section)
    known = {f.name: f.type for f in fields(current)}
    updates = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(f"{origin}: unknown key {section}.{key}")
        updates[key] = _coerce(section, key, raw, known[key])
    return replace(config, **{section: replace(current, **updates)})


# APPLIANCE_* variables that are not configuration: the client's token, and
# the kernel tests' demand for a real GPU (tests/kernels/conftest.py), which
# the GPU check exports to every command it runs, servers included.
NOT_CONFIGURATION = frozenset({"APPLIANCE_TOKEN", "APPLIANCE_REQUIRE_GPU"})


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
            elif section in _SECTIONS and isinstance(values, dict):
                config = _apply(config, section, values, path)
            else:
                raise ConfigError(f"{path}: unknown section {section!r}")
    for name, raw in sorted((env or {}).items()):
        if not name.startswith("APPLIANCE_") or name in NOT_CONFIGURATION:
            continue
        rest = name[len("APPLIANCE_"):].lower()
        section, _, key = rest.partition("_")
        if section not in _SECTIONS:
            # A misspelt section would otherwise be silently ignored.
            raise ConfigError(f"environment {name}: no section {section!r}; the variables are "
                              f"APPLIANCE_<SECTION>_<KEY> with SECTION one of "
                              f"{', '.join(s.upper() for s in _SECTIONS)}")
        config = _apply(config, section, {key: raw}, f"environment {name}")
    for section, values in (overrides or {}).items():
        config = _apply(config, section, {k: v for k, v in values.items() if v is not None},
                        "flags")
    if lists:
        config = replace(config, lists=tuple(ListSpec.parse(s) for s in lists))
    return config.validate()


def as_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
