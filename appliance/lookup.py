"""The Lookup RPC's work: precomputed hashes in, their matches out.

Runs in a thread of its own (the servicer's lookup pool): a Lookup may carry
100,000 hashes, and parsing, matching and answering them is long work that
must not hold the event loop. Values are checked one by one (a bad one is an
error on that hash only), then matched in one query per signal by the match
path of files (``pipeline.match_results``): the same hits, one per entry.
"""

from __future__ import annotations

from functools import partial

from appliance import convert
from appliance import signals as sig
from appliance.errors import ItemCode, ItemFault
from appliance.index.snapshot import Snapshot
from appliance.metrics import Metrics
from appliance.pipeline import Pipeline, match_results
from appliance.results import HashValue, ItemResult
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
) -> tuple[pb.LookupResponse, list[ItemResult]]:
    """The response, and the results to audit: of the hashes that matched (id
    ``lookup[INDEX]``), their hits unredacted.

    With ``guard`` (``identity`` has no ``reveal = "full"``), the hashes are
    also searched ``guard.band`` bits beyond the thresholds, the guard counts
    the probes among all the hits, and the answer's hits are redacted.
    """
    results = [pb.LookupResult(query=h) for h in request.hashes]
    # Each valid hash is a result of its own, grouped by signal (one query per
    # signal), matched as files are.
    by_signal: dict[str, list[tuple[int, ItemResult]]] = {}
    for index, query in enumerate(request.hashes):
        try:
            signal = sig.get(query.signal)
            value = HashValue(signal.name, signal.parse(query.value), _quality(query))
        except ItemFault as fault:
            results[index].error.CopyFrom(pb.ItemError(code=fault.code, message=fault.message))
            metrics.errors.labels(fault.code).inc()
            continue
        by_signal.setdefault(signal.name, []).append(
            (index, ItemResult(id=f"lookup[{index}]", size=0, hashes=[value])))
    queued = [pair for pairs in by_signal.values() for pair in pairs]
    extra = guard.band if guard is not None else 0
    match_results([r for _, r in queued], snapshot, partial(pipeline.lookup, snapshot),
                  [extra] * len(queued))
    matched = [(index, r) for index, r in queued if r.matches]
    if guard is not None:
        guard.observe(identity, [*(hit for _, r in queued for hit in r.near),
                                 *(hit for _, r in matched for hit in r.matches)])
    for index, result in matched:
        shown = result.matches if guard is None else redact(result.matches)
        results[index].matches.extend(convert.hits_to_pb(shown))
        metrics.count_hits(result.matches)
    return pb.LookupResponse(results=results), [r for _, r in matched]
