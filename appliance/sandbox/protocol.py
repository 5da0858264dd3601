"""Messages between the server and a decode worker, over a Unix stream socket.

A frame is a 12-byte prefix (header length u32, payload length u64), a JSON
header and raw payload bytes (the file going in; RGB pixels coming back).
JSON, never pickle, in both directions: a worker decodes hostile files, and
if a decoder bug ever let a file take control of a worker, a pickle from it
would run code in the server. For the same reason the server reads a reply
against bounds it sets itself (``read_frame``'s limits) and checks every
field of it (``parse_reply``) before using it.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.errors import ItemCode
from appliance.results import HashValue
from appliance.signals import SIGNALS

_PREFIX = struct.Struct("<IQ")
MAX_HEADER = 1 << 20

# The zygote's control channel: READY once warm; FORK (with a socket passed
# along) asks for a worker, answered by the worker's pid.
READY = b"R"
FORK = b"F"
PID = struct.Struct("<q")


class ChannelClosed(Exception):
    """The other end closed the socket (a worker that died), or sent garbage."""


def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes | memoryview = b"",
               extra: list[memoryview] | None = None) -> None:
    """One frame; ``extra`` buffers follow ``payload`` as part of it (no copy)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    parts = [payload, *(extra or [])]
    total = sum(len(memoryview(p).cast("B")) for p in parts)
    sock.sendall(_PREFIX.pack(len(text), total) + text)
    for part in parts:
        if len(part):
            sock.sendall(part)


def _read_exact(sock: socket.socket, view: memoryview,
                before: Callable[[], None] | None) -> None:
    got = 0
    while got < len(view):
        if before is not None:
            before()
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ChannelClosed("the other end closed the channel")
        got += n


def read_frame(sock: socket.socket, max_payload: int,
               before: Callable[[], None] | None = None) -> tuple[dict[str, Any], bytearray]:
    """(header, payload); ChannelClosed on EOF or a frame over its bounds.

    ``before`` runs before each read (the server re-arms the socket's timeout
    to what is left of the job's deadline, so a reply that trickles in slowly
    cannot stretch it)."""
    prefix = bytearray(_PREFIX.size)
    _read_exact(sock, memoryview(prefix), before)
    header_len, payload_len = _PREFIX.unpack(prefix)
    if header_len > MAX_HEADER or payload_len > max_payload:
        raise ChannelClosed(f"a frame of {header_len} + {payload_len} bytes is over its bounds")
    text = bytearray(header_len)
    _read_exact(sock, memoryview(text), before)
    payload = bytearray(payload_len)
    _read_exact(sock, memoryview(payload), before)
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise ChannelClosed(f"a header that is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ChannelClosed("a header that is not an object")
    return header, payload


@dataclass(frozen=True)
class Reply:
    """A worker's answer: hashes and exported images, or a fault."""

    hashes: list[HashValue]
    images: list[NDArray[np.uint8]]
    code: str = ""
    message: str = ""
    decode_seconds: float = 0.0
    hash_seconds: float = 0.0
    peak_bytes: int = 0
    # A worker's traceback of an internal error, for the server's log only.
    trace: str = ""


_CODES = frozenset(v for k, v in vars(ItemCode).items() if k.isupper())


def parse_reply(header: dict[str, Any], payload: bytearray, names: tuple[str, ...]) -> Reply:
    """Check every field of a worker's reply; ChannelClosed for anything off."""
    try:
        timing = (float(header.get("decode_s", 0.0)), float(header.get("hash_s", 0.0)),
                  int(header.get("peak", 0)))
        if not header.get("ok"):
            code, message = str(header["code"]), str(header["message"])[:2000]
            if code not in _CODES:
                raise ValueError(f"unknown code {code!r}")
            return Reply([], [], code, message, *timing, trace=str(header.get("trace", ""))[:4000])
        hashes = [_hash(item, names) for item in header["hashes"]]
        images = _images(header["images"], payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChannelClosed(f"a malformed reply: {exc}") from exc
    return Reply(hashes, images, "", "", *timing)


def _hash(item: Any, names: tuple[str, ...]) -> HashValue:
    signal, hex_value, quality, variant = item
    if signal not in names:
        raise ValueError(f"signal {signal!r} was not asked for")
    value = bytes.fromhex(hex_value)
    if not SIGNALS[signal].fits(len(value)):
        raise ValueError(f"{signal} value of {len(value)} bytes")
    if quality is not None and not 0 <= int(quality) <= 100:
        raise ValueError(f"quality {quality}")
    return HashValue(str(signal), value, None if quality is None else int(quality),
                     str(variant)[:16])


def _images(shapes: Any, payload: bytearray) -> list[NDArray[np.uint8]]:
    images = []
    flat = np.frombuffer(payload, dtype=np.uint8)
    offset = 0
    for height, width in shapes:
        n = int(height) * int(width) * 3
        if height <= 0 or width <= 0 or offset + n > len(flat):
            raise ValueError(f"an image of {height}x{width} does not fit the payload")
        images.append(flat[offset : offset + n].reshape(int(height), int(width), 3))
        offset += n
    if offset != len(flat):
        raise ValueError(f"{len(flat) - offset} payload bytes left over")
    return images


def video_reply(hashes: list[HashValue], frames: int) -> tuple[dict[str, Any], list[memoryview]]:
    """A video job's reply: the values travel raw in the payload (a ``.tmk``
    is 263 KB, more than hex in a header should carry), their lengths in the header."""
    header = {"ok": True, "blobs": [[h.signal, len(h.value)] for h in hashes], "frames": frames}
    return header, [memoryview(h.value) for h in hashes]


TMK_SIDE = 64
TMK_BATCH = 64  # stretched frames per part at most (appliance.hashers.video)


def parse_part(header: dict[str, Any], payload: bytearray, max_pixels: int
               ) -> tuple[str, NDArray[np.uint8], int, float]:
    """A streamed part of a video job: ("stretched", (n, 64, 64, 3) frames for
    TMK, 0, 0.0) or ("sampled", an (H, W, 3) frame for vPDQ, its number, its
    seconds); ChannelClosed if off."""
    try:
        kind = header["part"]
        flat = np.frombuffer(payload, dtype=np.uint8)
        if kind == "stretched":
            count = int(header["count"])
            if not 0 < count <= TMK_BATCH or len(flat) != count * TMK_SIDE * TMK_SIDE * 3:
                raise ValueError(f"{count} TMK frames in {len(flat)} bytes")
            return kind, flat.reshape(count, TMK_SIDE, TMK_SIDE, 3), 0, 0.0
        if kind == "sampled":
            height, width = int(header["height"]), int(header["width"])
            index, seconds = int(header["index"]), float(header["seconds"])
            if height <= 0 or width <= 0 or height * width > max_pixels \
                    or len(flat) != height * width * 3 or index < 0 \
                    or not 0 <= seconds < float("inf"):
                raise ValueError(f"a vPDQ frame {height}x{width} #{index} in {len(flat)} bytes")
            return kind, flat.reshape(height, width, 3), index, seconds
        raise ValueError(f"unknown part {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ChannelClosed(f"a malformed part: {exc}") from exc


def parse_video_reply(header: dict[str, Any], payload: bytearray,
                      names: tuple[str, ...]) -> tuple[Reply, int]:
    """(the reply, frames decoded) of a video job; ChannelClosed for anything off."""
    if not header.get("ok"):
        return parse_reply(header, payload, names), 0
    try:
        hashes, at = [], 0
        for signal, size in header["blobs"]:
            if signal not in names or not SIGNALS[signal].fits(int(size)) \
                    or at + int(size) > len(payload):
                raise ValueError(f"a {signal} value of {size} bytes")
            hashes.append(HashValue(str(signal), bytes(payload[at:at + int(size)])))
            at += int(size)
        if at != len(payload):
            raise ValueError(f"{len(payload) - at} payload bytes left over")
        reply = Reply(hashes, [], decode_seconds=float(header.get("decode_s", 0.0)),
                      hash_seconds=float(header.get("hash_s", 0.0)),
                      peak_bytes=int(header.get("peak", 0)))
        return reply, int(header.get("frames", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ChannelClosed(f"a malformed reply: {exc}") from exc


def reply_header(hashes: list[HashValue], images: list[NDArray[np.uint8]]) -> dict[str, Any]:
    return {
        "ok": True,
        "hashes": [[h.signal, h.value.hex(), h.quality, h.variant] for h in hashes],
        "images": [[int(i.shape[0]), int(i.shape[1])] for i in images],
    }
