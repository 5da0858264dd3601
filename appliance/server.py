"""The gRPC server: lifecycle, health, reflection, the metrics endpoint.

``create_server(config)`` builds and starts a server (tests bind port 0 and
talk to it in-process); ``serve(config)`` runs one until SIGTERM or SIGINT.
The started server's handle (health, reload, graceful stop) is ``handle``'s;
the transport checks and the reflection guard are ``security.transport``'s.
The health status is NOT_SERVING until the lists are loaded, and again only
when the service truly cannot take work (no decode worker can be started):
overload is answered by shedding requests, never by going unhealthy. Match
and Lookup answer UNAVAILABLE until the lists load; Hash works from the start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The asyncio health servicer; the package re-exports it without declaring so.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from appliance.admission import HeldBytes
from appliance.allocator import fix_mmap_threshold
from appliance.audit import AuditLog
from appliance.backend import make_pipeline, select_backend
from appliance.batching import Batcher, Clock, MonotonicClock, resolve
from appliance.config import Config
from appliance.errors import ConfigError
from appliance.handle import SERVICE_NAME, ServerHandle, first_load, set_status, watch_health
from appliance.index.snapshot import match_radius
from appliance.intake import Lanes, Work, run_work, size_of
from appliance.loading import Catalog, Loaded
from appliance.metrics import Metrics
from appliance.metrics_http import start_metrics_server
from appliance.pipeline import Pipeline
from appliance.reloader import ListManager, describe
from appliance.results import ItemResult
from appliance.security import ProbeGuard, Security
from appliance.security.tls import TlsFiles, metrics_context
from appliance.security.transport import REFLECTION, AdminOnly, check_transport
from appliance.servicer import IDENTITY, REQUEST_ID, App, ApplianceService
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from appliance.warmup import compile_kernels

log = logging.getLogger("appliance.server")

# Protobuf framing around the file bytes of one request.
_MESSAGE_OVERHEAD = 1 << 20
# A start that takes longer says why (numba compiling after an install). A
# warm start takes 1 to 2 s on two cores (the decode workers' zygote), and
# should not claim to be compiling.
_SLOW_START = 3.0
# The heavy lane's queue: few files, each worth seconds of work.
_HEAVY_QUEUE_ITEMS = 64
_HEAVY_QUEUE_WAIT_MS = 10_000.0

__all__ = [
    "IDENTITY", "REQUEST_ID", "SERVICE_NAME", "ServerHandle", "check_transport", "create_server",
    "serve",
]


async def _warm_up(pipeline: Pipeline) -> None:
    """Compile the kernels here, start the decode workers (which compile in
    their zygote) and warm up the pipeline's own kernels (a GPU backend's, on
    its device) before any request, saying so when it takes a while: the first
    start after an install compiles everything (10 to 30 s). A strict GPU
    pipeline whose warm-up fails raises (GpuFault): the start stops there."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    kernels: asyncio.Future[Any] = loop.run_in_executor(None, compile_kernels)
    workers: asyncio.Future[Any] = loop.run_in_executor(None, pipeline.start)
    device: asyncio.Future[Any] = loop.run_in_executor(None, pipeline.warm_up)
    every = {kernels, workers, device}
    done, _ = await asyncio.wait(every, timeout=_SLOW_START)
    if len(done) < len(every):
        log.info("compiling the hashing kernels and starting the decode workers: the first "
                 "start after an install takes 10 to 30 s (numba compiles, then caches)")
    await asyncio.wait(every)
    if time.monotonic() - started > _SLOW_START:
        log.info("kernels and decode workers ready in %.1f s", time.monotonic() - started)
    try:
        workers.result()
    except Exception as exc:  # serve without them: health says NOT_SERVING and retries
        log.error("decode workers did not start: %s", exc)
    try:
        kernels.result()
        device.result()
    except BaseException:
        await loop.run_in_executor(None, pipeline.close)  # no zygote left behind
        raise


def _heavy_workers(config: Config, workers: int) -> int:
    return config.server.heavy_workers or max(1, workers // 2)


def _lanes(config: Config, backend: str, workers: int, pipeline: Pipeline,
           pools: _Pools, clock: Clock, metrics: Metrics, held: HeldBytes) -> Lanes:
    """The light lane with the configured batching; the heavy lane one file per
    batch, ``server.heavy_workers`` at once, with a short queue of its own."""
    light_cfg = resolve(config.batching, backend, workers)
    heavy_workers = _heavy_workers(config, workers)
    heavy_cfg = replace(light_cfg, max_batch_items=1, max_concurrent_batches=heavy_workers,
                        max_queue_items=_HEAVY_QUEUE_ITEMS, max_queue_wait_ms=_HEAVY_QUEUE_WAIT_MS)

    async def run_batch(work: list[Work]) -> list[ItemResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pools.batch, run_work, pipeline, pools.work, work,
                                          clock)

    light = Batcher(run_batch, light_cfg, size_of, light_cfg.max_concurrent_batches, clock,
                    metrics, held)
    heavy = Batcher(run_batch, heavy_cfg, size_of, heavy_workers, clock, metrics, held,
                    lane="heavy")
    return Lanes(light, heavy, pipeline, pools.intake, clock)


@dataclass(frozen=True)
class _Pools:
    """The server's thread pools (see ``App``)."""

    work: ThreadPoolExecutor
    batch: ThreadPoolExecutor
    intake: ThreadPoolExecutor
    lookup: ThreadPoolExecutor

    @classmethod
    def make(cls, config: Config, workers: int, drivers: int) -> _Pools:
        return cls(
            work=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="appliance-work"),
            # Batches at once, in both lanes: each has a driver thread, which waits
            # on the worker pool (hashing, decoding) and, on a GPU, on the device.
            batch=ThreadPoolExecutor(max_workers=drivers, thread_name_prefix="appliance-batch"),
            intake=ThreadPoolExecutor(max_workers=2, thread_name_prefix="appliance-intake"),
            lookup=ThreadPoolExecutor(max_workers=config.server.max_inflight_lookups,
                                      thread_name_prefix="appliance-lookup"),
        )


def _connection_age(config: Config) -> list[tuple[str, int]]:
    """server.max_connection_age_seconds as gRPC's options: after the age a
    GOAWAY, then time for the calls in flight (a stream's whole life) to end."""
    age = config.server.max_connection_age_seconds
    if age <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.limits.stream_max_seconds * 1000))]


def _health_server(servicer: health_aio.HealthServicer, address: str) -> tuple[
        grpc.aio.Server, int]:
    """A second server, plaintext, with the health service alone (same servicer,
    so the same status): Kubernetes' grpc probes speak neither TLS nor tokens.
    It tells SERVING or NOT_SERVING and nothing else: no method that takes or
    gives content or list data is on it, nor reflection."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", 4096), ("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return server, _bind(server, address, what="the health port ")


def _bind(server: grpc.aio.Server, address: str,
          credentials: grpc.ServerCredentials | None = None, what: str = "") -> int:
    """Bind ``server`` to ``address`` (TLS with ``credentials``); its port, or
    ConfigError when the address cannot be had."""
    why = f"cannot bind {what}{address}: in use, or not an address of this machine"
    try:
        port = (server.add_insecure_port(address) if credentials is None
                else server.add_secure_port(address, credentials))
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind ...")
        raise ConfigError(why) from exc
    if port == 0:
        raise ConfigError(why)
    return port


async def create_server(
    config: Config,
    loader: Callable[[Config], Loaded] | None = None,
    metrics_http: bool = True,
    clock: Clock | None = None,
) -> ServerHandle:
    """Build, bind and start a server; the lists load in the background.

    Port 0 in the config binds a free port; the handle says which. ``clock``
    drives the batchers' timers (tests).
    """
    backend = select_backend(config.server.backend, config.gpu)
    metrics = Metrics()
    metrics.backend_info.labels(backend.name, backend.device).set(1)
    workers = config.server.workers or os.cpu_count() or 1
    pipeline = make_pipeline(config, backend, metrics)
    await _warm_up(pipeline)
    catalog = Catalog()
    load = loader or catalog.load

    def load_and_prepare(config: Config) -> Loaded:
        # In the list loader's thread, before the swap: the GPU pipeline uploads
        # the new snapshot here, so no request waits for it.
        loaded = load(config)
        pipeline.prepare_snapshot(loaded.snapshot)
        return loaded

    security = Security.make(config.security, ProbeGuard(
        config.security.probe_band, config.security.probe_budget,
        lambda signal: match_radius(signal, config.matching),
        lambda name: metrics.suspended.labels(name).inc(),
    ))
    check_transport(config, security)
    batching = resolve(config.batching, backend.name, workers)
    pools = _Pools.make(config, workers,
                        batching.max_concurrent_batches + _heavy_workers(config, workers))
    batch_clock = clock or MonotonicClock()
    held = HeldBytes(config.batching.max_inflight_bytes)
    app = App(
        config=config, backend=backend, metrics=metrics, pipeline=pipeline,
        pool=pools.work, batch_pool=pools.batch, intake_pool=pools.intake,
        lookup_pool=pools.lookup,
        lists=ListManager(
            config, metrics, load_and_prepare,
            catalog.fingerprints if loader is None else None,
        ),
        lanes=_lanes(config, backend.name, workers, pipeline, pools, batch_clock, metrics, held),
        clock=batch_clock, held=held, security=security,
        audit=AuditLog(config.server.audit_log) if config.server.audit_log else None,
    )
    limits = config.limits
    # The largest message any configured limit allows, no more: a single-file
    # call cannot make the server receive a 256 MiB message when files are 64 MiB.
    max_message = max(limits.max_file_bytes, limits.max_request_bytes) + _MESSAGE_OVERHEAD
    server = grpc.aio.server(
        # Reflection lists the services: for admin identities only.
        interceptors=[AdminOnly(security, REFLECTION)],
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", limits.max_response_bytes),
            # One server per port: with SO_REUSEPORT (gRPC's default) a second
            # server would bind the same port and split the traffic.
            ("grpc.so_reuseport", 0),
            *_connection_age(config),
        ]
    )
    pb_grpc.add_ApplianceServicer_to_server(ApplianceService(app), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await set_status(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    port = _bind(server, f"{config.server.host}:{config.server.port}",
                 None if security.certificates is None else security.certificates.credentials())
    handle = ServerHandle(server, port, None, app, health_servicer)
    if config.server.health_port:
        handle._health_server, handle.health_port = _health_server(
            health_servicer, f"{config.server.host}:{config.server.health_port}")
    if metrics_http:
        if config.security.metrics_tls:
            handle._metrics_tls = metrics_context(TlsFiles(config.security.tls_cert,
                                                           config.security.tls_key))
        try:
            handle._metrics_server = await start_metrics_server(
                metrics.registry, config.server.host, config.server.metrics_port,
                ssl=handle._metrics_tls,
            )
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {config.server.host}:"
                              f"{config.server.metrics_port}: {exc.strerror or exc}") from exc
        handle.metrics_port = handle._metrics_server.port
    await server.start()
    if handle._health_server is not None:  # started with the server, not before a failed bind
        await handle._health_server.start()
    handle._load_task = asyncio.create_task(first_load(handle))
    tasks = [asyncio.create_task(watch_health(handle))]
    if config.server.watch_lists_seconds > 0:
        tasks.append(asyncio.create_task(app.lists.watch(config.server.watch_lists_seconds)))
    handle._tasks = tuple(tasks)
    return handle


async def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    fix_mmap_threshold()  # large request buffers go back to the system when freed
    handle = await create_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # SIGHUP reloads the lists; a failed reload keeps the old ones serving.
    # Installed before the ready line, so that no SIGHUP sent after it kills us.
    loop.add_signal_handler(
        signal.SIGHUP, lambda: loop.create_task(handle.reload_all("reloaded on SIGHUP"))
    )
    host = config.server.host
    scheme = "https" if config.security.metrics_tls else "http"
    health = f" health={host}:{handle.health_port}" if handle.health_port else ""
    where = (f"grpc={host}:{handle.port}{health} "
             f"metrics={scheme}://{host}:{handle.metrics_port}/metrics "
             f"backend={handle.app.backend.name} ({handle.app.backend.reason}) "
             f"{handle.app.security.describe()}")
    try:
        loaded = await handle.wait_ready()
        log.info("appliance ready: %s lists=%s", where, describe(loaded))
    except RuntimeError as exc:
        # Up, but NOT_SERVING (health, and UNAVAILABLE for matches) until the
        # lists load: an operator fixes the file and reloads, no restart needed,
        # and the ApplianceNotReady alert says so meanwhile.
        log.error("appliance started NOT_SERVING: %s lists did not load: %s; fix them, then "
                  "reload (SIGHUP, ReloadLists or the list watcher)", where, exc)
    await stop.wait()
    log.info("shutting down: draining in-flight requests (grace %.1fs)",
             config.server.grace_seconds)
    await handle.stop()
    return 0
