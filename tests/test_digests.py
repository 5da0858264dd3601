"""Digests against published test vectors and against hashlib on every length
around the 64-byte block boundaries."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from appliance.hashers.digests import Digester, digest_bytes

# RFC 1321, appendix A.5.
MD5_VECTORS = {
    b"": "d41d8cd98f00b204e9800998ecf8427e",
    b"a": "0cc175b9c0f1b6a831c399e269772661",
    b"abc": "900150983cd24fb0d6963f7d28e17f72",
    b"message digest": "f96b697d7cb7938d525a2f31aaf161d0",
    b"abcdefghijklmnopqrstuvwxyz": "c3fcd3d76192e4007dfb496cca67e13b",
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789":
        "d174ab98d277d9f5a5611c2c9f419d9f",
    b"1234567890" * 8: "57edf4a22be3c955ac49da2e2107b67a",
}
# FIPS 180-2 examples (and NIST's CAVS "million a").
ABC = b"abc"
M448 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
MILLION_A = b"a" * 1_000_000
SHA1_VECTORS = {
    ABC: "a9993e364706816aba3e25717850c26c9cd0d89d",
    M448: "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
    MILLION_A: "34aa973cd4c4daa4f61eeb2bdbad27316534016f",
}
SHA256_VECTORS = {
    ABC: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    M448: "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    MILLION_A: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
}


@pytest.mark.parametrize(("data", "expected"), MD5_VECTORS.items())
def test_md5_rfc1321(data: bytes, expected: str) -> None:
    assert digest_bytes(data, ["md5"])["md5"].hex() == expected


@pytest.mark.parametrize(("data", "expected"), SHA1_VECTORS.items(), ids=["abc", "448", "1M"])
def test_sha1_fips180(data: bytes, expected: str) -> None:
    assert digest_bytes(data, ["sha1"])["sha1"].hex() == expected


@pytest.mark.parametrize(("data", "expected"), SHA256_VECTORS.items(), ids=["abc", "448", "1M"])
def test_sha256_fips180(data: bytes, expected: str) -> None:
    assert digest_bytes(data, ["sha256"])["sha256"].hex() == expected


def test_every_length_around_block_boundaries() -> None:
    rng = np.random.default_rng(7)
    lengths = sorted(set(range(0, 200)) | {255, 256, 257, 4095, 4096, 4097, 65535, 65536})
    for n in lengths:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        got = digest_bytes(data)
        assert got == {
            "md5": hashlib.md5(data).digest(),
            "sha1": hashlib.sha1(data).digest(),
            "sha256": hashlib.sha256(data).digest(),
        }, n


def test_chunked_stream_equals_whole() -> None:
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    cuts = np.sort(rng.integers(0, len(data), 40))
    digester = Digester()
    start = 0
    for cut in [*cuts.tolist(), len(data)]:
        digester.update(memoryview(data)[start:cut])
        start = cut
    assert digester.nbytes == len(data)
    assert digester.digests() == digest_bytes(data)
    assert digester.digests()["sha256"] == hashlib.sha256(data).digest()


def test_only_requested_digests() -> None:
    assert set(digest_bytes(b"x", ["sha1", "pdq"])) == {"sha1"}


def test_digest_bytes_on_a_pool_keeps_order() -> None:
    # As the pipeline runs it: one digest_bytes per file (hash_item) on a pool.
    rng = np.random.default_rng(3)
    items = [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()
             for n in rng.integers(0, 100_000, 50)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda d: digest_bytes(d, ["md5", "sha256"]), items))
    assert [g["md5"] for g in got] == [hashlib.md5(d).digest() for d in items]
    assert [g["sha256"] for g in got] == [hashlib.sha256(d).digest() for d in items]
