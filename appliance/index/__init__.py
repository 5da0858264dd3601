"""Indexes over loaded hash lists and the immutable snapshot that matches against them.

``snapshot.INDEXES`` names the index class of each match kind:
``ExactIndex`` (sorted keys, binary search) serves exact signals (digests),
``MultiIndexHamming`` (multi-index hashing, ``mih``) serves Hamming signals
(PDQ, the imagehash family) and ``EuclideanIndex`` serves PhotoDNA.
``HammingIndex`` (brute-force xor + popcount) serves none: it is the
reference the others are tested against. ``Snapshot`` puts one index per
signal over each list and turns index hits into ``Hit`` records.
"""

from __future__ import annotations

from appliance.index.exact import ExactIndex
from appliance.index.hamming import HammingIndex, distance
from appliance.index.snapshot import Snapshot
from appliance.results import Hit

__all__ = ["ExactIndex", "HammingIndex", "Hit", "Snapshot", "distance"]
