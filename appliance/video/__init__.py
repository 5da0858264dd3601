"""Videos and the video signals' arithmetic (TMK+PDQF, vPDQ).

``decode.open_video`` sniffs a file's container from its first bytes, opens
it from memory with FFmpeg confined to an allow-list, and checks the header
against ``VideoLimits``; ``Video.frames`` then decodes it lazily, one frame
at a time, so that one decode feeds every video signal
(``appliance.hashers.video``). ``resample`` is the reference's ``-r 15``,
``tmk*`` the TMK features, layout and scores, ``vpdq*`` vPDQ's values and
matching, ``synthetic`` in-memory clips for warm-up, tests and benchmarks.

Only the limits are imported here: ``appliance.settings`` inherits them, and
importing the configuration must not load FFmpeg (``decode`` imports PyAV).
"""

from __future__ import annotations

from appliance.video.limits import VideoLimits

__all__ = ["VideoLimits"]
