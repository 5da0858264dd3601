"""vPDQ values in pure Python (no NumPy): frames, their packing, and their text.

A value is the hashed frames packed end to end, ``FRAME_BYTES`` each: the 32
PDQ bytes, the quality (uint8), the frame number (uint32, ``NO_FRAME`` when
a list gave none) and the timestamp (float32 seconds), little-endian. Its
text is python-threatexchange's ``VPDQSignal`` string: a JSON array of
``"<pdq hex>,<quality>,<timestamp>"``, the timestamp in Python's ``.3``
format (three significant digits), which is what ThreatExchange and HMA
exchange; the reference CLI's lines ("frame,quality,hex,timestamp") are
read too. The signal type (appliance.signals) and the thin client read
values through this module, so it must not import NumPy.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.errors import ItemCode, ItemFault

FRAME_BYTES = 41
NO_FRAME = 0xFFFFFFFF
_RECORD = struct.Struct("<32sBIf")
# The default sample, the reference's: one frame a second.
SECONDS_PER_HASH = 1.0
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class VpdqFrame:
    """One hashed frame: ``pdq`` 32 bytes, ``quality`` 0..100, ``frame`` its
    number (``NO_FRAME``: not known), ``seconds`` its timestamp."""

    pdq: bytes
    quality: int
    frame: int
    seconds: float

    def text(self) -> str:
        """python-threatexchange's ``VpdqCompactFeature`` form: "hex,quality,ts"."""
        return f"{self.pdq.hex()},{self.quality},{self.seconds:.3}"


def step(rate: float | None, seconds_per_hash: float) -> int:
    """Every how many frames one is hashed (the reference's ``m_frameMod``)."""
    if not rate or rate <= 0:
        raise ItemFault(ItemCode.CORRUPT_VIDEO, "vpdq: the video states no frame rate")
    return max(1, int(seconds_per_hash * rate))


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def timestamp(frame: int, rate: float) -> float:
    """frame / rate in float32, as the reference divides (a quotient of two
    float32 values computed in double and rounded once is the float32 quotient)."""
    return _f32(_f32(float(frame)) / _f32(rate))


def pack(frames: Iterable[VpdqFrame]) -> bytes:
    return b"".join(_RECORD.pack(f.pdq, f.quality, f.frame, f.seconds) for f in frames)


def unpack(value: bytes | memoryview) -> list[VpdqFrame]:
    """The frames of a value (``pack``'s bytes)."""
    if not len(value) or len(value) % FRAME_BYTES:
        raise _bad(f"a value is a whole number of {FRAME_BYTES}-byte frames, got {len(value)}")
    return [VpdqFrame(pdq, quality, frame, seconds)
            for pdq, quality, frame, seconds in _RECORD.iter_unpack(value)]


def format_signal(value: bytes | memoryview) -> str:
    """The ``VPDQSignal`` string of a value."""
    return json.dumps([f.text() for f in unpack(value)])


def parse_signal(text: str) -> bytes:
    """A ``VPDQSignal`` string (or the reference CLI's lines, "frame,quality,hex,ts"
    one a line) as a value; ItemFault(MALFORMED_HASH) otherwise."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError as exc:
            raise _bad(f"not a JSON array of frames: {exc}") from exc
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise _bad("a vpdq value is a JSON array of strings")
        frames = [_compact(i) for i in items]
    else:
        frames = [_cli_line(line) for line in stripped.splitlines() if line.strip()]
    if not frames:
        raise _bad("a vpdq value needs at least one frame")
    return pack(frames)


def _compact(item: str) -> VpdqFrame:
    parts = item.split(",")
    if len(parts) != 3:
        raise _bad(f"a frame is 'hex,quality,timestamp', got {item[:80]!r}")
    return VpdqFrame(_pdq(parts[0]), _quality(parts[1]), NO_FRAME, _seconds(parts[2]))


def _cli_line(line: str) -> VpdqFrame:
    parts = line.strip().split(",")
    if len(parts) < 4 or not parts[0].strip().isdigit() or int(parts[0]) >= NO_FRAME:
        raise _bad(f"a line is 'frame,quality,hex,timestamp', got {line[:80]!r}")
    return VpdqFrame(_pdq(parts[2]), _quality(parts[1]), int(parts[0]), _seconds(parts[3]))


def _pdq(text: str) -> bytes:
    value = text.strip().lower()
    if len(value) != 64 or not set(value) <= _HEX:
        raise _bad(f"a frame's PDQ is 64 hex digits, got {value[:80]!r}")
    return bytes.fromhex(value)


def _quality(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or not 0 <= int(value) <= 100:
        raise _bad(f"a frame's quality is 0..100, got {value[:20]!r}")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 3.0e38:
        raise _bad(f"a frame's timestamp is seconds >= 0, got {text.strip()[:20]!r}")
    return value


def _bad(message: str) -> ItemFault:
    return ItemFault(ItemCode.MALFORMED_HASH, f"vpdq: {message}")
