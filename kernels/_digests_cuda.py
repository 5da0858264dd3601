"""The numba.cuda source of kernels.digests (imported on first use only).

All 32-bit words are held in int64 and masked with 0xFFFFFFFF after every
addition and left shift: values stay in [0, 2**32) so nothing overflows, and
no unsigned/signed mix (which numba would promote to float64) arises.
Constant tables are module-level NumPy arrays, which numba.cuda freezes into
the kernel as constants (the simulator reads them as plain arrays).
"""

import math

import numpy as np
from numba import cuda, int64

MASK = 0xFFFFFFFF

MD5_K = np.array([int(abs(math.sin(i + 1)) * 2**32) & MASK for i in range(64)], dtype=np.int64)
MD5_S = np.array([7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4
                 + [6, 10, 15, 21] * 4, dtype=np.int64)
SHA256_K = np.array([
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
], dtype=np.int64)


@cuda.jit(cache=True)
def digest(data, offsets, lengths, order, md5_out, sha1_out, sha256_out):  # type: ignore[no-untyped-def]
    """Thread i hashes file order[i] (MD5, SHA-1, SHA-256 in one pass); see kernels.digests."""
    i = cuda.grid(1)
    if i >= order.shape[0]:
        return
    f = order[i]
    off = int64(offsets[f])
    n = int64(lengths[f])
    mle = cuda.local.array(16, int64)  # MD5 message words (little-endian)
    w1 = cuda.local.array(80, int64)  # SHA-1 schedule
    w2 = cuda.local.array(64, int64)  # SHA-256 schedule

    # MD5 state
    m0 = int64(0x67452301)
    m1 = int64(0xEFCDAB89)
    m2 = int64(0x98BADCFE)
    m3 = int64(0x10325476)
    # SHA-1 state
    s0 = int64(0x67452301)
    s1 = int64(0xEFCDAB89)
    s2 = int64(0x98BADCFE)
    s3 = int64(0x10325476)
    s4 = int64(0xC3D2E1F0)
    # SHA-256 state
    h0 = int64(0x6A09E667)
    h1 = int64(0xBB67AE85)
    h2 = int64(0x3C6EF372)
    h3 = int64(0xA54FF53A)
    h4 = int64(0x510E527F)
    h5 = int64(0x9B05688C)
    h6 = int64(0x1F83D9AB)
    h7 = int64(0x5BE0CD19)

    nblocks = (n + 72) // 64  # room for the 0x80 byte and the 8-byte length
    bits = n * 8
    for blk in range(nblocks):
        base = blk * 64
        # ---- message words: one read of the block's bytes, both byte orders
        for w in range(16):
            be = int64(0)
            le = int64(0)
            for k in range(4):
                p = base + w * 4 + k
                byte = int64(0)
                if p < n:
                    byte = int64(data[off + p])
                elif p == n:
                    byte = int64(0x80)
                be = (be << 8) | byte
                le = le | (byte << (8 * k))
            mle[w] = le
            w1[w] = be
            w2[w] = be
        if blk == nblocks - 1:
            mle[14] = bits & MASK
            mle[15] = (bits >> 32) & MASK
            w1[14] = (bits >> 32) & MASK
            w1[15] = bits & MASK
            w2[14] = (bits >> 32) & MASK
            w2[15] = bits & MASK

        # ---- MD5
        a = m0
        b = m1
        c = m2
        d = m3
        for j in range(64):
            if j < 16:
                t = (b & c) | ((b ^ MASK) & d)
                g = j
            elif j < 32:
                t = (d & b) | ((d ^ MASK) & c)
                g = (5 * j + 1) % 16
            elif j < 48:
                t = b ^ c ^ d
                g = (3 * j + 5) % 16
            else:
                t = c ^ (b | (d ^ MASK))
                g = (7 * j) % 16
            t = (t + a + MD5_K[j] + mle[g]) & MASK
            r = MD5_S[j]
            a = d
            d = c
            c = b
            b = (b + (((t << r) | (t >> (32 - r))) & MASK)) & MASK
        m0 = (m0 + a) & MASK
        m1 = (m1 + b) & MASK
        m2 = (m2 + c) & MASK
        m3 = (m3 + d) & MASK

        # ---- SHA-1
        for j in range(16, 80):
            x = w1[j - 3] ^ w1[j - 8] ^ w1[j - 14] ^ w1[j - 16]
            w1[j] = ((x << 1) | (x >> 31)) & MASK
        a = s0
        b = s1
        c = s2
        d = s3
        e = s4
        for j in range(80):
            if j < 20:
                t = (b & c) | ((b ^ MASK) & d)
                k = int64(0x5A827999)
            elif j < 40:
                t = b ^ c ^ d
                k = int64(0x6ED9EBA1)
            elif j < 60:
                t = (b & c) | (b & d) | (c & d)
                k = int64(0x8F1BBCDC)
            else:
                t = b ^ c ^ d
                k = int64(0xCA62C1D6)
            t = ((((a << 5) | (a >> 27)) & MASK) + t + e + k + w1[j]) & MASK
            e = d
            d = c
            c = ((b << 30) | (b >> 2)) & MASK
            b = a
            a = t
        s0 = (s0 + a) & MASK
        s1 = (s1 + b) & MASK
        s2 = (s2 + c) & MASK
        s3 = (s3 + d) & MASK
        s4 = (s4 + e) & MASK

        # ---- SHA-256
        for j in range(16, 64):
            x = w2[j - 15]
            y = w2[j - 2]
            sg0 = ((((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14))) & MASK) ^ (x >> 3)
            sg1 = ((((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13))) & MASK) ^ (y >> 10)
            w2[j] = (w2[j - 16] + sg0 + w2[j - 7] + sg1) & MASK
        a = h0
        b = h1
        c = h2
        d = h3
        e = h4
        f5 = h5
        g6 = h6
        h = h7
        for j in range(64):
            big1 = (((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21))
                    ^ ((e >> 25) | (e << 7))) & MASK
            ch = (e & f5) ^ ((e ^ MASK) & g6)
            t1 = (h + big1 + ch + SHA256_K[j] + w2[j]) & MASK
            big0 = (((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19))
                    ^ ((a >> 22) | (a << 10))) & MASK
            maj = (a & b) ^ (a & c) ^ (b & c)
            h = g6
            g6 = f5
            f5 = e
            e = (d + t1) & MASK
            d = c
            c = b
            b = a
            a = (t1 + big0 + maj) & MASK
        h0 = (h0 + a) & MASK
        h1 = (h1 + b) & MASK
        h2 = (h2 + c) & MASK
        h3 = (h3 + d) & MASK
        h4 = (h4 + e) & MASK
        h5 = (h5 + f5) & MASK
        h6 = (h6 + g6) & MASK
        h7 = (h7 + h) & MASK

    # ---- digests: MD5 little-endian words, SHA big-endian words
    for k in range(4):
        sh = 8 * k
        md5_out[f, k] = (m0 >> sh) & 0xFF
        md5_out[f, 4 + k] = (m1 >> sh) & 0xFF
        md5_out[f, 8 + k] = (m2 >> sh) & 0xFF
        md5_out[f, 12 + k] = (m3 >> sh) & 0xFF
        sb = 24 - 8 * k
        sha1_out[f, k] = (s0 >> sb) & 0xFF
        sha1_out[f, 4 + k] = (s1 >> sb) & 0xFF
        sha1_out[f, 8 + k] = (s2 >> sb) & 0xFF
        sha1_out[f, 12 + k] = (s3 >> sb) & 0xFF
        sha1_out[f, 16 + k] = (s4 >> sb) & 0xFF
        sha256_out[f, k] = (h0 >> sb) & 0xFF
        sha256_out[f, 4 + k] = (h1 >> sb) & 0xFF
        sha256_out[f, 8 + k] = (h2 >> sb) & 0xFF
        sha256_out[f, 12 + k] = (h3 >> sb) & 0xFF
        sha256_out[f, 16 + k] = (h4 >> sb) & 0xFF
        sha256_out[f, 20 + k] = (h5 >> sb) & 0xFF
        sha256_out[f, 24 + k] = (h6 >> sb) & 0xFF
        sha256_out[f, 28 + k] = (h7 >> sb) & 0xFF
