"""One item's work in a batch, and the part of it that a device's hashers do.

``Pipeline.hash_item`` fills an item's ``Work`` with what it made on the CPU
and what it left to a device hasher (the file's bytes for a bytes group, the
decoded pictures' RGB pixels for an image group); the pipeline then runs each
device group once over the batch (``device_inputs`` gathers the inputs,
``distribute`` hands the answers back), and ``Work.finish`` puts the item's
hashes in the CPU path's order. Nothing here is a placeholder: a hash that is
not made is missing, and ``finish`` fails loudly rather than answer it empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from appliance.pixels import assemble
from appliance.results import HashValue, Item, ItemResult
from appliance.signals import SIGNALS


class DeviceHasher(Protocol):
    """One signal group's batch hasher on a device (see appliance.gpu.hashers).

    ``inputs`` are the files' bytes (media "bytes") or their pictures' RGB
    pixels, (H, W, 3) uint8 (media "image"); the answer is per input the
    hashes of ``names``. ``cpu`` is the same on the CPU: the fallback."""

    stage: str  # the device stage its faults are counted under

    def supports(self, name: str) -> bool: ...

    def label(self, names: Sequence[str], dihedral: bool) -> str: ...

    def batch(self, device: Any, inputs: Sequence[Any], names: Sequence[str],
              dihedral: bool = False) -> list[list[HashValue]]: ...

    def cpu(self, inputs: Sequence[Any], names: Sequence[str],
            dihedral: bool = False) -> list[list[HashValue]]: ...


@dataclass
class Work:
    """One item's hashes while its batch runs: what ``hash_item`` made, and
    what it left to the device hashers (no placeholders: ``finish`` puts the
    hashes in order once the device batches are done)."""

    # The bytes signals asked for (registry order) and their values, made by
    # hashlib or, for the groups in ``left``, by a device batch.
    digest_names: list[str] = field(default_factory=list)
    values: dict[str, bytes] = field(default_factory=dict)
    left: dict[str, list[str]] = field(default_factory=dict)
    # The image signals hashed, the hashes the decoder made (the CPU groups),
    # and for the exported ones the RGB pixels of each view and, per group,
    # the device's hashes of each view.
    pixel_names: tuple[str, ...] = ()
    pixel_hashes: list[HashValue] = field(default_factory=list)
    exported: tuple[str, ...] = ()
    images: list[NDArray[np.uint8]] = field(default_factory=list)
    device: dict[str, list[list[HashValue]]] = field(default_factory=dict)
    # Decode budget the pixels hold until the device has hashed them.
    held: int = 0
    # The video signals' values (appliance.media), after the pixels'.
    video_hashes: list[HashValue] = field(default_factory=list)

    def finish(self, result: ItemResult) -> None:
        """``result.hashes`` in the CPU path's order: the digests, the pixels, the video."""
        if result.error is not None:
            return
        result.hashes = [HashValue(n, self.values[n]) for n in self.digest_names]
        result.hashes += assemble(self.pixel_names, self.pixel_hashes, self.device)
        result.hashes += self.video_hashes
        if not result.hashes and result.skipped:
            # Nothing that was asked for could be made: the item as a whole failed.
            result.error = next(iter(result.skipped.values()))


# (work, the names it wants of the group, its inputs) of each item with work for a group.
Todo = list[tuple[Work, list[str], list[Any]]]


def device_inputs(group: str, items: Sequence[Item], works: Sequence[Work]) -> Todo:
    """The items with work left to ``group``'s device hasher, with their inputs:
    one file's bytes, or the RGB pixels of each view of its picture."""
    todo: Todo = []
    for item, work in zip(items, works, strict=True):
        if group in work.left:
            todo.append((work, work.left[group], [item.content]))
        elif work.images:
            wanted = [n for n in work.exported if SIGNALS[n].group == group]
            if wanted:
                todo.append((work, wanted, list(work.images)))
    return todo


def distribute(group: str, todo: Todo, out: Sequence[Sequence[HashValue]]) -> None:
    """Hand a device batch's answers (per input, in ``todo``'s order) to its items."""
    total = sum(len(xs) for _, _, xs in todo)
    if len(out) != total:
        raise RuntimeError(f"the {group} hasher gave {len(out)} answers for {total} inputs")
    at = 0
    for work, wanted, xs in todo:
        rows = [[h for h in row if h.signal in wanted] for row in out[at : at + len(xs)]]
        at += len(xs)
        if group in work.left:
            work.values.update((h.signal, h.value) for h in rows[0])
        else:
            work.device[group] = rows
