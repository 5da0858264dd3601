"""Protobuf <-> internal objects; the servicer does nothing else with messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.results import HashValue, Hit, Item, ItemError, ItemResult
from appliance.v1 import appliance_pb2 as pb


def item_from_request(request: pb.FileRequest) -> Item:
    return Item(id=request.id, content=request.content, signals=tuple(request.signals))


def hash_to_pb(value: HashValue) -> pb.Hash:
    message = pb.Hash(signal=value.signal, value=value.hex, variant=value.variant)
    if value.quality is not None:
        message.quality = value.quality
    return message


def error_to_pb(error: ItemError) -> pb.ItemError:
    return pb.ItemError(code=error.code, message=error.message)


def hit_to_pb(hit: Hit) -> pb.MatchHit:
    return pb.MatchHit(
        signal=hit.signal,
        list=hit.list,
        list_version=hit.list_version,
        entry_id=hit.entry_id,
        category=hit.category,
        distance=hit.distance,
        query=hit.query,
        variant=hit.variant,
        kind=hit.kind,
        suppressed=hit.suppressed,
        scores=dict(hit.scores),
    )


def hits_to_pb(hits: Iterable[Hit]) -> list[pb.MatchHit]:
    return [hit_to_pb(h) for h in hits]


def result_to_pb(result: ItemResult) -> pb.FileResult:
    message = pb.FileResult(
        id=result.id,
        size=result.size,
        hashes=[hash_to_pb(h) for h in result.hashes],
        matches=hits_to_pb(result.matches),
        matched=result.matched,
        skipped=[pb.SkippedSignal(signal=name, reason=error_to_pb(reason))
                 for name, reason in result.skipped.items()],
    )
    if result.error is not None:
        message.error.CopyFrom(error_to_pb(result.error))
    return message


def result_json(name: str, result: pb.FileResult, with_matches: bool) -> dict[str, Any]:
    """The CLI's JSON object for one FileResult (same shape as the local commands)."""
    out: dict[str, Any] = {"file": name}
    if result.HasField("error"):
        out["error"] = {"code": result.error.code, "message": result.error.message}
        return out
    for h in result.hashes:
        if h.variant:
            # e.g. "pdq_variants": {"rot90": ..., "exif": ...}
            out.setdefault(f"{h.signal}_variants", {})[h.variant] = h.value
            continue
        out[h.signal] = h.value
        if h.HasField("quality"):
            out[f"{h.signal}_quality"] = h.quality
    if result.skipped:
        out["skipped"] = {
            s.signal: {"code": s.reason.code, "message": s.reason.message} for s in result.skipped
        }
    if with_matches:
        # matched: a block-list hit that no allow list vouched for, as the API says.
        out["matched"] = result.matched
        out["matches"] = [_hit_json(m) for m in result.matches]
    return out


def _hit_json(hit: pb.MatchHit) -> dict[str, Any]:
    out: dict[str, Any] = {
        "signal": hit.signal, "list": hit.list, "list_version": hit.list_version,
        "entry_id": hit.entry_id, "category": hit.category, "distance": hit.distance,
        "query": hit.query,
    }
    if hit.variant:
        out["variant"] = hit.variant
    out["kind"] = hit.kind or "block"
    out["suppressed"] = hit.suppressed
    if hit.scores:
        out["scores"] = {k: round(v, 6) for k, v in sorted(hit.scores.items())}
    return out
