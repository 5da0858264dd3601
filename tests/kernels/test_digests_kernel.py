"""The fused MD5/SHA-1/SHA-256 kernel against its CPU twin (hashlib) and the
published test vectors."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from kernels import digests

EDGE_LENGTHS = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129]


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _digests(
    files: list[bytes], xp: Any, rng: np.random.Generator | None = None
) -> list[tuple[bytes, bytes, bytes]]:
    """Lay ``files`` out in one buffer (in shuffled order, with junk gaps, when
    ``rng`` is given) and hash them in one launch."""
    slots = list(range(len(files)))
    if rng is not None:
        rng.shuffle(slots)
    buf = bytearray()
    offsets = [0] * len(files)
    for s in slots:
        if rng is not None:
            buf += rng.integers(0, 256, int(rng.integers(0, 5)), dtype=np.uint8).tobytes()
        offsets[s] = len(buf)
        buf += files[s]
    data = xp.asarray(np.frombuffer(bytes(buf), dtype=np.uint8).copy())
    md5, sha1, sha256 = digests.digest_batch(
        data, xp.asarray(np.array(offsets, dtype=np.int64)),
        xp.asarray(np.array([len(f) for f in files], dtype=np.int64)), xp)
    md5, sha1, sha256 = _host(md5), _host(sha1), _host(sha256)
    assert md5.shape == (len(files), 16) and md5.dtype == np.uint8
    assert sha1.shape == (len(files), 20) and sha1.dtype == np.uint8
    assert sha256.shape == (len(files), 32) and sha256.dtype == np.uint8
    return [(md5[i].tobytes(), sha1[i].tobytes(), sha256[i].tobytes()) for i in range(len(files))]


def _expected(f: bytes) -> tuple[bytes, bytes, bytes]:
    return hashlib.md5(f).digest(), hashlib.sha1(f).digest(), hashlib.sha256(f).digest()


def test_ragged_batch_matches_hashlib(xp: Any) -> None:
    rng = np.random.default_rng(7)
    lengths = EDGE_LENGTHS + [int(x) for x in rng.integers(130, 1000, 3)]
    files = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    got = _digests(files, xp)
    for n, f, g in zip(lengths, files, got, strict=True):
        assert g == _expected(f), n


def test_shuffled_layout_and_empty_files_in_the_middle(xp: Any) -> None:
    rng = np.random.default_rng(11)
    lengths = [200, 0, 64, 0, 0, 1, 129, 0, 56, 511, 0, 63]
    files = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    files[6] = files[2] + files[2][:65]  # shares a prefix with another file
    got = _digests(files, xp, rng)
    for n, f, g in zip(lengths, files, got, strict=True):
        assert g == _expected(f), n


def test_published_vectors(xp: Any) -> None:
    msgs = [b"", b"abc", b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"]
    want = [
        ("d41d8cd98f00b204e9800998ecf8427e", "da39a3ee5e6b4b0d3255bfef95601890afd80709",
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("900150983cd24fb0d6963f7d28e17f72", "a9993e364706816aba3e25717850c26c9cd0d89d",
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("8215ef0796a20bcaaae116d3876c664a", "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ]
    got = _digests(msgs, xp)
    assert [tuple(d.hex() for d in g) for g in got] == want


def test_empty_batch_and_bad_extents(xp: Any) -> None:
    md5, sha1, sha256 = digests.digest_batch(
        xp.zeros(0, dtype=xp.uint8), xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.int64), xp)
    assert md5.shape == (0, 16) and sha1.shape == (0, 20) and sha256.shape == (0, 32)
    data = xp.zeros(10, dtype=xp.uint8)
    with pytest.raises(ValueError):
        digests.digest_batch(data, xp.asarray(np.array([5], np.int64)),
                             xp.asarray(np.array([6], np.int64)), xp)
    with pytest.raises(ValueError):
        digests.digest_batch(data, xp.asarray(np.array([0], np.int64)),
                             xp.asarray(np.array([-1], np.int64)), xp)


def test_numpy_offsets_and_lengths_as_the_benchmarks_pass_them(xp: Any) -> None:
    """The buffer on the device, its extents as NumPy arrays (benchmarks/gpu_kernels.py
    does this; on a GPU, CuPy's ascontiguousarray refuses NumPy arrays)."""
    files = [b"abc", b"", b"x" * 70]
    data = xp.asarray(np.frombuffer(b"".join(files), dtype=np.uint8).copy())
    offsets = np.array([0, 3, 3], dtype=np.int64)
    lengths = np.array([3, 0, 70], dtype=np.int64)
    md5, sha1, sha256 = digests.digest_batch(data, offsets, lengths, xp)
    host = [_host(c) for c in (md5, sha1, sha256)]
    assert [tuple(h[i].tobytes() for h in host) for i in range(3)] == [_expected(f) for f in files]
    # All NumPy, and a Python list for the extents: the same digests.
    again = digests.digest_batch(np.frombuffer(b"".join(files), np.uint8), [0, 3, 3], lengths, xp)
    assert all((_host(a) == b).all() for a, b in zip(again, host, strict=True))
