"""Prometheus metrics, with the names of DESIGN.md (a contract for dashboards).

Each server owns a ``Metrics`` with its own registry, so tests can run several
servers in one process; ``serve`` exposes it on the metrics port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds: from tens of microseconds (a digest of a small file) to tens of
# seconds (a 100 MP decode on a busy machine).
_STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

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
        self.batch_size = Histogram(
            "appliance_batch_size", "Files per processed batch", buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "appliance_stage_seconds", "Time per file in each pipeline stage", ["stage"],
            buckets=_STAGE_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "appliance_queue_depth", "Files accepted and not yet answered", registry=r
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
        self.inflight = Gauge(
            "appliance_inflight_requests", "RPCs being served now", registry=r
        )
        self.list_info = Gauge(
            "appliance_list_info", "Loaded lists and their versions (value 1)",
            ["list", "version"], registry=r,
        )
        self.lists_ready = Gauge(
            "appliance_lists_ready", "1 once the lists are loaded and the server is SERVING",
            registry=r,
        )
