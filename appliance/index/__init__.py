"""Indexes over loaded hash lists and the immutable snapshot that matches against them.

``ExactIndex`` (sorted keys, binary search) serves exact signals,
``HammingIndex`` (brute-force xor + popcount) serves Hamming signals, and
``Snapshot`` puts one index per signal over all lists and turns index hits
into ``Hit`` records.
"""

from __future__ import annotations

from appliance.index.exact import ExactIndex
from appliance.index.hamming import HammingIndex, distance
from appliance.index.snapshot import Hit, Snapshot

__all__ = ["ExactIndex", "HammingIndex", "Hit", "Snapshot", "distance"]
