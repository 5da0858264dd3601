"""Compile every numba kernel once, so that no request waits for it.

numba compiles a kernel at its first call and keeps the machine code in its
cache (``__pycache__`` next to the sources, or ``NUMBA_CACHE_DIR``): the first
start after an install compiles (10 to 30 s on a small machine), later ones
load from the cache (well under a second). ``python -m appliance.warmup`` runs
them all on tiny inputs; ``dev.py`` does it right after installing, and the
server does it before loading its lists, saying so while it takes time.
"""

from __future__ import annotations

import csv
import io
import sys
import time


def compile_kernels() -> float:
    """The hashing and index kernels on tiny inputs; the seconds it took."""
    started = time.perf_counter()
    import numpy as np

    from appliance.config import MatchingConfig
    from appliance.hashers.pdq import pdq_dihedral_from_rgb, pdq_from_rgb
    from appliance.index.snapshot import Snapshot
    from appliance.lists.csv_format import parse_csv
    from appliance.signals import SIGNALS

    rgb = np.zeros((80, 96, 3), np.uint8)
    rgb[::7] = 200
    pdq_from_rgb(rgb)
    pdq_dihedral_from_rgb(rgb)
    # One list with every signal's example, each matched: every index kind's kernels.
    # (Written by the csv module: a vPDQ value holds commas and quotes.)
    text = io.StringIO()
    examples = [s.examples[0] for s in SIGNALS.values()]
    csv.writer(text).writerows([["id", *SIGNALS], ["x", *examples]])
    listing = text.getvalue().encode()
    snapshot = Snapshot([parse_csv(listing, "warmup", "warmup")], MatchingConfig())
    for name, s in SIGNALS.items():
        snapshot.match(name, [s.parse(s.examples[0])], [100] if s.quality else None)
    _video()
    return time.perf_counter() - started


def _video() -> None:
    """The video signals' kernels: both hashes of a tiny clip, and both TMK scores."""
    from appliance.hashers.video import VideoJob, hash_video
    from appliance.signals import SIGNALS
    from appliance.video.synthetic import tiny
    from appliance.video.tmk import TmkFeatures

    names = tuple(n for n, s in SIGNALS.items() if s.media == "video")
    for value in hash_video(tiny(), VideoJob(names)).hashes:
        if SIGNALS[value.signal].match == "two_level":
            features = TmkFeatures.from_bytes(value.value)
            features.level2(features)


def main() -> int:
    print("compiling the hashing and index kernels once (numba: 10 to 30 s the first "
          "time, then loaded from its cache)...", file=sys.stderr, flush=True)
    print(f"kernels ready in {compile_kernels():.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
