"""Prometheus metrics, with the names of DESIGN.md (a contract for dashboards).

Each server owns a ``Metrics`` with its own registry, so tests can run several
servers in one process; ``serve`` exposes it on the metrics port.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from appliance.results import Hit

# Seconds: from tens of microseconds (a digest of a small file) to tens of
# seconds (a 100 MP decode on a busy machine).
_STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_MEMORY_BUCKETS = tuple(float(1 << n) for n in range(20, 31))  # 1 MiB .. 1 GiB
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_FILL_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

STAGES = ("queue", "digest", "decode", "perceptual", "match")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.files = Counter(
            "appliance_files", "Files processed, by result (ok, matched, error)",
            ["result"], registry=r,
        )
        self.bytes = Counter("appliance_bytes", "Bytes of files received", registry=r)
        self.matches = Counter(
            "appliance_matches", "Match hits, by list and signal", ["list", "signal"], registry=r
        )
        self.suppressed = Counter(
            "appliance_suppressed_matches",
            "Block-list hits suppressed by an allow-list hit on the same file",
            ["list", "signal"], registry=r,
        )
        self.batch_size = Histogram(
            "appliance_batch_size", "Files per processed batch", buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "appliance_stage_seconds", "Time per file in each pipeline stage", ["stage"],
            buckets=_STAGE_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "appliance_queue_depth", "Files waiting in the batcher's queue", registry=r
        )
        self.queue_bytes = Gauge(
            "appliance_queue_bytes", "Bytes of the files waiting in the batcher's queue",
            registry=r,
        )
        self.lane_queue_depth = Gauge(
            "appliance_lane_queue_depth",
            "Files waiting in each lane's queue (light: small files; heavy: files whose "
            "decode needs more than limits.heavy_decode_bytes)", ["lane"], registry=r,
        )
        self.batch_fill = Histogram(
            "appliance_batch_fill_ratio",
            "How full each batch left: the larger of items/max_batch_items and "
            "bytes/max_batch_bytes", buckets=_FILL_BUCKETS, registry=r,
        )
        self.batches_running = Gauge(
            "appliance_batches_running", "Batches being processed now", registry=r
        )
        self.shed = Counter(
            "appliance_shed_requests",
            "Requests refused before any work, by reason (queue_full, queue_wait, "
            "inflight_bytes, deadline, cancelled, inflight, shutdown)", ["reason"], registry=r,
        )
        self.gpu_memory = Gauge(
            "appliance_gpu_memory_bytes",
            "GPU memory held, by kind (index: the uploaded lists; pool: CuPy's memory pool)",
            ["kind"], registry=r,
        )
        self.gpu_fallbacks = Counter(
            "appliance_gpu_fallbacks",
            "Batches redone on the CPU after a GPU fault, by stage", ["stage"], registry=r,
        )
        self.decode_budget = Gauge(
            "appliance_decode_budget_bytes",
            "The decode budget (limits.max_decode_bytes_in_flight), by state: capacity, "
            "in_use (estimated peak memory of the decodes running now)", ["state"], registry=r,
        )
        self.decode_peak = Histogram(
            "appliance_decode_peak_bytes",
            "Measured peak memory of one file's decode and pixel hashes in its worker",
            buckets=_MEMORY_BUCKETS, registry=r,
        )
        self.decode_workers_killed = Counter(
            "appliance_decode_workers_killed",
            "Decode worker processes ended and replaced, by reason (timeout: past their time "
            "limit or their request's deadline; failed: died or sent a malformed reply; "
            "retired: grown large after a big picture; shutdown: busy when the server stopped)",
            ["reason"], registry=r,
        )
        self.decode_workers_healthy = Gauge(
            "appliance_decode_workers_healthy",
            "1 while decode workers can be started (the zygote is up), else 0", registry=r,
        )
        self.index_entries = Gauge(
            "appliance_index_entries", "Hash values in the loaded index, by list and signal",
            ["list", "signal"], registry=r,
        )
        self.backend_info = Gauge(
            "appliance_backend_info", "The backend in use (value 1)", ["backend", "device"],
            registry=r,
        )
        self.errors = Counter(
            "appliance_errors", "Item errors and skipped signals, by code", ["code"], registry=r
        )
        self.requests = Counter(
            "appliance_requests", "RPCs answered, by method and gRPC status code",
            ["method", "code"], registry=r,
        )
        self.requests_by_identity = Counter(
            "appliance_identity_requests",
            "RPCs answered, by identity (configured names, 'anonymous' in open mode, "
            "'unauthenticated'), method and gRPC status code", ["identity", "method", "code"],
            registry=r,
        )
        self.rate_limited = Counter(
            "appliance_rate_limited_requests",
            "Requests refused for being over their identity's rate", ["identity"], registry=r,
        )
        self.suspended = Counter(
            "appliance_identity_suspensions",
            "Identities suspended for probing the lists (security.probe_budget)", ["identity"],
            registry=r,
        )
        self.inflight = Gauge(
            "appliance_inflight_requests", "RPCs being served now", registry=r
        )
        self.inflight_by_class = Gauge(
            "appliance_inflight_class_requests",
            "RPCs being served now, by class of method (files, streams, lookups, control): "
            "each class has its own limit", ["class"], registry=r,
        )
        self.list_info = Gauge(
            "appliance_list_info", "Loaded lists, their versions and kinds (value 1)",
            ["list", "version", "kind"], registry=r,
        )
        self.list_empty = Gauge(
            "appliance_list_empty",
            "1 for a loaded list with no entries (legitimate for an emptied allow list; "
            "for a block list most often a wrong file or column), 0 for the others",
            ["list"], registry=r,
        )
        self.list_reloads = Counter(
            "appliance_list_reloads", "List loads and reloads, by outcome (success, failure)",
            ["outcome"], registry=r,
        )
        self.last_reload_timestamp = Gauge(
            "appliance_lists_last_reload_timestamp_seconds",
            "When the lists were last loaded or a reload was tried (Unix time)", registry=r,
        )
        self.last_reload_success = Gauge(
            "appliance_lists_last_reload_success",
            "1 if the last load or reload of the lists succeeded, else 0", registry=r,
        )
        self.lists_ready = Gauge(
            "appliance_lists_ready", "1 once the lists are loaded and the server is SERVING",
            registry=r,
        )

    def count_hits(self, hits: Iterable[Hit]) -> None:
        """Block-list hits, as matches or (when an allow list vouched) suppressed."""
        for hit in hits:
            if hit.kind == "block":
                counter = self.suppressed if hit.suppressed else self.matches
                counter.labels(hit.list, hit.signal).inc()
