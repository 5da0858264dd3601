"""The registry of signals: every hash type the appliance knows, in one place.

A signal says how wide its values are, how they are written (lowercase hex, as
the reference tools print them), how they match (exactly, or by Hamming
distance) and where they come from (the file's bytes, its decoded pixels, or
only from lists and clients). Adding a signal is one entry here plus, if it is
computable, one hasher.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from appliance.errors import ItemCode, ItemFault

Source = Literal["bytes", "pixels", "external"]
MatchKind = Literal["exact", "hamming", "euclidean"]

_HEX = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class Signal:
    name: str
    nbytes: int
    source: Source
    match: MatchKind
    description: str

    @property
    def hex_len(self) -> int:
        return 2 * self.nbytes

    def parse(self, text: str) -> bytes:
        """Hex text -> raw bytes. Accepts upper case and surrounding blanks;
        raises ItemFault(MALFORMED_HASH) on anything else."""
        value = text.strip().lower()
        if len(value) != self.hex_len or not _HEX.fullmatch(value):
            raise ItemFault(
                ItemCode.MALFORMED_HASH,
                f"{self.name} must be {self.hex_len} hex digits, got {len(value)} "
                f"character{'' if len(value) == 1 else 's'}",
            )
        return bytes.fromhex(value)

    def format(self, value: bytes) -> str:
        return value.hex()


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("md5", 16, "bytes", "exact", "MD5 of the file's bytes"),
        Signal("sha1", 20, "bytes", "exact", "SHA-1 of the file's bytes"),
        Signal("sha256", 32, "bytes", "exact", "SHA-256 of the file's bytes"),
        Signal("pdq", 32, "pixels", "hamming", "PDQ perceptual hash (256 bits) and quality"),
        Signal("phash", 8, "pixels", "hamming", "imagehash's DCT hash (64 bits)"),
        Signal("dhash", 8, "pixels", "hamming", "imagehash's difference hash (64 bits)"),
        Signal("ahash", 8, "pixels", "hamming", "imagehash's average hash (64 bits)"),
        Signal("whash", 8, "pixels", "hamming", "imagehash's Haar wavelet hash (64 bits)"),
        Signal(
            "photodna",
            144,
            "external",
            "euclidean",
            "PhotoDNA vector; proprietary, never computed here, matched from client values",
        ),
    )
}

DIGEST_SIGNALS: tuple[str, ...] = tuple(n for n, s in SIGNALS.items() if s.source == "bytes")
COMPUTABLE_SIGNALS: tuple[str, ...] = tuple(
    n for n, s in SIGNALS.items() if s.source != "external"
)
# What a request that names no signal gets. The imagehash family is asked for
# by name: four more full-image resizes per file are not worth it by default.
DEFAULT_SIGNALS: tuple[str, ...] = ("md5", "sha1", "sha256", "pdq")


def get(name: str) -> Signal:
    """The signal called ``name`` (case-insensitive), or ItemFault(UNKNOWN_SIGNAL)."""
    signal = SIGNALS.get(name.strip().lower())
    if signal is None:
        raise ItemFault(
            ItemCode.UNKNOWN_SIGNAL,
            f"unknown signal {name!r}; known: {', '.join(SIGNALS)}",
        )
    return signal


def select_computable(names: Iterable[str]) -> tuple[str, ...]:
    """Validate a request's signal names; empty means the defaults.

    Returns the names in registry order without duplicates. Raises
    ItemFault(UNKNOWN_SIGNAL) for a name that is not registered and
    ItemFault(NOT_COMPUTABLE) for one that cannot be computed from a file.
    """
    wanted = {get(n).name for n in names if n.strip()}
    if not wanted:
        return DEFAULT_SIGNALS
    for name in wanted:
        if SIGNALS[name].source == "external":
            raise ItemFault(
                ItemCode.NOT_COMPUTABLE,
                f"{name} cannot be computed by the appliance; send precomputed values to Lookup",
            )
    return tuple(n for n in SIGNALS if n in wanted)
