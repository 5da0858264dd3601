"""The batched PDQ kernels against their CPU twin (appliance.hashers.pdq.pdq_from_rgb):
identical hashes and qualities. Images stay small: the simulator runs Python per thread."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.hashers.pdq import pdq_dihedral_from_rgb, pdq_from_rgb
from kernels.pdq import pdq_batch


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth diagonal gradient with a little noise (quality well under 100)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 40 + 150 * (0.6 * y / max(1, h - 1) + 0.4 * np.sin(x / max(1, w) * 3.0) ** 2)
    rgb = np.stack([base, base * 0.8 + 20, 255 - base], axis=-1)
    rgb += rng.normal(0, 2.0, rgb.shape)
    out: np.ndarray = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    return [
        _noise(rng, 5, 5),
        _noise(rng, 7, 13),
        _gradient(rng, 20, 30),
        _noise(rng, 64, 64),
        _gradient(rng, 64, 64),
        _gradient(rng, 65, 70),
        _noise(rng, 130, 90),  # window 2 along columns
        _gradient(rng, 90, 130),  # window 2 along rows
        _gradient(rng, 260, 12),  # window 3 along columns
        np.full((33, 47, 3), 128, dtype=np.uint8),  # flat
    ]


def _bits_apart(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def test_batch_matches_cpu_twin(xp: Any) -> None:
    images = _images()
    hashes, qualities = pdq_batch(images, xp)
    assert hashes.shape == (len(images), 32) and hashes.dtype == np.uint8
    assert qualities.shape == (len(images),) and qualities.dtype == np.int32
    problems = []
    for rgb, h, q in zip(images, hashes, qualities, strict=True):
        want_h, want_q = pdq_from_rgb(rgb)
        dist = _bits_apart(h.tobytes(), want_h)
        if dist or int(q) != want_q:
            problems.append(f"{rgb.shape}: {dist} bits apart, quality {int(q)} vs {want_q}")
    assert not problems, problems
    # The gradients really exercise the quality computation below its cap.
    assert min(int(q) for q in qualities[:-1]) < 100
    assert int(qualities[-1]) == 0


def test_ragged_batch_equals_one_at_a_time(xp: Any) -> None:
    rng = np.random.default_rng(7)
    images = [_gradient(rng, 9, 6), _noise(rng, 3, 40), _noise(rng, 12, 21), _gradient(rng, 6, 17)]
    hashes, qualities = pdq_batch(images, xp)
    for k, rgb in enumerate(images):
        one_h, one_q = pdq_batch([rgb], xp)
        assert one_h[0].tobytes() == hashes[k].tobytes()
        assert int(one_q[0]) == int(qualities[k])
        assert (hashes[k].tobytes(), int(qualities[k])) == pdq_from_rgb(rgb)


@pytest.mark.parametrize("shape", [(4, 4), (4, 100), (100, 4), (1, 1), (0, 7)])
def test_small_images_give_zeros(xp: Any, shape: tuple[int, int]) -> None:
    rgb = np.full((*shape, 3), 200, dtype=np.uint8)
    hashes, qualities = pdq_batch([rgb], xp)
    assert hashes.tobytes() == bytes(32) and int(qualities[0]) == 0


def test_empty_batch(xp: Any) -> None:
    hashes, qualities = pdq_batch([], xp)
    assert hashes.shape == (0, 32) and qualities.shape == (0,)


def test_rejects_non_rgb(xp: Any) -> None:
    with pytest.raises(ValueError):
        pdq_batch([np.zeros((8, 8), dtype=np.uint8)], xp)
    with pytest.raises(ValueError):
        pdq_batch([np.zeros((8, 8, 3), dtype=np.float32)], xp)


def test_dihedral_batch_matches_cpu_twin(xp: Any) -> None:
    images = _images()[2:6]
    hashes, qualities = pdq_batch(images, xp, dihedral=True)
    assert hashes.shape == (len(images), 8, 32)
    for rgb, rows, q in zip(images, hashes, qualities, strict=True):
        want, want_q = pdq_dihedral_from_rgb(rgb)
        assert [r.tobytes() for r in rows] == want, rgb.shape
        assert int(q) == want_q
