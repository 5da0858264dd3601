"""The result types: files in, hashes and hits out, and why an item failed.

A leaf module: it imports the standard library and the signal registry only
(no NumPy, numba, Pillow or index code), so the thin gRPC client, metrics,
audit and batching can use these types without loading any numerical library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from appliance.errors import ItemFault
from appliance.signals import SIGNALS

if TYPE_CHECKING:
    from appliance.decode import Layout


@dataclass(frozen=True)
class HashValue:
    """One computed hash. ``variant`` is "" for the file as stored, else which
    transform of it was hashed (a dihedral rotation/flip, or "exif")."""

    signal: str
    value: bytes
    quality: int | None = None
    variant: str = ""

    @property
    def hex(self) -> str:
        return SIGNALS[self.signal].format(self.value)


@dataclass(frozen=True)
class Hit:
    """One match of one queried value against one list entry."""

    signal: str
    list: str
    list_version: str
    entry_id: str
    category: str
    distance: int
    query: str  # the looked-up value, as lowercase hex
    # Which transform of the file matched ("" = as stored; a dihedral variant; "exif").
    variant: str = ""
    # "block" or "allow": the kind of the list hit.
    kind: str = "block"
    # A block hit on a file that an allow list also matched: reported, not a match.
    suppressed: bool = False
    # The video signals' scores, (name, value) pairs: see MatchHit.scores.
    scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Item:
    """One file to process. ``digests`` holds values already computed while
    the bytes streamed in (MatchStream), so they are not computed twice;
    ``streamed`` files are held to ``max_stream_bytes``, others to
    ``max_file_bytes``."""

    id: str
    content: bytes | memoryview
    signals: tuple[str, ...] = ()
    digests: Mapping[str, bytes] | None = None
    streamed: bool = False
    # False for Hash requests: hashes only, no match against the lists.
    match: bool = True
    # The request's deadline (time.monotonic), when it has one: a file whose
    # deadline passes while it waits or decodes is stopped there.
    deadline: float | None = None
    # The file's structure, when the server already probed it to pick its lane
    # (or the fault the probe found, so that it is not probed twice).
    layout: Layout | ItemFault | None = None
    # Also find the hits up to this many bits beyond each Hamming threshold,
    # into ``ItemResult.near``: the probe guard counts them (protected answers).
    probe_band: int = 0


@dataclass(frozen=True)
class ItemError:
    code: str
    message: str

    @classmethod
    def of(cls, fault: ItemFault) -> ItemError:
        return cls(fault.code, fault.message)


@dataclass
class ItemResult:
    id: str
    size: int
    hashes: list[HashValue] = field(default_factory=list)
    # Requested signals that could not be made, with why.
    skipped: dict[str, ItemError] = field(default_factory=dict)
    # Set when the item could not be processed at all.
    error: ItemError | None = None
    matches: list[Hit] = field(default_factory=list)
    # Hits beyond the threshold within the item's probe band: never reported.
    near: list[Hit] = field(default_factory=list)

    def skip(self, names: Iterable[str], fault: ItemFault) -> None:
        """Each of ``names`` skipped for ``fault`` (the file's other hashes stand)."""
        for name in names:
            self.skipped[name] = ItemError.of(fault)

    @property
    def matched(self) -> bool:
        """True when a block list matched and no allow list vouched for the file."""
        return any(h.kind == "block" and not h.suppressed for h in self.matches)


def suppress_allowed(hits: list[Hit]) -> list[Hit]:
    """An allow-list hit (e.g. NSRL: a known-benign file) marks the file's block
    hits suppressed: they are still reported, but the file is not matched."""
    if not any(h.kind == "allow" for h in hits):
        return hits
    return [replace(h, suppressed=True) if h.kind == "block" else h for h in hits]
