"""TMK+PDQF: Meta's temporal match kernel of a video, as NCMEC and StopNCII share it.

A value is a ``.tmk`` file of the reference's layout (263,344 bytes,
``appliance.video.tmk_format``), written as its standard base64 (with
padding): the reference's ``tmk-hash-video`` output, so values move between
the appliance and the reference tools both ways. Matching is the
reference's two levels: the cosine of the pure averages at least ``level1``,
then the level-2 score at least ``level2`` (0.7 and 0.7, its defaults);
a hit reports both.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.signals.base import Option, SignalType
from appliance.video import tmk_format


@dataclass(frozen=True)
class TmkSignal(SignalType):
    """TMK values are base64 text, not hex."""

    @property
    def hex_values(self) -> bool:
        return False

    def parse(self, text: str) -> bytes:
        return tmk_format.from_text(text)

    def format(self, value: bytes) -> str:
        return tmk_format.to_text(value)


SIGNAL = TmkSignal(
    name="tmk",
    nbytes=tmk_format.TMK_BYTES,
    media="video",
    match="two_level",
    group="video",
    description="TMK+PDQF video features (a .tmk file, base64)",
    # Unit-spike features (tmk_format.example): each matches itself only.
    examples=tuple(tmk_format.to_text(tmk_format.example(seed)) for seed in (0, 100)),
    aliases=("tmk_pdqf", "videotmk"),
    by_default=True,
    cpu_hasher="appliance.hashers.video:hash_video",
    options=(
        # Level 1: cosine of the pure averages (a cheap first pass over the list).
        Option("level1", 0.7, "TMK level-1 (pure average cosine) minimum (default {default})",
               "--tmk-level1", low=-1, high=1),
        # Level 2: the time-aligned score, computed for level-1 candidates only.
        Option("level2", 0.7, "TMK level-2 score minimum (default {default})",
               "--tmk-level2", low=-1, high=1),
    ),
)
