"""What every signal type is: ``SignalType``, and its per-signal settings, ``Option``.

A signal type owns everything that differs from one hash to the next: its
name and the list columns that mean it, the media it is computed from, how its
values are written (lowercase hex, as the reference tools print them), how
they match, its settings (threshold, quality gate, its own options), and
where its batch hashers live. The hashers and indexes are named by dotted
paths, resolved only when used, so that this module and every signal module
stay light: the thin client and ``appliance.results`` import them, and they
must load no numerical library.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from appliance.errors import ItemCode, ItemFault

Media = Literal["bytes", "image", "video", "external"]
"""Where a signal's values come from: the file's bytes, its decoded image, its
decoded video, or only from lists and clients (never computed here)."""
MatchKind = Literal["exact", "hamming", "euclidean", "two_level", "frames"]
"""How values match: equal bytes; Hamming or Euclidean distance within the
threshold; TMK's two scores (level-1 cosine, then level 2, each at least its
threshold); per-frame Hamming distance aggregated over a video's frames."""
# The kinds whose hits are within a distance (``SignalType.threshold``).
DISTANCE_KINDS: tuple[MatchKind, ...] = ("hamming", "euclidean")

_HEX = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class Option:
    """One setting of a signal type: the field ``<signal>_<key>`` of a section.

    ``[matching] pdq_threshold = 31``, ``APPLIANCE_MATCHING_PDQ_THRESHOLD``
    and ``[matching.pdq] threshold = 31`` all set the PDQ type's ``threshold``
    option. ``low``/``high`` bound an int (inclusive; None: unbounded),
    ``choices`` lists a text option's values; appliance.config checks them.
    ``flag``, ``dest`` and ``help`` are as in ``appliance.settings.setting``.
    """

    key: str
    default: int | float | bool | str
    help: str | None = None
    flag: str | None = None
    dest: str | None = None
    section: str = "matching"
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()

    @property
    def type(self) -> Any:
        """The field's type: bool, int, or a Literal of the choices."""
        if self.choices:
            return Literal[self.choices]
        return type(self.default)

    def check(self, where: str, value: Any) -> str | None:
        """Why ``value`` is not valid for this option (None: it is)."""
        if self.choices and value not in self.choices:
            return f"{where} must be one of {self.choices}, got {value!r}"
        low, high = self.low, self.high
        if low is not None and high is not None and not low <= value <= high:
            return f"{where} must be {low}..{high}, got {value}"
        if low is not None and value < low:
            return f"{where} must be >= {low}, got {value}"
        if high is not None and value > high:
            return f"{where} must be <= {high}, got {value}"
        return None


def threshold(default: int, high: int | None, help: str | None = None,
              flag: str | None = None) -> Option:
    """A match threshold: distance <= threshold is a match; 0..``high``."""
    return Option("threshold", default, help, flag, low=0, high=high)


@dataclass(frozen=True)
class SignalType:
    """One hash type. ``group``: the batch hasher that computes it (signals of
    one group are computed together, e.g. the digests in one pass over the
    bytes); ``cpu_hasher``/``device_hasher``: that group's batch hasher as a
    ``"module:attribute"`` path ("" / None: there is none). ``examples`` are
    valid values, test data for the tests generated over the registry.

    ``framed``: a value is one or more ``nbytes`` records, one per hashed
    frame of a video (vPDQ), not exactly ``nbytes``. Signals whose values
    are not hex (TMK's base64, vPDQ's JSON) override ``parse`` and
    ``format``."""

    name: str
    nbytes: int
    media: Media
    match: MatchKind
    group: str
    description: str
    examples: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    quality: bool = False
    # Computed when a request names no signal.
    by_default: bool = False
    cpu_hasher: str = ""
    device_hasher: str | None = None
    options: tuple[Option, ...] = ()
    framed: bool = False

    def fits(self, size: int) -> bool:
        """Whether ``size`` bytes is the length of a value of this signal."""
        return size > 0 and size % self.nbytes == 0 if self.framed else size == self.nbytes

    @property
    def hex_len(self) -> int:
        return 2 * self.nbytes

    @property
    def computable(self) -> bool:
        return self.media != "external"

    @property
    def hex_values(self) -> bool:
        """Whether values are written as hex (all but the video signals)."""
        return True

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

    def field(self, key: str) -> str:
        """The configuration field of this signal's option ``key``."""
        return f"{self.name}_{key}"

    def option(self, key: str) -> Option | None:
        return next((o for o in self.options if o.key == key), None)

    def threshold(self, matching: Any) -> int:
        """The match radius under ``matching`` (a MatchingConfig): the
        ``threshold`` option of distance kinds, 0 for the others (their
        hits are decided by their index, not by a distance)."""
        if self.match not in DISTANCE_KINDS:
            return 0
        if self.option("threshold") is None:
            raise ValueError(f"{self.match} signal {self.name!r} declares no threshold option")
        return int(getattr(matching, self.field("threshold")))

    def quality_min(self, matching: Any) -> int | None:
        """The quality below which a value is not matched; None: no gate."""
        if not self.quality or self.option("quality_min") is None:
            return None
        return int(getattr(matching, self.field("quality_min")))


def resolve(path: str) -> Any:
    """The object a ``"module:attribute"`` path names, imported on first use."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"not a 'module:attribute' path: {path!r}")
    return getattr(importlib.import_module(module), attribute)
