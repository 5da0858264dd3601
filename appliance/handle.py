"""A started gRPC server's handle: health, reload, graceful stop.

``ServerHandle`` is what ``server.create_server`` returns: the ports, the
``App``, the health servicer, the background tasks (first list load, health
watch, list watch) and the graceful ``stop``. The health status is
NOT_SERVING until the lists are loaded, and again only when the service truly
cannot take work (no decode worker can be started): overload is answered by
shedding requests, never by going unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

# The asyncio health servicer; the package re-exports it without declaring so.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from appliance.loading import Loaded
from appliance.metrics_http import MetricsServer
from appliance.servicer import App
from appliance.v1 import appliance_pb2 as pb

# The server's lifecycle logs as the server does.
log = logging.getLogger("appliance.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Appliance"].full_name
# How often health looks at the decode workers.
_HEALTH_EVERY = 2.0
# At shutdown, once every admitted RPC has answered: time for the answers to go out.
_FLUSH_SECONDS = 0.5


@dataclass
class ServerHandle:
    """A started server: its ports, its state, and how to stop it."""

    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    app: App
    health: health_aio.HealthServicer
    _metrics_server: MetricsServer | None = None
    # The plaintext health-only server (server.health_port), and its port.
    _health_server: grpc.aio.Server | None = None
    health_port: int | None = None
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
            await set_status(self.health, status)
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
        if self._health_server is not None:
            await self._health_server.stop(0)
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


async def set_status(servicer: health_aio.HealthServicer, status: int) -> None:
    """Health ``status`` for the whole server ("") and for the Appliance service."""
    for service in ("", SERVICE_NAME):
        await servicer.set(service, status)


async def first_load(handle: ServerHandle) -> None:
    """The lists' first load, in the background; health follows it."""
    await handle.app.lists.reload("loaded")
    await handle.set_health()


async def watch_health(handle: ServerHandle) -> None:
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
