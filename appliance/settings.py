"""The configuration's sections: one frozen dataclass each, one field per setting.

A field made with ``setting(default, help, flag=...)`` carries, once, what the
command line derives from it (appliance.cli_parser): the flag's spelling, its
type (int, float, a choice of a ``Literal``'s values, a switch for a bool), the
help text, in which ``{default}`` is the field's own default. Fields without a
flag are set from the configuration file and the environment only
(appliance.config: ``[section] key`` and ``APPLIANCE_<SECTION>_<KEY>``).

The metadata is a plain mapping on the dataclass field, so sections built at
run time carry it the same way: ``HashingConfig`` and ``MatchingConfig`` get
their per-signal fields (``pdq_threshold``, ``phash_threshold``, ...) from the
options the signal types declare (``signal_section``), not from fields
written here.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields, make_dataclass
from functools import cache
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from appliance.signals import options as signal_options
from appliance.video.limits import VideoLimits

Backend = Literal["auto", "cpu", "gpu", "gpu-sim"]
Isolation = Literal["process", "inline"]
# The image formats the appliance can read (appliance.decode has a walker for
# each), by Pillow's names.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
LogFormat = Literal["text", "json"]

MiB = 1 << 20
GiB = 1 << 30

T = TypeVar("T")


def setting(
    default: T, help: str | None = None, *, flag: str | None = None,
    dest: str | None = None, metavar: str | None = None,
) -> T:
    """A dataclass field with its default and what a command-line flag for it needs.

    ``flag``: the flag's spelling (none: no flag); ``dest``: the attribute
    argparse sets (default: the flag's name, ``--audit-log`` -> ``audit_log``);
    ``help``: its help, ``{default}`` standing for the default as shown by
    ``Setting.shown_default``.
    """
    metadata = {"help": help, "flag": flag, "dest": dest, "metavar": metavar}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", flag="--host")
    port: int = setting(50051, flag="--port")
    metrics_port: int = setting(9464, flag="--metrics-port")
    health_port: int = setting(0, "also serve gRPC health alone, in plaintext, on this port: "
                               "for probes that can do neither TLS nor tokens (Kubernetes') "
                               "(default {default}: off)", flag="--health-port")
    backend: Backend = setting(
        "cpu", "compute backend (default {default}; auto: the GPU when there is one; "
        "gpu-sim: the GPU path simulated on the CPU, slow, for tests)", flag="--backend")
    workers: int = setting(0, "hashing threads (default {default}: one per core)",
                           flag="--workers")
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
    # > 0: connections are closed (GOAWAY) after this long, so balancing clients
    # resolve the name again and find replicas added since (an autoscaler's).
    max_connection_age_seconds: float = 0.0
    grace_seconds: float = setting(
        10.0, "on SIGTERM, time given to accepted requests (default {default})",
        flag="--grace-seconds")
    audit_log: str = setting("", "append every match to this JSON-lines file",
                             flag="--audit-log")
    # Seconds between checks of the list files for changes (0: no watching;
    # reloads then come from SIGHUP or the ReloadLists RPC).
    watch_lists_seconds: float = 0.0
    log_format: LogFormat = setting(
        "text", "text, or json: one JSON object per line (default {default})",
        flag="--log-format")
    # An access log: request id, method, code, seconds (else failed RPCs only).
    log_requests: bool = setting(
        False, "log every RPC (request id, method, code, seconds), not only failures",
        flag="--log-requests")


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

    max_batch_items: int = setting(
        0, "files per batch (default {default}: one per worker on cpu, 256 on gpu; "
        "1 turns batching off)", flag="--max-batch-items")
    max_batch_bytes: int = setting(64 * MiB, "bytes per batch (default {default})",
                                   flag="--max-batch-bytes")
    max_delay_ms: float = setting(
        2.0, "longest wait for a batch to fill, from its first file (default {default})",
        flag="--max-delay-ms")
    max_queue_items: int = setting(
        4096, "files queued at most; beyond, RESOURCE_EXHAUSTED (default {default})",
        flag="--max-queue-items")
    max_queue_bytes: int = setting(
        1024 * MiB, "bytes queued at most; beyond, RESOURCE_EXHAUSTED (default {default})",
        flag="--max-queue-bytes")
    # Shed new requests while the queue's oldest file has waited longer than
    # this (0: never): the queue then holds about this much work, whatever the
    # machine's speed, so accepted requests keep a bounded latency.
    max_queue_wait_ms: float = setting(
        500.0, "shed new requests while the oldest queued file has waited longer "
        "(default {default}; 0: never)", flag="--max-queue-wait-ms")
    # Bytes of files held at once: queued or in a running batch of either
    # lane, or still arriving in a MatchStream (0: no bound beyond the
    # queue's). Bounds the memory of file content and, where files differ
    # much in size, how long a large file waits behind others.
    max_inflight_bytes: int = setting(
        512 * MiB, "bytes of files held at once, queued, running or arriving in "
        "streams (default {default}; 0: no bound beyond the queue's)",
        flag="--max-inflight-bytes")
    max_concurrent_batches: int = setting(
        0, "batches processed at once (default {default}: 2)", flag="--max-concurrent-batches")


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
class LimitsConfig(VideoLimits):
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
    # One MatchBatch request: its files and their bytes together; beyond
    # either, RESOURCE_EXHAUSTED. Formerly max_batch_files and
    # max_batch_bytes, which are still read (appliance.config.RENAMED). The
    # gRPC receive limit is the larger of max_file_bytes and
    # max_request_bytes, plus 1 MiB for the rest of the message.
    max_request_files: int = 256
    max_request_bytes: int = 64 * MiB
    # Hashes in one Lookup request; beyond, RESOURCE_EXHAUSTED.
    max_lookup_hashes: int = 100_000
    # The largest answer the server sends (gRPC's send limit): a Lookup's or
    # a MatchBatch's results.
    max_response_bytes: int = 64 * MiB
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
    decode_isolation: Isolation = setting(
        "process", "process: decode in sandboxed worker processes, killed past "
        "limits.max_decode_seconds; inline: in the hashing threads (default {default})",
        flag="--decode-isolation")
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
    # (dest: the client's --tls-cert/--tls-key of hash and match are others.)
    tls_cert: str = setting("", "the server's certificate (PEM): TLS on the gRPC port",
                            flag="--tls-cert", dest="tls_server_cert", metavar="FILE")
    tls_key: str = setting("", "its private key (PEM)", flag="--tls-key",
                           dest="tls_server_key", metavar="FILE")
    tls_client_ca: str = setting(
        "", "CA of client certificates: mutual TLS, certificates required",
        flag="--tls-client-ca", metavar="FILE")
    # The identities: tokens (as SHA-256) or certificate subjects, scopes,
    # rate limits, what answers reveal. Reloaded on SIGHUP.
    identities_file: str = setting(
        "", "identities (TOML): tokens, scopes, rate limits; without: open mode",
        flag="--identities", metavar="FILE")
    # Serve plaintext on an address other than loopback. Refused unless set:
    # for a mesh whose sidecar terminates TLS in front of the appliance.
    allow_insecure: bool = setting(
        False, "serve plaintext on a non-loopback address (a sidecar terminates TLS)",
        flag="--allow-insecure")
    # The metrics port with the gRPC port's certificate too.
    metrics_tls: bool = setting(
        False, "serve the metrics port over TLS with the same certificate",
        flag="--metrics-tls")
    # Protected answers (security.secrecy): a hit within this many bits inside
    # its threshold is at the edge; an identity that sends more than
    # probe_budget distinct queries at the edge of one entry is suspended.
    probe_band: int = 4
    probe_budget: int = 32


@dataclass(frozen=True)
class _Hashing:
    # Smallest side a fast-mode JPEG decode keeps (chosen by benchmarks/fast_pdq.py).
    fast_min_side: int = 1024
    # Also hash the EXIF-corrected orientation (variant "exif") when the tag turns the image.
    exif_orientation: bool = setting(
        False, "also hash the EXIF-corrected orientation (variant 'exif')",
        flag="--exif-orientation")


class _SignalFields:
    """What type checkers know of a section with fields from the signal types:
    any keyword, any attribute (the registry decides which exist)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __init__(self, **values: Any) -> None: ...

    def __getattr__(self, name: str) -> Any: ...


def signal_section(name: str, section: str, base: type[Any] = object,
                   doc: str | None = None) -> type[Any]:
    """A frozen dataclass: ``base``'s fields, then one field ``<signal>_<key>``
    per option of ``section`` that a signal type declares (appliance.signals)."""
    extra = [(s.field(o.key), o.type, setting(o.default, o.help, flag=o.flag, dest=o.dest))
             for s, o in signal_options(section)]
    return make_dataclass(name, extra, bases=(base,) if base is not object else (),
                          frozen=True, namespace={"__module__": __name__, "__doc__": doc})


if TYPE_CHECKING:
    class HashingConfig(_SignalFields, _Hashing): ...

    class MatchingConfig(_SignalFields): ...
else:
    # PDQ's mode (hashing.pdq_mode) comes from the PDQ signal type.
    HashingConfig = signal_section("HashingConfig", "hashing", _Hashing)
    # Thresholds (matching.<signal>_threshold), quality gates and the signals'
    # own options (matching.pdq_dihedral), all declared by the signal types.
    MatchingConfig = signal_section(
        "MatchingConfig", "matching",
        doc="Per signal: its threshold, quality gate and own options (appliance.signals).")


SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "hashing": HashingConfig,
    "matching": MatchingConfig,
    "batching": BatchingConfig,
    "gpu": GpuConfig,
    "security": SecurityConfig,
}


@dataclass(frozen=True)
class Setting:
    """One field of a section, with its type resolved and its metadata read."""

    section: str
    name: str
    type: Any
    default: Any
    help: str | None
    flag: str | None
    dest: str
    metavar: str | None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return get_args(self.type) if get_origin(self.type) is Literal else None

    def shown_default(self) -> str:
        """The default as help shows it: 64 MiB, not 67108864; 2, not 2.0."""
        value = self.default
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, int) and self.name.endswith("_bytes") and value > 0:
            for unit, size in (("GiB", GiB), ("MiB", MiB)):
                if value % size == 0:
                    return f"{value // size} {unit}"
        return str(value)

    def help_text(self, text: str | None = None) -> str | None:
        """The help (``text`` instead of the declared one when given), default filled in."""
        text = self.help if text is None else text
        return None if text is None else text.format(default=self.shown_default())


def section_settings(section: str, cls: type[Any]) -> list[Setting]:
    """The settings of one section's dataclass, in field order."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata
        flag = meta.get("flag")
        # Every setting has a plain default (immutable: a tuple, not a list).
        default: Any = None if f.default is MISSING else f.default
        out.append(Setting(
            section=section, name=f.name, type=hints[f.name], default=default,
            help=meta.get("help"), flag=flag,
            dest=meta.get("dest") or (flag[2:].replace("-", "_") if flag else f.name),
            metavar=meta.get("metavar"),
        ))
    return out


@cache
def settings() -> dict[str, Setting]:
    """Every setting of every section, by ``section.name``."""
    return {s.key: s for section, cls in SECTIONS.items()
            for s in section_settings(section, cls)}
