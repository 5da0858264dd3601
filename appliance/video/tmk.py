"""TMK+PDQF: a video's temporal match kernel features, and their two scores.

A value is the bytes of a ``.tmk`` file (``appliance.video.tmk_format``).
``TmkAccumulator`` turns resampled 64x64 frames into a ``TmkFeatures``;
``TmkFeatures.level1``/``level2`` are the reference's two scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from appliance.video import tmk_kernels
from appliance.video.tmk_format import COEFFICIENTS as _COEFFICIENTS
from appliance.video.tmk_format import DIM, FPS, PERIODS, PURE_AT, SIDE, M, P, check, header
from kernels.pdq_dct import dct_matrix

__all__ = [
    "COEFFICIENTS",
    "DIM",
    "FPS",
    "PERIODS_I32",
    "SIDE",
    "TmkAccumulator",
    "TmkFeatures",
    "pure_average",
]

PERIODS_I32: NDArray[np.int32] = np.array(PERIODS, dtype=np.int32)
COEFFICIENTS: NDArray[np.float32] = np.array(_COEFFICIENTS, dtype=np.float32)


def _normalizer() -> np.float32:
    """The reference's pair-score normaliser: a_0 + 2 a_j for j >= 1, in float (1.929196)."""
    total = np.float32(COEFFICIENTS[0])
    for a in COEFFICIENTS[1:]:
        total = np.float32(float(total) + 2.0 * float(a))
    return total


NORMALIZER = _normalizer()


@dataclass(frozen=True, eq=False)
class TmkFeatures:
    """One video's features: ``pure`` (256,), ``cos`` and ``sin`` (4, 32, 256) float32;
    ``frames``: resampled frames ingested (informational, as in the header)."""

    frames: int
    pure: NDArray[np.float32]
    cos: NDArray[np.float32]
    sin: NDArray[np.float32]

    def to_bytes(self) -> bytes:
        """The ``.tmk`` file's bytes, as the reference writes them."""
        return b"".join((header(self.frames), self.pure.astype("<f4").tobytes(),
                         self.cos.astype("<f4").tobytes(), self.sin.astype("<f4").tobytes()))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> TmkFeatures:
        """A ``.tmk`` file's features; ItemFault(MALFORMED_HASH) unless it is one
        with the reference's parameters and finite features."""
        raw = check(data)
        floats = np.frombuffer(raw, "<f4", offset=PURE_AT).astype(np.float32)
        block = P * M * DIM
        return cls(int.from_bytes(raw[28:32], "little", signed=True), floats[:DIM],
                   floats[DIM:DIM + block].reshape(P, M, DIM),
                   floats[DIM + block:].reshape(P, M, DIM))

    def level1(self, other: TmkFeatures) -> float:
        """Cosine similarity of the pure averages (-1..1)."""
        return tmk_kernels.cosine(self.pure, other.pure)

    def level2(self, other: TmkFeatures) -> float:
        """The reference's level-2 score: the best circularly aligned match of the
        Fourier features (about -1..1; 1 for the same video)."""
        return tmk_kernels.level2(PERIODS_I32, NORMALIZER, self.cos, self.sin, other.cos, other.sin)


def pure_average(data: bytes | memoryview) -> NDArray[np.float32]:
    """The (256,) pure average of a ``.tmk`` value, read without the rest."""
    return np.frombuffer(data, "<f4", DIM, PURE_AT).astype(np.float32)


class TmkAccumulator:
    """Frames in, a ``TmkFeatures`` out: ``add`` batches of 64x64 RGB frames in their
    resampled order, then ``finish``. Holds 256 KiB of sums, never the frames."""

    def __init__(self) -> None:
        self.frames = 0
        self.d = dct_matrix()
        self._pure = np.zeros(DIM, dtype=np.float32)
        self._cos = np.zeros((P, M, DIM), dtype=np.float32)
        self._sin = np.zeros((P, M, DIM), dtype=np.float32)

    def features(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, 256) PDQF features of rgb (n, 64, 64, 3) uint8 frames."""
        out = np.empty((len(rgb), DIM), dtype=np.float32)
        tmk_kernels.frame_features(np.ascontiguousarray(rgb), self.d, out)
        return out

    def add(self, rgb: NDArray[np.uint8]) -> None:
        """rgb: (n, 64, 64, 3) uint8, the next n resampled frames."""
        self.add_features(self.features(rgb))

    def add_features(self, features: NDArray[np.float32]) -> None:
        """features: (n, 256) float32, the PDQF features of the next n frames
        (what ``add`` computes; a device computes them for a batch)."""
        tmk_kernels.ingest(np.ascontiguousarray(features, dtype=np.float32), self.frames,
                           PERIODS_I32, self._pure, self._cos, self._sin)
        self.frames += len(features)

    def finish(self) -> TmkFeatures:
        pure, cos, sin = self._pure.copy(), self._cos.copy(), self._sin.copy()
        tmk_kernels.finish(self.frames, COEFFICIENTS, pure, cos, sin)
        return TmkFeatures(self.frames, pure, cos, sin)
