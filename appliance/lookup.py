"""The Lookup RPC's work: precomputed hashes in, their matches out.

Runs in a thread of its own (the servicer's lookup pool): a Lookup may carry
100,000 hashes, and parsing, matching and answering them is long work that
must not hold the event loop. Values are checked one by one (a bad one is an
error on that hash only), then matched in one query per signal.
"""

from __future__ import annotations

from appliance import convert
from appliance import signals as sig
from appliance.errors import ItemCode, ItemFault
from appliance.index.snapshot import Hit, Snapshot, match_radius
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline, suppress_allowed
from appliance.security import ProbeGuard, redact
from appliance.v1 import appliance_pb2 as pb


def _quality(query: pb.Hash) -> int | None:
    if not query.HasField("quality"):
        return None
    if not 0 <= query.quality <= 100:
        raise ItemFault(ItemCode.MALFORMED_HASH, f"quality must be 0..100, got {query.quality}")
    return query.quality


def lookup(
    pipeline: Pipeline, snapshot: Snapshot, request: pb.LookupRequest, metrics: Metrics,
    guard: ProbeGuard | None = None, identity: str = "",
) -> tuple[pb.LookupResponse, list[tuple[int, list[Hit]]]]:
    """The response, and the hits to audit: (index of the hash, its hits).

    With ``guard`` (``identity`` has no ``reveal = "full"``), the hashes are
    also searched ``guard.band`` bits beyond the thresholds, the guard counts
    the probes among all the hits, and the answer's hits are redacted.
    """
    results = [pb.LookupResult(query=h) for h in request.hashes]
    by_signal: dict[str, list[tuple[int, bytes, int | None]]] = {}
    for index, query in enumerate(request.hashes):
        try:
            signal = sig.get(query.signal)
            value = signal.parse(query.value)
            quality = _quality(query)
        except ItemFault as fault:
            results[index].error.CopyFrom(pb.ItemError(code=fault.code, message=fault.message))
            metrics.errors.labels(fault.code).inc()
            continue
        by_signal.setdefault(signal.name, []).append((index, value, quality))
    audited: list[tuple[int, list[Hit]]] = []
    near: list[Hit] = []
    extra = guard.band if guard is not None else 0
    for name, queries in by_signal.items():
        per_query = pipeline.lookup(
            snapshot, name, [v for _, v, _ in queries], [q for _, _, q in queries], extra
        )
        radius = match_radius(name, snapshot.matching)
        for (index, _, _), found in zip(queries, per_query, strict=True):
            near.extend(h for h in found if h.distance > radius)
            found = [h for h in found if h.distance <= radius]
            if found:
                audited.append((index, suppress_allowed(found)))
    if guard is not None:
        guard.observe(identity, [*near, *(hit for _, hits in audited for hit in hits)])
    for index, found in audited:
        shown = found if guard is None else redact(found)
        results[index].matches.extend(convert.hits_to_pb(shown))
        metrics.count_hits(found)
    return pb.LookupResponse(results=results), audited
