"""Decoded videos, the media of the video signals (TMK+PDQF, vPDQ: later).

``appliance.video.decode.open_video`` sniffs a file's container from its
first bytes, opens it from memory with FFmpeg confined to an allow-list, and
checks the header against ``VideoLimits``; ``Video.frames`` then decodes it
lazily, one RGB frame at a time, so that one decode feeds every video signal.
Not wired into the pipeline yet.

Only the limits are imported here: ``appliance.settings`` inherits them, and
importing the configuration must not load FFmpeg (``decode`` imports PyAV).
"""

from __future__ import annotations

from appliance.video.limits import VideoLimits

__all__ = ["VideoLimits"]
