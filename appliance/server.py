"""The gRPC server: servicer, health, reflection, metrics endpoint, lifecycle.

``create_server(config)`` builds and starts a server (tests bind port 0 and
talk to it in-process); ``serve(config)`` runs one until SIGTERM or SIGINT.
The health status is NOT_SERVING until the lists are loaded; Match and Lookup
answer UNAVAILABLE until then, Hash works from the start.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The asyncio health servicer; the package re-exports it without declaring so.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from appliance import __version__, convert
from appliance import signals as sig
from appliance.audit import AuditLog
from appliance.backend import Backend, make_pipeline, select_backend
from appliance.batching import Batcher, Clock, MonotonicClock, resolve
from appliance.config import Config
from appliance.errors import (
    ConfigError,
    InvalidRequest,
    ItemCode,
    ItemFault,
    NotReady,
    Overloaded,
    RequestFault,
    ShuttingDown,
)
from appliance.hashers.digests import Digester
from appliance.index.snapshot import Hit, Snapshot
from appliance.loading import Catalog, Loaded
from appliance.logs import log_event
from appliance.metrics import Metrics
from appliance.pipeline import Item, ItemError, ItemResult, Pipeline, suppress_allowed
from appliance.reloader import ListManager, describe
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc

log = logging.getLogger("appliance.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Appliance"].full_name
# Protobuf framing around the file bytes of one request.
_MESSAGE_OVERHEAD = 1 << 20
# Precomputed hashes in one Lookup.
MAX_LOOKUP_HASHES = 100_000

# The id of the request being served: from the client's x-request-id metadata,
# else a new one; it is in the audit log, the logs and the trailing metadata.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _request_id_of(context: Any) -> str:
    """The client's x-request-id when it is a short plain token, else a new id."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128 \
                and set(value) <= _REQUEST_ID_CHARS:
            return value
    return uuid.uuid4().hex


Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Work:
    """One file in the batcher's queue, with the snapshot its request matches
    against (taken once per request, so a reload never splits a request)."""

    item: Item
    snapshot: Snapshot | None
    # The request's deadline on the batcher's clock, if it has one.
    deadline: float | None = None


def run_work(
    pipeline: Pipeline, pool: Executor, work: Sequence[Work], clock: Clock
) -> list[ItemResult]:
    """One batch from the batcher through the pipeline: usually one snapshot,
    two only while a reload swaps them (each part runs on its own).

    Files whose request's deadline has already passed are not processed: their
    caller has been answered DEADLINE_EXCEEDED by gRPC, and under overload
    that work would only delay the requests that can still be answered in time.
    """
    results: list[ItemResult | None] = [None] * len(work)
    groups: dict[int, list[int]] = {}
    now = clock.now()
    for i, w in enumerate(work):
        if w.deadline is not None and w.deadline <= now:
            results[i] = ItemResult(id=w.item.id, size=len(w.item.content), error=ItemError(
                ItemCode.DEADLINE_EXCEEDED, "the request's deadline passed before this file ran"))
            continue
        groups.setdefault(id(w.snapshot), []).append(i)
    for positions in groups.values():
        snapshot = work[positions[0]].snapshot
        done = pipeline.run([work[i].item for i in positions], snapshot, pool)
        for i, result in zip(positions, done, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _size_of(work: Work) -> int:
    return len(work.item.content)


@dataclass
class App:
    """Everything the servicer needs; one per server."""

    config: Config
    backend: Backend
    metrics: Metrics
    pipeline: Pipeline
    # Hashing and decoding threads (the pipeline's pool).
    pool: ThreadPoolExecutor
    # Threads that each drive one batch through the pipeline (they wait on
    # ``pool`` and on the device; kept apart so a driver never waits for a
    # pool slot that another driver holds).
    batch_pool: ThreadPoolExecutor
    lists: ListManager
    batcher: Batcher[Work, ItemResult]
    clock: Clock
    audit: AuditLog | None = None
    inflight: int = 0
    # RPCs admitted (past the shutdown and in-flight checks) and not finished.
    admitted: int = 0
    # Set on shutdown: new RPCs are refused with UNAVAILABLE.
    closing: bool = False


def _rpc(method: Callable[[Any, Req, Any], Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
    """Admission control, request metrics and the one place faults become codes."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: ApplianceService, request: Req, context: Any) -> Resp:
        app = self.app
        code = "OK"
        started = time.perf_counter()
        rid = _request_id_of(context)
        token = REQUEST_ID.set(rid)
        app.metrics.inflight.inc()
        app.inflight += 1
        try:
            context.set_trailing_metadata((("x-request-id", rid),))
            if app.closing:
                app.metrics.shed.labels("shutdown").inc()
                raise ShuttingDown("the server is shutting down")
            if app.inflight > app.config.server.max_inflight_requests:
                app.metrics.shed.labels("inflight").inc()
                raise Overloaded(
                    f"{app.config.server.max_inflight_requests} requests already in flight"
                )
            app.admitted += 1
            try:
                return await method(self, request, context)
            finally:
                app.admitted -= 1
        except RequestFault as fault:
            code = fault.grpc_code
            await context.abort(getattr(grpc.StatusCode, code), str(fault))
            raise  # unreachable: abort raises
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:  # a bug: say INTERNAL, keep serving, log the trace
            code = "INTERNAL"
            log.exception("%s failed", name, extra={"request_id": rid})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            raise
        finally:
            app.inflight -= 1
            app.metrics.inflight.dec()
            app.metrics.requests.labels(name, code).inc()
            REQUEST_ID.reset(token)
            # One line per RPC (never content): always when it failed, and for
            # every RPC with server.log_requests.
            quiet = code == "OK" and not app.config.server.log_requests
            log_event(log, logging.DEBUG if quiet else logging.INFO, "rpc",
                      request_id=rid, method=name, code=code,
                      seconds=round(time.perf_counter() - started, 6))

    return wrapper


class ApplianceService(pb_grpc.ApplianceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    # -- shared work ---------------------------------------------------------

    def _snapshot(self) -> Loaded:
        loaded = self.app.lists.loaded
        if loaded is None:
            error = self.app.lists.error
            raise NotReady(f"hash lists are not loaded yet{': ' + error if error else ''}")
        return loaded

    async def _process(
        self, items: Sequence[Item], match: bool, context: Any
    ) -> list[ItemResult]:
        """Queue the items in the batcher; their results once their batches ran."""
        app, loop = self.app, asyncio.get_running_loop()
        # One snapshot per request: every item of it is matched against the same version.
        loaded = self._snapshot() if match else None
        snapshot = loaded.snapshot if loaded is not None else None
        request_id = REQUEST_ID.get()
        if not match:
            items = [replace(i, match=False) for i in items]
        remaining = context.time_remaining()
        deadline = None if remaining is None else app.clock.now() + remaining
        results = await app.batcher.submit(
            [Work(i, snapshot, deadline) for i in items], deadline
        )
        if app.audit is not None:
            for result in results:
                if result.matches:
                    await loop.run_in_executor(
                        None, app.audit.record, request_id, result.id, result.matches
                    )
        return results

    # -- RPCs ----------------------------------------------------------------

    @_rpc
    async def Hash(self, request: pb.FileRequest, context: Any) -> pb.FileResponse:
        [result] = await self._process(
            [convert.item_from_request(request)], match=False, context=context
        )
        return pb.FileResponse(result=convert.result_to_pb(result))

    @_rpc
    async def Match(self, request: pb.FileRequest, context: Any) -> pb.FileResponse:
        [result] = await self._process(
            [convert.item_from_request(request)], match=True, context=context
        )
        return pb.FileResponse(result=convert.result_to_pb(result))

    @_rpc
    async def MatchBatch(self, request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        limits = self.app.config.limits
        if not request.files:
            raise InvalidRequest("the batch has no files")
        if len(request.files) > limits.max_batch_files:
            raise Overloaded(
                f"{len(request.files)} files exceeds max_batch_files={limits.max_batch_files}"
            )
        total = sum(len(f.content) for f in request.files)
        if total > limits.max_batch_bytes:
            raise Overloaded(f"{total} bytes exceeds max_batch_bytes={limits.max_batch_bytes}")
        items = [convert.item_from_request(f) for f in request.files]
        results = await self._process(items, match=True, context=context)
        return pb.BatchResponse(results=[convert.result_to_pb(r) for r in results])

    @_rpc
    async def MatchStream(self, request_iterator: Any, context: Any) -> pb.FileResponse:
        limit = self.app.config.limits.max_stream_bytes
        self._snapshot()  # refuse before the upload, not after it
        first: pb.Chunk | None = None
        digester = Digester()
        chunks: list[bytes] = []
        async for chunk in request_iterator:
            if first is None:
                first = chunk
            if digester.nbytes + len(chunk.data) > limit:
                chunks.clear()  # nothing of a refused upload is kept
                raise Overloaded(f"the stream exceeds max_stream_bytes={limit}")
            # Digests advance as the chunks arrive: no second pass over the bytes.
            digester.update(chunk.data)
            chunks.append(chunk.data)
        if first is None:
            raise InvalidRequest("the stream has no chunks")
        content = b"".join(chunks)
        chunks.clear()
        item = Item(
            first.id, content, tuple(first.signals), digests=digester.digests(), streamed=True
        )
        [result] = await self._process([item], match=True, context=context)
        return pb.FileResponse(result=convert.result_to_pb(result))

    @_rpc
    async def Lookup(self, request: pb.LookupRequest, context: Any) -> pb.LookupResponse:
        loaded = self._snapshot()
        if not request.hashes:
            raise InvalidRequest("the lookup has no hashes")
        if len(request.hashes) > MAX_LOOKUP_HASHES:
            raise Overloaded(f"{len(request.hashes)} hashes exceeds {MAX_LOOKUP_HASHES}")
        results = [pb.LookupResult(query=h) for h in request.hashes]
        by_signal: dict[str, list[tuple[int, bytes, int | None]]] = {}
        for index, query in enumerate(request.hashes):
            try:
                signal = sig.get(query.signal)
                value = signal.parse(query.value)
            except ItemFault as fault:
                results[index].error.CopyFrom(pb.ItemError(code=fault.code, message=fault.message))
                self.app.metrics.errors.labels(fault.code).inc()
                continue
            quality = query.quality if query.HasField("quality") else None
            by_signal.setdefault(signal.name, []).append((index, value, quality))
        loop = asyncio.get_running_loop()
        hits: dict[int, list[Hit]] = {}
        for name, queries in by_signal.items():
            per_query = await loop.run_in_executor(
                self.app.pool,
                self.app.pipeline.lookup,
                loaded.snapshot,
                name,
                [v for _, v, _ in queries],
                [q for _, _, q in queries],
            )
            hits.update((index, h) for (index, _, _), h in zip(queries, per_query, strict=True))
        request_id = REQUEST_ID.get()
        for index, found in hits.items():
            found = suppress_allowed(found)
            results[index].matches.extend(convert.hits_to_pb(found))
            self.app.metrics.count_hits(found)
            if found and self.app.audit is not None:
                self.app.audit.record(request_id, f"lookup[{index}]", found)
        return pb.LookupResponse(results=results)

    @_rpc
    async def GetStatus(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        app = self.app
        response = pb.StatusResponse(
            backend=app.backend.name,
            device=app.backend.device,
            ready=app.lists.loaded is not None,
            version=__version__,
            signals=list(sig.SIGNALS),
            pdq_threshold=app.config.matching.pdq_threshold,
            pdq_quality_min=app.config.matching.pdq_quality_min,
        )
        if app.lists.loaded is not None:
            response.lists.extend(_list_status(app.lists.loaded))
        return response

    @_rpc
    async def ReloadLists(self, request: pb.ReloadRequest, context: Any) -> pb.ReloadResponse:
        ok, message = await self.app.lists.reload("reloaded by ReloadLists")
        response = pb.ReloadResponse(ok=ok, message=message)
        if self.app.lists.loaded is not None:
            response.lists.extend(_list_status(self.app.lists.loaded))
        return response


def _list_status(loaded: Loaded) -> list[pb.ListStatus]:
    counts = loaded.snapshot.entry_counts()
    return [
        pb.ListStatus(
            name=index.name,
            version=index.hash_list.version,
            source=loaded.sources.get(index.name, ""),
            entries={s: n for (lst, s), n in counts.items() if lst == index.name},
            kind=index.kind,
        )
        for index in loaded.snapshot.indexes
    ]


@dataclass
class ServerHandle:
    """A started server: its ports, its state, and how to stop it."""

    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    app: App
    health: health_aio.HealthServicer
    _httpd: Any = None
    _load_task: asyncio.Task[None] | None = None
    _watch_task: asyncio.Task[None] | None = None

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

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, new requests refused (UNAVAILABLE), every
        accepted request finished and answered, within ``grace`` seconds; what is
        still running after that is cancelled."""
        grace = self.app.config.server.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self.app.closing = True
        for task in (self._load_task, self._watch_task):
            if task is not None and not task.done():
                task.cancel()
        # Drain first, with the server still up: the queue empties and every
        # admitted RPC sends its answer, while new RPCs get a clean UNAVAILABLE.
        # Only then does the gRPC server stop (it cancels what is left).
        end = time.monotonic() + grace
        drain = asyncio.ensure_future(self.app.batcher.close(drain=True))
        try:
            await asyncio.wait_for(asyncio.shield(drain), timeout=grace)
            while self.app.admitted and time.monotonic() < end:
                await asyncio.sleep(0.005)
        except TimeoutError:
            pass
        if self.app.admitted:
            log.warning("shutdown: %d requests still running after %.1f s of grace; "
                        "they are cancelled", self.app.admitted, grace)
        await self.server.stop(max(0.0, end - time.monotonic()))
        if not drain.done():
            # Out of grace: what is still queued is refused; running batches end.
            await self.app.batcher.close(drain=False)
            await drain
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.app.batch_pool.shutdown(wait=True, cancel_futures=True)
        self.app.pool.shutdown(wait=True, cancel_futures=True)
        self.app.lists.close()
        if self.app.audit is not None:
            self.app.audit.close()


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        await servicer.set(service, status)


async def _first_load(handle: ServerHandle) -> None:
    ok, _ = await handle.app.lists.reload("loaded")
    if ok:
        await _set_health(handle.health, health_pb2.HealthCheckResponse.SERVING)


async def create_server(
    config: Config,
    loader: Callable[[Config], Loaded] | None = None,
    metrics_http: bool = True,
    clock: Clock | None = None,
) -> ServerHandle:
    """Build, bind and start a server; the lists load in the background.

    Port 0 in the config binds a free port; the handle says which. ``clock``
    drives the batcher's timers (tests).
    """
    backend = select_backend(config.server.backend, config.gpu)
    metrics = Metrics()
    metrics.backend_info.labels(backend.name, backend.device).set(1)
    workers = config.server.workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="appliance-work")
    pipeline = make_pipeline(config, backend, metrics)
    catalog = Catalog()
    load = loader or catalog.load

    def load_and_prepare(config: Config) -> Loaded:
        # In the list loader's thread, before the swap: the GPU pipeline uploads
        # the new snapshot here, so no request waits for it.
        loaded = load(config)
        pipeline.prepare_snapshot(loaded.snapshot)
        return loaded

    # Batches run at once: each has a driver thread, which waits on the worker
    # pool (hashing, decoding) and, on a GPU, on the device.
    batching = resolve(config.batching, backend.name, workers)
    concurrency = batching.max_concurrent_batches
    batch_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="appliance-batch")

    batch_clock: Clock = clock or MonotonicClock()

    async def run_batch(work: list[Work]) -> list[ItemResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            batch_pool, run_work, pipeline, pool, work, batch_clock
        )

    app = App(
        config=config,
        backend=backend,
        metrics=metrics,
        pipeline=pipeline,
        pool=pool,
        batch_pool=batch_pool,
        lists=ListManager(
            config, metrics, load_and_prepare,
            catalog.fingerprints if loader is None else None,
        ),
        batcher=Batcher(run_batch, batching, _size_of, concurrency, batch_clock, metrics),
        clock=batch_clock,
        audit=AuditLog(config.server.audit_log) if config.server.audit_log else None,
    )
    limits = config.limits
    max_message = max(limits.max_file_bytes, limits.max_batch_bytes) + _MESSAGE_OVERHEAD
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", 64 << 20),
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
    port = server.add_insecure_port(f"{config.server.host}:{config.server.port}")
    if port == 0:
        raise ConfigError(f"cannot bind {config.server.host}:{config.server.port}")
    handle = ServerHandle(server, port, None, app, health_servicer)
    if metrics_http:
        httpd, _ = start_http_server(
            config.server.metrics_port, addr=config.server.host, registry=metrics.registry
        )
        handle._httpd = httpd
        handle.metrics_port = httpd.server_port
    await server.start()
    handle._load_task = asyncio.create_task(_first_load(handle))
    if config.server.watch_lists_seconds > 0:
        handle._watch_task = asyncio.create_task(
            app.lists.watch(config.server.watch_lists_seconds)
        )
    return handle


async def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    handle = await create_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # SIGHUP reloads the lists; a failed reload keeps the old ones serving.
    # Installed before the ready line, so that no SIGHUP sent after it kills us.
    loop.add_signal_handler(
        signal.SIGHUP, lambda: loop.create_task(handle.reload("reloaded on SIGHUP"))
    )
    try:
        loaded = await handle.wait_ready()
    except RuntimeError as exc:
        log.error("not starting: %s", exc)
        await handle.stop(0)
        return 2
    host = config.server.host
    log.info(
        "appliance ready: grpc=%s:%d metrics=http://%s:%s/metrics backend=%s (%s) lists=%s",
        host, handle.port, host, handle.metrics_port, handle.app.backend.name,
        handle.app.backend.reason, describe(loaded),
    )
    await stop.wait()
    log.info("shutting down: draining in-flight requests (grace %.1fs)",
             config.server.grace_seconds)
    await handle.stop()
    return 0
