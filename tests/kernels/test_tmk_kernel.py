"""The TMK frame-feature kernel and PDQ's float32-luma mode (vPDQ's frames)
against their CPU twins: identical floats, identical hashes. Frames stay few:
the simulator runs Python per thread."""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.hashers.pdq import pdq_from_luma
from appliance.hashers.video import luma
from appliance.video import tmk_kernels
from kernels.pdq import pdq_batch
from kernels.pdq_dct import dct_matrix
from kernels.tmk import tmk_features


def _frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(15)
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8)
    noise = rng.integers(0, 256, (n - 1, 64, 64, 3), dtype=np.uint8)
    return np.concatenate([smooth[None], noise])


def test_frame_features_equal_the_cpu_twin(xp: Any) -> None:
    frames = _frames(3)
    want = np.empty((3, 256), np.float32)
    tmk_kernels.frame_features(frames, dct_matrix(), want)
    got = tmk_features(frames, xp)
    assert got.dtype == np.float32 and got.shape == (3, 256)
    assert got.tobytes() == want.tobytes()  # every float, bit for bit


def test_pdq_float_luma_equals_vpdq_cpu_hashing(xp: Any) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((9, 13), (70, 65))]
    hashes, qualities = pdq_batch(images, xp, float_luma=True)
    for rgb, h, q in zip(images, hashes, qualities, strict=True):
        want_h, want_q = pdq_from_luma(luma(rgb))
        assert h.tobytes() == want_h and int(q) == want_q
