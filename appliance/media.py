"""Which signals a file gets, and the video stage of the pipeline.

A request that names no signal gets the defaults of what the file is: a
video (by its container's first bytes: MP4/MOV, Matroska/WebM, AVI) gets the
digests and the video signals, anything else the digests and the image
signals. A GIF is an image by default (PDQ of its first frame, as the image
lists hash it); naming a video signal hashes it as a video too. Signals
named explicitly are all attempted, and one that does not apply to the file
is skipped with its reason (NOT_AN_IMAGE, NOT_A_VIDEO).

The video stage runs where pictures are decoded (``appliance.sandbox``: a
worker process by default), under the decode budget like a picture, with
the video limits (``limits.max_video_*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from appliance import signals as sig
from appliance.errors import ItemFault
from appliance.hashers.video import VideoJob
from appliance.results import Item, ItemResult
from appliance.video.decode import sniff
from appliance.video.limits import VideoLimits, decode_memory

if TYPE_CHECKING:
    from appliance.pipeline import Pipeline
    from appliance.work import Work

# Containers that make a file a video by default (a GIF stays an image).
_VIDEO_BY_DEFAULT = ("mov", "matroska", "avi")


def is_video(content: bytes | memoryview) -> bool:
    """Whether the file's first bytes are a video container of the allow-list
    (other than GIF)."""
    try:
        return sniff(content) in _VIDEO_BY_DEFAULT
    except ItemFault:
        return False


def wanted_signals(item: Item) -> tuple[str, ...]:
    """The signals to compute for ``item``, in registry order (see the module
    docstring for the defaults). Raises ItemFault for an unknown or
    uncomputable name."""
    wanted = sig.select_computable(item.signals)
    if any(n.strip() for n in item.signals):
        return wanted
    skip = "image" if is_video(item.content) else "video"
    return tuple(n for n in wanted if sig.SIGNALS[n].media != skip)


def video_limits(limits: VideoLimits) -> VideoLimits:
    """The plain ``VideoLimits`` of a ``LimitsConfig`` (which has their fields)."""
    return VideoLimits(**{f.name: getattr(limits, f.name) for f in fields(VideoLimits)})


def hash_video(pipeline: Pipeline, item: Item, names: Sequence[str], result: ItemResult,
               work: Work) -> None:
    """The video signals ``names`` of ``item``: admitted to the decode budget,
    decoded once where pictures are decoded; a fault skips them all."""
    limits = video_limits(pipeline.limits)
    memory = decode_memory(limits)
    job = VideoJob.of(tuple(names), pipeline.hashing)
    try:
        with pipeline.budget.hold(memory, pipeline.wait_until(item)):
            out = pipeline.decoders.run_video(item.content, job, limits, memory, item.deadline,
                                              pipeline.video_sink(job.names))
    except ItemFault as fault:
        result.skip(names, fault)
        return
    if pipeline.metrics is not None:
        pipeline.metrics.stage_seconds.labels("video_decode").observe(out.decode_seconds)
        pipeline.metrics.stage_seconds.labels("video_hash").observe(out.hash_seconds)
        if out.peak_bytes:
            pipeline.metrics.decode_peak.observe(out.peak_bytes)
    work.video_hashes = list(out.hashes)
