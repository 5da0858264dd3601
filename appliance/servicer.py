"""The gRPC servicer: admission per class of method, protobuf in and out.

Every RPC passes ``_rpc``: a request id, the shutdown check, and an in-flight
limit of its own class (files, streams, lookups, control), so that stalled
streams or a flood of lookups can never take the slots that GetStatus,
ReloadLists or a small Match need. Health is a separate service with no
limit at all. Work is handed to ``intake`` (lanes, streams) and ``lookup``
(precomputed hashes), off the event loop; faults become gRPC codes here, in
one place.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import grpc

from appliance import __version__, convert
from appliance import signals as sig
from appliance.admission import HeldBytes, Reservation
from appliance.audit import AuditLog
from appliance.backend import Backend
from appliance.batching import Clock
from appliance.config import Config
from appliance.errors import (
    InvalidRequest,
    NotReady,
    Overloaded,
    PermissionDenied,
    RateLimited,
    RequestFault,
    ShuttingDown,
    TooLarge,
)
from appliance.gcpause import no_cycle_collection
from appliance.intake import Lanes, check_item, receive_stream
from appliance.loading import Loaded
from appliance.logs import log_event
from appliance.lookup import lookup
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline
from appliance.reloader import ListManager
from appliance.results import Item, ItemResult
from appliance.security import ANONYMOUS, METHOD_SCOPE, Identity, Security, redact
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc

log = logging.getLogger("appliance.server")

# The id of the request being served: from the client's x-request-id metadata,
# else a new one; it is in the audit log, the logs and the trailing metadata.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The identity the request authenticated as.
IDENTITY: contextvars.ContextVar[Identity] = contextvars.ContextVar("identity", default=ANONYMOUS)
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")

# Each RPC's class: its in-flight limit is its class's (ServerConfig.max_inflight_*).
METHOD_CLASS = {
    "Hash": "files", "Match": "files", "MatchBatch": "files", "MatchStream": "streams",
    "Lookup": "lookups", "GetStatus": "control", "ReloadLists": "control",
}


def _request_id_of(context: Any) -> str:
    """The client's x-request-id when it is a short plain token, else a new id."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128 \
                and set(value) <= _REQUEST_ID_CHARS:
            return value
    return uuid.uuid4().hex


@dataclass
class App:
    """Everything the servicer needs; one per server."""

    config: Config
    backend: Backend
    metrics: Metrics
    pipeline: Pipeline
    # Hashing threads (the pipeline's pool; each waits on a decode worker).
    pool: ThreadPoolExecutor
    # Threads that each drive one batch through the pipeline (they wait on
    # ``pool`` and on the device; kept apart so a driver never waits for a
    # pool slot that another driver holds).
    batch_pool: ThreadPoolExecutor
    # Short work off the event loop: probing files for their lane, stream digests.
    intake_pool: ThreadPoolExecutor
    # Lookups (parsing, matching and answering up to 100,000 hashes).
    lookup_pool: ThreadPoolExecutor
    lists: ListManager
    lanes: Lanes
    clock: Clock
    # Bytes of files held: queued, running, or arriving in streams.
    held: HeldBytes
    # Identities, rate limits, the probe guard, TLS certificates.
    security: Security
    audit: AuditLog | None = None
    inflight: dict[str, int] = field(default_factory=dict)
    # RPCs admitted (past the shutdown and in-flight checks) and not finished.
    admitted: int = 0
    # Set on shutdown: new RPCs are refused with UNAVAILABLE.
    closing: bool = False

    def limit(self, klass: str) -> int:
        s = self.config.server
        return {"files": s.max_inflight_requests, "streams": s.max_inflight_streams,
                "lookups": s.max_inflight_lookups, "control": s.max_inflight_control}[klass]


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _rpc(method: Callable[[Any, Req, Any], Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
    """Admission control, request metrics and the one place faults become codes."""
    name = method.__name__
    klass = METHOD_CLASS[name]
    scope = METHOD_SCOPE[name]

    @functools.wraps(method)
    async def wrapper(self: ApplianceService, request: Req, context: Any) -> Resp:
        app = self.app
        code = "OK"
        started = time.perf_counter()
        rid = _request_id_of(context)
        token = REQUEST_ID.set(rid)
        who = "unauthenticated"  # a metric label: configured names only, never the client's
        identity_token = None
        app.metrics.inflight.inc()
        app.metrics.inflight_by_class.labels(klass).inc()
        app.inflight[klass] = app.inflight.get(klass, 0) + 1
        try:
            context.set_trailing_metadata((("x-request-id", rid),))
            if app.closing:
                app.metrics.shed.labels("shutdown").inc()
                raise ShuttingDown("the server is shutting down")
            identity = app.security.authenticate(context)
            who = identity.name
            identity_token = IDENTITY.set(identity)
            if not identity.allows(scope):
                raise PermissionDenied(f"identity {who!r} lacks the {scope!r} scope ({name})")
            if scope in ("match", "lookup") and who in app.security.guard.suspended:
                raise PermissionDenied(
                    f"identity {who!r} is suspended for probing the lists (too many queries at "
                    "the edge of a match threshold); an operator can lift it")
            if app.inflight[klass] > app.limit(klass):
                app.metrics.shed.labels("inflight").inc()
                raise Overloaded(f"{app.limit(klass)} {klass} requests already in flight "
                                 f"(server.max_inflight_* for {name})")
            app.admitted += 1
            try:
                return await method(self, request, context)
            finally:
                app.admitted -= 1
        except RequestFault as fault:
            code = fault.grpc_code
            if isinstance(fault, RateLimited):
                app.metrics.rate_limited.labels(who).inc()
                if fault.retry_after is not None:
                    # gRPC's retry policy waits this long before its next attempt.
                    pushback = str(max(1, round(fault.retry_after * 1000)))
                    context.set_trailing_metadata(
                        (("x-request-id", rid), ("grpc-retry-pushback-ms", pushback)))
            elif isinstance(fault, TooLarge):
                # The same request would be refused again: gRPC's retry policy
                # does not resend a call whose pushback is negative.
                context.set_trailing_metadata(
                    (("x-request-id", rid), ("grpc-retry-pushback-ms", "-1")))
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
            app.inflight[klass] -= 1
            app.metrics.inflight.dec()
            app.metrics.inflight_by_class.labels(klass).dec()
            app.metrics.requests.labels(name, code).inc()
            app.metrics.requests_by_identity.labels(who, name, code).inc()
            REQUEST_ID.reset(token)
            if identity_token is not None:
                IDENTITY.reset(identity_token)
            # One line per RPC (never content): always when it failed, and for
            # every RPC with server.log_requests.
            quiet = code == "OK" and not app.config.server.log_requests
            log_event(log, logging.DEBUG if quiet else logging.INFO, "rpc",
                      request_id=rid, method=name, code=code, identity=who,
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

    def _items(self, requests: Sequence[pb.FileRequest]) -> list[Item]:
        limit = self.app.config.limits.max_id_chars
        for request in requests:
            check_item(request.id, request.signals, limit)
        self.app.security.rates.check(IDENTITY.get(), "files", len(requests))
        return [convert.item_from_request(r) for r in requests]

    async def _process(
        self, items: Sequence[Item], match: bool, context: Any,
        reservation: Reservation | None = None,
    ) -> list[ItemResult]:
        """Run the items through their lanes; their results, audited when they matched."""
        app = self.app
        identity = IDENTITY.get()
        protected = identity.reveal != "full"
        if protected:
            # Searched beyond the thresholds too: the near hits the probe guard counts.
            items = [replace(i, probe_band=app.security.guard.band) for i in items]
        # One snapshot per request: every item of it is matched against the same version.
        loaded = self._snapshot() if match else None
        results = await app.lanes.run(
            items, loaded.snapshot if loaded is not None else None, match,
            context.time_remaining(), reservation,
        )
        await self._audit(results)
        if protected:
            app.security.guard.observe(identity.name,
                                       [hit for r in results for hit in (*r.matches, *r.near)])
            for result in results:
                result.matches, result.near = redact(result.matches), []
        return results

    async def _audit(self, results: Sequence[ItemResult]) -> None:
        """Record the matches of ``results``; back once they are durable.

        Group commit: the audit log's writer thread writes and fsyncs, once for
        every record of this request (and of the requests beside it); the event
        loop only queues the records and waits for the future.
        """
        audit = self.app.audit
        if audit is not None:
            await asyncio.wrap_future(audit.submit_many(
                REQUEST_ID.get(), [(r.id, r.matches) for r in results if r.matches],
                identity=IDENTITY.get().name))

    # -- RPCs ----------------------------------------------------------------

    @_rpc
    async def Hash(self, request: pb.FileRequest, context: Any) -> pb.FileResponse:
        [result] = await self._process(self._items([request]), match=False, context=context)
        return pb.FileResponse(result=convert.result_to_pb(result))

    @_rpc
    async def Match(self, request: pb.FileRequest, context: Any) -> pb.FileResponse:
        [result] = await self._process(self._items([request]), match=True, context=context)
        return pb.FileResponse(result=convert.result_to_pb(result))

    @_rpc
    async def MatchBatch(self, request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        limits = self.app.config.limits
        if not request.files:
            raise InvalidRequest("the batch has no files")
        if len(request.files) > limits.max_request_files:
            raise TooLarge(f"{len(request.files)} files exceeds "
                           f"limits.max_request_files={limits.max_request_files}")
        total = sum(len(f.content) for f in request.files)
        if total > limits.max_request_bytes:
            raise TooLarge(f"{total} bytes exceeds "
                           f"limits.max_request_bytes={limits.max_request_bytes}")
        results = await self._process(self._items(request.files), match=True, context=context)
        return pb.BatchResponse(results=[convert.result_to_pb(r) for r in results])

    @_rpc
    async def MatchStream(self, request_iterator: Any, context: Any) -> pb.FileResponse:
        self._snapshot()  # refuse before the upload, not after it
        app = self.app
        app.security.rates.check(IDENTITY.get(), "files", 1)
        reservation = Reservation(app.held)
        try:
            item = await receive_stream(request_iterator, app.config.limits, reservation,
                                        app.intake_pool, app.metrics)
            # The stream's bytes are held already: its lane adopts them.
            [result] = await self._process([item], match=True, context=context,
                                           reservation=reservation)
        finally:
            reservation.release()  # what the lane did not adopt (a refusal, a timeout)
        return pb.FileResponse(result=convert.result_to_pb(result))

    @_rpc
    async def Lookup(self, request: pb.LookupRequest, context: Any) -> pb.LookupResponse:
        loaded = self._snapshot()
        if not request.hashes:
            raise InvalidRequest("the lookup has no hashes")
        max_hashes = self.app.config.limits.max_lookup_hashes
        if len(request.hashes) > max_hashes:
            raise TooLarge(f"{len(request.hashes)} hashes exceeds "
                           f"limits.max_lookup_hashes={max_hashes}")
        app = self.app
        identity = IDENTITY.get()
        app.security.rates.check(identity, "lookups", len(request.hashes))
        loop = asyncio.get_running_loop()
        guard = None if identity.reveal == "full" else app.security.guard
        # Parsing, matching and building the answer take a thread: a Lookup of
        # 100,000 hashes is long work, and the event loop serves every RPC.
        with no_cycle_collection():  # 100,000 results, freed before it runs again
            response, matched = await loop.run_in_executor(
                app.lookup_pool, lookup, app.pipeline, loaded.snapshot, request, app.metrics,
                guard, identity.name,
            )
            await self._audit(matched)
            del matched
        return response

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
            response.lists.extend(list_status(app.lists.loaded, IDENTITY.get().allows("admin")))
        return response

    @_rpc
    async def ReloadLists(self, request: pb.ReloadRequest, context: Any) -> pb.ReloadResponse:
        ok, message = await self.app.lists.reload("reloaded by ReloadLists")
        response = pb.ReloadResponse(ok=ok, message=message)
        if self.app.lists.loaded is not None:
            response.lists.extend(list_status(self.app.lists.loaded))
        return response


def list_status(loaded: Loaded, admin: bool = True) -> list[pb.ListStatus]:
    """The lists' status; where they were loaded from only for ``admin``."""
    counts = loaded.snapshot.entry_counts()
    return [
        pb.ListStatus(
            name=index.name,
            version=index.hash_list.version,
            source=loaded.sources.get(index.name, "") if admin else "",
            entries={s: n for (lst, s), n in counts.items() if lst == index.name},
            kind=index.kind,
        )
        for index in loaded.snapshot.indexes
    ]
