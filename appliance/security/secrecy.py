"""A list that cannot be read back: what protected answers hold back, and probing.

A matcher that answers freely is an oracle that rebuilds its list. With
distances, one matching hash and its 256 one-bit flips give the listed PDQ
value bit by bit; without them, walking a matching hash out to the edge of
the threshold (where one more differing bit ends the match) and then
flipping each bit of that edge hash does the same from match / no-match
answers alone, in about 300 queries; and tests of several bits at once
(group testing) learn from the same edge without ever coming back to it.
Every one of them has to ask, again and again, about hashes whose distance
to the entry is close to the threshold, on either side. So for identities
without ``reveal = "full"``:

- hits of perceptual signals carry no distance (-1), no scores (the video
  signals') and do not echo the query: a hit says which list, version,
  entry and category matched, never how closely (exact digests keep
  distance 0: they say nothing the caller does not hold);
- their queries are searched ``band`` bits beyond each threshold too, and
  every distinct query whose distance to an entry lies within ``band`` bits
  of the threshold, inside or outside it, is an edge probe of that entry.
  An identity that has sent more than ``budget`` distinct probes of one
  entry is suspended: its match and lookup requests are refused until an
  operator reloads the identities (SIGHUP), so it has learnt at most about
  ``budget`` bits of the entry. Ordinary traffic (the same file again, near
  copies well inside the threshold, unrelated files far outside it) sends
  few distinct probes of any one entry.

A file or hash within the threshold is always reported as matching: the
defence withholds distances and stops the prober, it never hides a match.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace

from appliance.results import Hit
from appliance.signals import SIGNALS

log = logging.getLogger("appliance.security")

WITHHELD = -1
"""The distance of a hit whose distance is not revealed."""

# Bounded memory: probe counts of at most this many (identity, list, entry)
# keys (the least recently probed dropped), each at most budget + 1 digests
# of 8 bytes.
_MAX_KEYS = 100_000


def _hamming(signal: str) -> bool:
    known = SIGNALS.get(signal)
    return known is not None and known.match == "hamming"


def _perceptual(signal: str) -> bool:
    known = SIGNALS.get(signal)
    return known is not None and known.match != "exact"


def redact(hits: list[Hit]) -> list[Hit]:
    """Hits as a protected identity sees them: no distance, no query and no
    scores (a video hit's scores are its distance), for perceptual signals."""
    return [replace(h, distance=WITHHELD, query="", scores=()) if _perceptual(h.signal) else h
            for h in hits]


class ProbeGuard:
    """Edge-probe counts per identity and entry; suspends identities past the budget.

    Thread-safe: Lookups are observed in their own threads, files on the loop.
    """

    def __init__(self, band: int, budget: int, radius: Callable[[str], int],
                 on_suspend: Callable[[str], None] | None = None) -> None:
        self.band = band
        self.budget = budget
        self._radius = radius
        self._on_suspend = on_suspend
        self._lock = threading.Lock()
        # (identity, list, entry id) -> digests of its distinct probes
        self._probes: OrderedDict[tuple[str, str, str], set[bytes]] = OrderedDict()
        self.suspended: set[str] = set()

    def observe(self, identity: str, hits: Iterable[Hit]) -> None:
        """Count the edge probes among a request's hits: its matches and its near
        hits (searched ``band`` bits beyond the threshold), distances intact."""
        with self._lock:
            for hit in hits:
                if not _hamming(hit.signal) or not hit.query:
                    continue
                if abs(hit.distance - self._radius(hit.signal)) <= self.band:
                    self._probe(identity, (hit.list, hit.entry_id), hit.query)

    def _probe(self, identity: str, entry: tuple[str, str], query: str) -> None:
        key = (identity, *entry)
        seen = self._probes.get(key)
        if seen is None:
            seen = self._probes[key] = set()
            if len(self._probes) > _MAX_KEYS:
                self._probes.popitem(last=False)
        else:
            self._probes.move_to_end(key)
        if len(seen) > self.budget:
            return
        seen.add(hashlib.blake2b(query.encode(), digest_size=8).digest())
        if len(seen) > self.budget and identity not in self.suspended:
            self.suspended.add(identity)
            log.warning("identity %r suspended: more than %d distinct queries at the edge of "
                        "the threshold of %s entry %s (security.probe_budget); reload the "
                        "identities (SIGHUP) to lift it", identity, self.budget, *entry)
            if self._on_suspend is not None:
                self._on_suspend(identity)

    def clear(self) -> None:
        """Forget every count and lift every suspension (the identities were reloaded)."""
        with self._lock:
            self._probes.clear()
            self.suspended.clear()
