"""vPDQ: PDQ hashes of a video's frames, one a second, as ThreatExchange and HMA share them.

A value is the hashed frames (``appliance.video.vpdq_format``), written as
python-threatexchange's ``VPDQSignal`` string: a JSON array of
``"<pdq hex>,<quality>,<timestamp>"``. Frames are sampled every
``seconds_per_hash`` (the reference's default, 1) by frame number, and
matched as python-threatexchange matches them: frames under quality 50
dropped, a frame matching within Hamming distance 31, the video matching
when at least 80 % of the query's frames and at least 0 % of the entry's
match; a hit reports both percentages and where the matched frames lie.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.signals.base import Option, SignalType, threshold
from appliance.video import vpdq_format


@dataclass(frozen=True)
class VpdqSignal(SignalType):
    """vPDQ values are JSON text, not hex, and a value is one record per frame."""

    @property
    def hex_values(self) -> bool:
        return False

    def parse(self, text: str) -> bytes:
        return vpdq_format.parse_signal(text)

    def format(self, value: bytes) -> str:
        return vpdq_format.format_signal(value)


SIGNAL = VpdqSignal(
    name="vpdq",
    nbytes=vpdq_format.FRAME_BYTES,
    framed=True,
    media="video",
    match="frames",
    group="video",
    description="vPDQ: PDQ and quality of sampled video frames (VPDQSignal JSON)",
    examples=('["f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,100,0.0", '
              '"f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b23,92,1.0"]',
              '["07070f311f0b57b0f9c8f5ddfc709c0f4c91d12a699de1e2cc194c63b16364dd,100,0.0"]'),
    by_default=True,
    cpu_hasher="appliance.hashers.video:hash_video",
    options=(
        # A frame matches a frame of the other video within this Hamming distance.
        threshold(31, 256, "vPDQ frame match distance (default {default})", "--vpdq-threshold"),
        # Frames under this quality take no part (python-threatexchange: 50).
        Option("quality_min", 50, "skip vPDQ frames below this quality (default {default})",
               "--vpdq-quality-min", low=0, high=100),
        # The video matches when this share of the query's frames matched ...
        Option("query_percent", 80.0, "vPDQ: percent of the query's frames that must match "
               "(default {default})", "--vpdq-query-percent", low=0, high=100),
        # ... and this share of the list entry's frames.
        Option("compared_percent", 0.0, "vPDQ: percent of the list entry's frames that must "
               "match (default {default})", "--vpdq-compared-percent", low=0, high=100),
        # One frame hashed every this many seconds (0: every frame).
        Option("seconds_per_hash", 1.0, "vPDQ: seconds between hashed frames, 0 for every "
               "frame (default {default})", "--vpdq-seconds-per-hash", section="hashing",
               low=0, high=3600),
    ),
)
