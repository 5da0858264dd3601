"""The ``.tmk`` file layout of TMK+PDQF values, in pure Python (no NumPy).

A value is the bytes of a ``.tmk`` file exactly as ThreatExchange's
``tmk-hash-video`` writes it (``io/tmkio.cpp``, ``algo/tmkfv.cpp``), so
hashes move between the appliance and the reference tools both ways: a
32-byte header (magics "TMK1", "FVEC", "PDQF"; frames per second, periods,
coefficients, feature dimension and the count of resampled frames, int32),
then the periods (int32), the Fourier coefficients, the pure average, the
cosine features and the sine features (float32, period-major), all
little-endian: 263,344 bytes with the reference's parameters, the only ones
read (the reference cannot compare features made with others either).

Its text is the standard base64 of those bytes, with padding (what NCMEC and
StopNCII carry). The signal type (appliance.signals) and the thin client
read values through this module, so it must not import NumPy.
"""

from __future__ import annotations

import base64
import binascii
import struct

from appliance.errors import ItemCode, ItemFault

FPS = 15  # frames a second after resampling (the reference's ffmpeg -r 15)
SIDE = 64  # frames are stretched to 64x64 (ffmpeg -s 64:64, no aspect kept)
DIM = 256  # the PDQF feature: the 16x16 DCT block
PERIODS = (2731, 4391, 9767, 14653)
# a_j = I_j(32)/sinh(32) (j >= 1), (I_0(32) - e^-32)/(2 sinh 32): the
# reference's tabulated "Poullot" coefficients (stored as float32).
COEFFICIENTS = (
    0.0708041893112, 0.13937789309, 0.132897260304, 0.122765735552, 0.109878684888,
    0.09529606433, 0.0800986647852, 0.0652590650356, 0.0515478238322, 0.0394851531195,
    0.0293374252025, 0.0211492623679, 0.0147973073245, 0.0100512818746, 0.0066306408014,
    0.00424947117334, 0.0026467615764, 0.00160270959695, 0.000943882629639,
    0.000540841638603, 0.000301633183798, 0.000163800158855, 8.66454753015e-05,
    4.46626303151e-05, 2.24429442235e-05, 1.09982139799e-05, 5.25823487999e-06,
    2.45358229988e-06, 1.11781474895e-06, 4.97406489221e-07, 2.16265487234e-07,
    9.19087006565e-08)
P, M = len(PERIODS), len(COEFFICIENTS)
HEADER = struct.Struct("<4s4s4s5i")
PARAMETERS = struct.pack(f"<{P}i{M}f", *PERIODS, *COEFFICIENTS)
PURE_AT = HEADER.size + len(PARAMETERS)  # 176
COS_AT = PURE_AT + 4 * DIM  # 1200
BLOCK = 4 * P * M * DIM  # the cosine (or sine) features: 131,072 bytes
TMK_BYTES = COS_AT + 2 * BLOCK  # 263,344
BASE64_CHARS = 4 * ((TMK_BYTES + 2) // 3)
_FLOATS = struct.unpack(f"<{M}f", PARAMETERS[4 * P:])


def header(frames: int) -> bytes:
    """The 32-byte header and the parameters of a value of ``frames`` frames."""
    return HEADER.pack(b"TMK1", b"FVEC", b"PDQF", FPS, P, M, DIM, frames) + PARAMETERS


def example(seed: int) -> bytes:
    """A well-formed value whose features are unit spikes (element ``seed`` and
    on) scaled as the reference scales them: it scores 1 against itself at both
    levels and 0 against another seed's. The signal type's examples."""
    pure = [0.0] * DIM
    pure[seed % DIM] = 1.0
    blocks = []
    for sine in (False, True):
        for _ in PERIODS:
            for j, a in enumerate(_FLOATS):
                vector = [0.0] * DIM
                if not (sine and j == 0):
                    vector[(seed + 2 * j + sine) % DIM] = a ** 0.5
                blocks.append(struct.pack(f"<{DIM}f", *vector))
    return header(1) + struct.pack(f"<{DIM}f", *pure) + b"".join(blocks)


def frames(value: bytes | memoryview) -> int:
    """The count of resampled frames a value's header gives."""
    return int(HEADER.unpack_from(value)[7])


def check(value: bytes | memoryview) -> bytes:
    """``value`` as bytes if it is a ``.tmk`` of the reference's parameters
    with finite features; ItemFault(MALFORMED_HASH) otherwise."""
    raw = bytes(value)
    if len(raw) != TMK_BYTES:
        raise bad(f"a .tmk value is {TMK_BYTES} bytes, got {len(raw)}")
    project, kind, algorithm, fps, periods, coefficients, dim, count = HEADER.unpack_from(raw)
    if (project, kind) != (b"TMK1", b"FVEC"):
        raise bad("not a TMK feature-vector file (magic is not TMK1/FVEC)")
    if algorithm != b"PDQF":
        raise bad(f"frame features {algorithm!r} are not PDQF")
    if (fps, periods, coefficients, dim) != (FPS, P, M, DIM) or count < 0:
        raise bad(f"parameters fps={fps} periods={periods} coefficients={coefficients} "
                  f"dimension={dim} frames={count} are not the reference's")
    stored = struct.unpack_from(f"<{P}i{M}f", raw, HEADER.size)
    if stored[:P] != PERIODS or any(
            abs(s - c) > 1e-6 * c for s, c in zip(stored[P:], _FLOATS, strict=True)):
        raise bad("periods or Fourier coefficients are not the reference's")
    if not _finite(raw):
        raise bad("features hold NaN or infinity")
    return raw


def _finite(raw: bytes) -> bool:
    """No float32 of the features has an all-ones exponent (NaN, infinity).
    NumPy is imported here, on first use: the thin client imports this module."""
    import numpy as np

    words = np.frombuffer(raw, "<u4", offset=PURE_AT)
    return not bool(((words & 0x7F800000) == 0x7F800000).any())


def from_text(text: str) -> bytes:
    """Base64 text (standard alphabet, padded; blanks and line breaks ignored)."""
    compact = "".join(text.split())
    if len(compact) != BASE64_CHARS:
        raise bad(f"a .tmk value is {BASE64_CHARS} base64 characters, got {len(compact)}")
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(f"not base64: {exc}") from exc
    return check(raw)


def to_text(value: bytes | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def bad(message: str) -> ItemFault:
    return ItemFault(ItemCode.MALFORMED_HASH, f"tmk: {message}")
