"""Typed errors of the appliance.

Two families:
- ``ItemFault``: something wrong with one file or one hash. It becomes an
  ``ItemError`` (a stable ``code`` string and a message) on that item only; the
  other items of the same request are unaffected.
- ``RequestFault``: the whole request cannot be served. Each subclass names the
  gRPC status it maps to; ``server`` does the mapping in one place.

Codes are part of the API: clients switch on them, so never rename one.
"""

from __future__ import annotations

from typing import ClassVar


class ItemCode:
    """The stable ``ItemError.code`` strings."""

    EMPTY = "EMPTY"
    TOO_LARGE = "TOO_LARGE"
    NOT_AN_IMAGE = "NOT_AN_IMAGE"
    CORRUPT_IMAGE = "CORRUPT_IMAGE"
    # More pixels than limits.max_pixels, or more memory to decode and hash
    # than limits.max_decode_bytes: refused before any pixel is decoded.
    DECOMPRESSION_BOMB = "DECOMPRESSION_BOMB"
    # A format recognised but not read (EPS, ICO, PSD, ... or one left out of
    # limits.image_formats): digests given, pixel signals skipped.
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    # A container whose structure is over its bounds (limits.max_scans,
    # max_segments, max_frames): refused before decoding.
    TOO_COMPLEX = "TOO_COMPLEX"
    # Decoding and hashing ran past limits.max_decode_seconds and were stopped.
    DECODE_TIMEOUT = "DECODE_TIMEOUT"
    # The decoder's process died (a crash or its memory limit) on this file.
    DECODER_FAILED = "DECODER_FAILED"
    # No room in the decode budget (limits.max_decode_bytes_in_flight) before
    # the file's wait ran out: try again later.
    OVERLOADED = "OVERLOADED"
    UNSUPPORTED_IMAGE = "UNSUPPORTED_IMAGE"
    # Videos (appliance.video; not yet produced by the server). No allowed
    # container, or no video stream in it (audio only): digests kept.
    NOT_A_VIDEO = "NOT_A_VIDEO"
    # A header FFmpeg cannot read, a stream that breaks, or no decodable frame.
    CORRUPT_VIDEO = "CORRUPT_VIDEO"
    # Over limits.max_video_seconds or limits.max_video_frames.
    VIDEO_TOO_LONG = "VIDEO_TOO_LONG"
    # A frame over limits.max_video_pixels.
    VIDEO_TOO_LARGE = "VIDEO_TOO_LARGE"
    UNKNOWN_SIGNAL = "UNKNOWN_SIGNAL"
    NOT_COMPUTABLE = "NOT_COMPUTABLE"
    MALFORMED_HASH = "MALFORMED_HASH"
    LOW_QUALITY = "LOW_QUALITY"
    UNREADABLE = "UNREADABLE"  # the CLI could not read a local file
    # Not processed: its request's deadline passed first (the caller has gone).
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ItemFault(ApplianceError):
    """A fault confined to one item (file or hash)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestFault(ApplianceError):
    """A fault of the whole request; ``grpc_code`` is a ``grpc.StatusCode`` name."""

    grpc_code: ClassVar[str] = "INTERNAL"


class InvalidRequest(RequestFault):
    grpc_code = "INVALID_ARGUMENT"


class Overloaded(RequestFault):
    grpc_code = "RESOURCE_EXHAUSTED"


class NotReady(RequestFault):
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(RequestFault):
    """The request's deadline passed while it waited in the queue; no work was done."""

    grpc_code = "DEADLINE_EXCEEDED"


class Unauthenticated(RequestFault):
    """No credentials, or credentials that name no identity."""

    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(RequestFault):
    """The identity lacks the method's scope, or is suspended."""

    grpc_code = "PERMISSION_DENIED"


class RateLimited(Overloaded):
    """Over the identity's rate: ``retry_after`` seconds until it fits (None: never)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(Overloaded):
    """Over a size limit of one request (files, bytes, hashes): RESOURCE_EXHAUSTED
    like load shedding, but sent with gRPC's ``grpc-retry-pushback-ms`` of -1,
    so that a client's retry policy (appliance.balancing) does not resend it."""


class ShuttingDown(RequestFault):
    """The server is draining for shutdown and takes no new requests."""

    grpc_code = "UNAVAILABLE"


class ConfigError(ApplianceError):
    """The configuration (file, environment or flags) is invalid."""


class ListError(ApplianceError):
    """A hash list could not be loaded; the message names the file and rows."""
