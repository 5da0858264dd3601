"""The cyclic garbage collector paused around work that makes many objects.

A Lookup of 100,000 hashes makes about 600,000 small objects (a result, its
lists, its hash value each), none of them in a cycle, yet each allocation
burst makes the collector walk them all again: it doubled the time of such a
Lookup (1.3 s to 2.6 s). Paused only around the thread's work, the collector
then walked them once, on the event loop, as soon as the next allocation came
(a legitimate caller's p99 doubled); so the pause covers the whole RPC, and
its objects are freed by reference counting before the collector runs again.

The collector is process-wide: it is paused while at least one such piece of
work runs (a count under a lock, as they overlap) and given back as it was.
"""

from __future__ import annotations

import gc

from appliance.override import SharedOverride


def _switch(on: bool) -> None:
    if on:
        gc.enable()
    else:
        gc.disable()


no_cycle_collection = SharedOverride(gc.isenabled, _switch, False)
"""``with no_cycle_collection():`` pauses the cyclic collector for the block."""
