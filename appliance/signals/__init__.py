"""The registry of signals: every hash type the appliance knows, one line each.

Each signal type is one module of this package (``SignalType``, in
appliance.signals.base, says what a module declares); the order below is the
order of hashes in answers. Adding a signal is one module and one line here:
its settings, flags, list columns and the tests generated over the registry
(tests/test_signal_types.py) follow from the registry. See README, "Adding a
signal".

Importing this package loads no numerical library: hashers and indexes are
named by paths and imported when used (``resolve``).
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.errors import ItemCode, ItemFault
from appliance.signals import (
    ahash,
    dhash,
    md5,
    pdq,
    phash,
    photodna,
    sha1,
    sha256,
    tmk,
    vpdq,
    whash,
)
from appliance.signals.base import DISTANCE_KINDS, MatchKind, Media, Option, SignalType, resolve

__all__ = [
    "COMPUTABLE_SIGNALS", "DEFAULT_SIGNALS", "DIGEST_SIGNALS", "SIGNALS", "MatchKind", "Media",
    "Option", "Signal", "SignalType", "get", "group_signals", "options", "resolve",
    "select_computable",
]

Signal = SignalType  # the name callers used before signal types had modules



def _checked(*signals: SignalType) -> dict[str, SignalType]:
    """The registry, refused at import (so at start, not at a first request)
    where a signal type lacks what its match rule or media needs."""
    for s in signals:
        if s.match in (*DISTANCE_KINDS, "frames") and s.option("threshold") is None:
            raise TypeError(f"{s.match} signal {s.name!r} declares no threshold option")
        if s.match == "two_level" and not (s.option("level1") and s.option("level2")):
            raise TypeError(f"two-level signal {s.name!r} declares no level1/level2 options")
        if s.quality and s.option("quality_min") is None:
            raise TypeError(f"signal {s.name!r} has qualities but no quality_min option")
        if s.computable and not s.cpu_hasher:
            raise TypeError(f"computable signal {s.name!r} names no cpu_hasher")
    if len({s.name for s in signals}) != len(signals):
        raise TypeError("two signal types have the same name")
    return {s.name: s for s in signals}


SIGNALS: dict[str, SignalType] = _checked(
    md5.SIGNAL,
    sha1.SIGNAL,
    sha256.SIGNAL,
    pdq.SIGNAL,
    phash.SIGNAL,
    dhash.SIGNAL,
    ahash.SIGNAL,
    whash.SIGNAL,
    photodna.SIGNAL,
    tmk.SIGNAL,
    vpdq.SIGNAL,
)

DIGEST_SIGNALS: tuple[str, ...] = tuple(n for n, s in SIGNALS.items() if s.media == "bytes")
COMPUTABLE_SIGNALS: tuple[str, ...] = tuple(n for n, s in SIGNALS.items() if s.computable)
# What a request that names no signal gets (md5, sha1, sha256, pdq). The
# imagehash family is asked for by name: four more full-image resizes per
# file are not worth it by default.
DEFAULT_SIGNALS: tuple[str, ...] = tuple(n for n, s in SIGNALS.items() if s.by_default)


def get(name: str) -> SignalType:
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
        if not SIGNALS[name].computable:
            raise ItemFault(
                ItemCode.NOT_COMPUTABLE,
                f"{name} cannot be computed by the appliance; send precomputed values to Lookup",
            )
    return tuple(n for n in SIGNALS if n in wanted)


def group_signals(media: Media) -> dict[str, tuple[str, ...]]:
    """group -> its signals, in registry order, of the signals computed from ``media``."""
    out: dict[str, tuple[str, ...]] = {}
    for s in SIGNALS.values():
        if s.media == media:
            out[s.group] = (*out.get(s.group, ()), s.name)
    return out


def options(section: str) -> list[tuple[SignalType, Option]]:
    """Every signal's options of configuration ``section``, in registry order."""
    return [(s, o) for s in SIGNALS.values() for o in s.options if o.section == section]
