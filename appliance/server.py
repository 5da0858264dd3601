"""The gRPC server: lifecycle, health, reflection, the metrics endpoint.

``create_server(config)`` builds and starts a server (tests bind port 0 and
talk to it in-process); ``serve(config)`` runs one until SIGTERM or SIGINT.
The health status is NOT_SERVING until the lists are loaded, and again only
when the service truly cannot take work (no decode worker can be started):
overload is answered by shedding requests, never by going unhealthy. Match
and Lookup answer UNAVAILABLE until the lists load; Hash works from the start.
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from appliance.errors import ConfigError, RequestFault
from appliance.index.snapshot import match_radius
from appliance.intake import Lanes, Work, run_work, size_of
from appliance.loading import Catalog, Loaded
from appliance.metrics import Metrics
from appliance.metrics_http import MetricsServer, start_metrics_server
from appliance.pipeline import Pipeline
from appliance.reloader import ListManager, describe
from appliance.results import ItemResult
from appliance.security import ProbeGuard, Security
from appliance.security.tls import TlsFiles, metrics_context
from appliance.servicer import IDENTITY, REQUEST_ID, App, ApplianceService
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from appliance.warmup import compile_kernels

log = logging.getLogger("appliance.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Appliance"].full_name
# Protobuf framing around the file bytes of one request.
_MESSAGE_OVERHEAD = 1 << 20
# How often health looks at the decode workers.
_HEALTH_EVERY = 2.0
# At shutdown, once every admitted RPC has answered: time for the answers to go out.
_FLUSH_SECONDS = 0.5
# A start that takes longer says why (numba compiling after an install). A
# warm start takes 1 to 2 s on two cores (the decode workers' zygote), and
# should not claim to be compiling.
_SLOW_START = 3.0
# The heavy lane's queue: few files, each worth seconds of work.
_HEAVY_QUEUE_ITEMS = 64
_HEAVY_QUEUE_WAIT_MS = 10_000.0

__all__ = ["IDENTITY", "REQUEST_ID", "ServerHandle", "create_server", "serve"]


@dataclass
class ServerHandle:
    """A started server: its ports, its state, and how to stop it."""

    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    app: App
    health: health_aio.HealthServicer
    _metrics_server: MetricsServer | None = None
    _metrics_tls: Any = None
    _tasks: tuple[asyncio.Task[None], ...] = ()
    _load_task: asyncio.Task[None] | None = None
    serving: bool = False

    async def wait_ready(self) -> Loaded:
        """Wait until the lists are loaded; raises RuntimeError if loading failed."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)
        if self.app.lists.loaded is None:
            raise RuntimeError(self.app.lists.error or "lists are not loaded")
        return self.app.lists.loaded

    async def reload(self, reason: str = "reloaded") -> tuple[bool, str]:
        """Reload the lists (SIGHUP, tests); the old snapshot serves until the swap."""
        return await self.app.lists.reload(reason)

    async def reload_all(self, reason: str) -> None:
        """SIGHUP: the identities, the certificates (both ports), the audit log's
        file (logrotate moved it: a new one continues the chain), the lists."""
        app = self.app
        app.security.reload()
        if app.audit is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, app.audit.reopen)
            except Exception as exc:
                log.error("audit log not reopened, the current file is kept: %s", exc)
        if self._metrics_server is not None and self._metrics_tls is not None:
            try:
                files = app.security.config
                self._metrics_tls.load_cert_chain(files.tls_cert, files.tls_key)
            except Exception as exc:
                log.error("metrics TLS certificate not reloaded, the old one serves: %s", exc)
        await self.reload(reason)

    async def set_health(self) -> None:
        """SERVING when the lists are loaded and decoding works, else NOT_SERVING."""
        app = self.app
        healthy = app.pipeline.decoders.healthy
        app.metrics.decode_workers_healthy.set(1 if healthy else 0)
        serving = app.lists.loaded is not None and healthy and not app.closing
        if serving != self.serving:
            self.serving = serving
            status = health_pb2.HealthCheckResponse.SERVING if serving else \
                health_pb2.HealthCheckResponse.NOT_SERVING
            await _set_health(self.health, status)
            if app.lists.loaded is not None and not app.closing:
                log.warning("health: %s", "SERVING again" if serving else
                            "NOT_SERVING: no decode worker can be started")

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, new requests refused (UNAVAILABLE), every
        accepted request finished and answered, within ``grace`` seconds; what is
        still running after that is stopped (decode workers killed) and cancelled."""
        app = self.app
        grace = app.config.server.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        app.closing = True
        for task in (self._load_task, *self._tasks):
            if task is not None and not task.done():
                task.cancel()
        # Drain first, with the server still up: the queue empties and every
        # admitted RPC sends its answer, while new RPCs get a clean UNAVAILABLE.
        # Only then does the gRPC server stop (it cancels what is left).
        end = time.monotonic() + grace
        drain = asyncio.ensure_future(app.lanes.close(drain=True))
        try:
            await asyncio.wait_for(asyncio.shield(drain), timeout=grace)
            while app.admitted and time.monotonic() < end:
                await asyncio.sleep(0.005)
        except TimeoutError:
            pass
        if app.admitted or not drain.done():
            log.warning("shutdown: %d requests still running after %.1f s of grace; "
                        "they are stopped", app.admitted, grace)
        # Out of grace: decodes still running are killed (their files fail at
        # once) and what is still queued is refused, so nothing outlives it.
        app.pipeline.close()
        if not drain.done():
            await app.lanes.close(drain=False)
            await drain
        # Every admitted RPC has answered: what is left (health Watch streams,
        # which never end by themselves) is cancelled after a moment to flush
        # the last answers, rather than holding the exit for the whole grace.
        await self.server.stop(min(_FLUSH_SECONDS, max(0.0, end - time.monotonic())))
        if self._metrics_server is not None:
            await self._metrics_server.close()
        await _shut_down(app, max(1.0, end - time.monotonic()))
        app.lists.close()
        if app.audit is not None:
            await asyncio.get_running_loop().run_in_executor(None, app.audit.close)


async def _shut_down(app: App, timeout: float) -> None:
    """Stop the thread pools, waiting at most ``timeout`` for their threads (with
    decode workers killed they end at once; an inline decode cannot be stopped)."""
    pools = (app.batch_pool, app.pool, app.intake_pool, app.lookup_pool)
    loop = asyncio.get_running_loop()

    def join() -> None:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)

    try:
        await asyncio.wait_for(loop.run_in_executor(None, join), timeout)
    except TimeoutError:
        log.warning("shutdown: worker threads still busy after %.1f s; not waiting", timeout)


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        await servicer.set(service, status)


async def _first_load(handle: ServerHandle) -> None:
    await handle.app.lists.reload("loaded")
    await handle.set_health()


async def _watch_health(handle: ServerHandle) -> None:
    """Health follows the decode workers: when none can be started (the zygote
    fails), NOT_SERVING, and SERVING again once starting them works."""
    loop = asyncio.get_running_loop()
    decoders = handle.app.pipeline.decoders
    while True:
        await asyncio.sleep(_HEALTH_EVERY)
        if not decoders.healthy:
            try:
                await loop.run_in_executor(handle.app.intake_pool, decoders.start)
            except Exception as exc:  # the zygote still cannot start: say so, try again
                log.error("decode workers cannot be started: %s", exc)
        await handle.set_health()


_REFLECTION = "/grpc.reflection."


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(config: Config, security: Security) -> None:
    """Plaintext only on loopback, unless the configuration says a sidecar does TLS."""
    host = config.server.host
    if security.certificates is None and not config.security.allow_insecure \
            and not _loopback(host):
        raise ConfigError(
            f"serving on {host} without TLS: give security.tls_cert and tls_key "
            "(--tls-cert, --tls-key), or set security.allow_insecure = true when a sidecar "
            "or mesh terminates TLS in front of the appliance")


class AdminOnly(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Methods under ``prefix`` (reflection) for identities with the admin scope."""

    def __init__(self, security: Security, prefix: str) -> None:
        self._security = security
        self._prefix = prefix

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefix) \
                or handler.stream_stream is None:
            return handler
        inner, security = handler.stream_stream, self._security

        async def guarded(requests: Any, context: Any) -> Any:
            try:
                identity = security.authenticate(context)
            except RequestFault as fault:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(fault))
            if not identity.allows("admin"):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"reflection is for admin identities; {identity.name!r} "
                                    "is not one")
            async for response in inner(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


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
        interceptors=[AdminOnly(security, _REFLECTION)],
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", limits.max_response_bytes),
            # One server per port: with SO_REUSEPORT (gRPC's default) a second
            # server would bind the same port and split the traffic.
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_ApplianceServicer_to_server(ApplianceService(app), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    address = f"{config.server.host}:{config.server.port}"
    try:
        port = (server.add_insecure_port(address) if security.certificates is None
                else server.add_secure_port(address, security.certificates.credentials()))
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind ...")
        raise ConfigError(f"cannot bind {address}: in use, or not an address of this "
                          "machine") from exc
    if port == 0:
        raise ConfigError(f"cannot bind {address}: in use, or not an address of this machine")
    handle = ServerHandle(server, port, None, app, health_servicer)
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
    handle._load_task = asyncio.create_task(_first_load(handle))
    tasks = [asyncio.create_task(_watch_health(handle))]
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
    where = (f"grpc={host}:{handle.port} metrics={scheme}://{host}:{handle.metrics_port}/metrics "
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
