"""The device implementations of the signal groups that have one.

A signal type names its group's device hasher by path (``device_hasher``,
resolved by ``appliance.signals.resolve``); the GPU pipeline runs each one
once per batch over all of the batch's inputs of that group (file bytes, or
the RGB pixels of decoded images) and gets, per input, the hashes of the
signals asked for, named by the signal types' names. Each hasher also has
``cpu``, its CPU twin on the same inputs: what a batch falls back to on a
device fault, and what the warm-up checks the kernels against.

No signal is named here: the digest kernel's outputs are named by the kernel
(``kernels.digests.COLUMNS``, hashlib's names), and a signal type whose name
is not among them is refused (``supports``), never answered with an empty
value; PDQ's hasher computes the one signal of its group, whatever its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from appliance.hashers.digests import digest_bytes
from appliance.hashers.pdq import DIHEDRAL_VARIANTS, pdq_dihedral_from_rgb, pdq_from_rgb
from appliance.results import HashValue
from kernels.digests import COLUMNS, digest_batch
from kernels.pdq import HASH_BYTES, pdq_batch

Content = bytes | bytearray | memoryview


class Digests:
    """The fused digest kernel (kernels.digests): every digest of every file
    in one launch, one GPU thread per file. Inputs: the files' bytes."""

    # The device stage its faults are counted under (metrics, fault_hook).
    stage = "digest"

    def supports(self, name: str) -> bool:
        return name in COLUMNS

    def label(self, names: Sequence[str], dihedral: bool) -> str:
        """The kernel's name in the warm-up's log line."""
        return self.stage

    def _columns(self, names: Sequence[str]) -> list[int]:
        missing = [n for n in names if n not in COLUMNS]
        if missing:
            raise ValueError(f"the digest kernel computes {', '.join(COLUMNS)}, "
                             f"not {', '.join(missing)}")
        return [COLUMNS.index(n) for n in names]

    def batch(self, device: Any, contents: Sequence[Content], names: Sequence[str],
              dihedral: bool = False) -> list[list[HashValue]]:
        """Per file, the digests ``names`` (in that order), computed on ``device``."""
        columns = self._columns(names)
        if not contents:
            return []
        lengths = np.array([len(c) for c in contents], dtype=np.int64)
        offsets = np.zeros(len(contents), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        flat = device.staging(max(1, int(lengths.sum())))
        for content, offset, length in zip(contents, offsets.tolist(), lengths.tolist(),
                                           strict=True):
            flat[offset : offset + length] = np.frombuffer(content, dtype=np.uint8)
        out = digest_batch(device.upload(flat), device.upload(offsets), device.upload(lengths),
                           device.xp, stream=device.kernel_stream)
        host = [device.to_host(out[c]) for c in columns]
        return [[HashValue(name, host[k][row].tobytes()) for k, name in enumerate(names)]
                for row in range(len(contents))]

    def cpu(self, contents: Sequence[Content], names: Sequence[str],
            dihedral: bool = False) -> list[list[HashValue]]:
        """The same with hashlib."""
        self._columns(names)
        out = []
        for content in contents:
            values = digest_bytes(content, names)
            out.append([HashValue(name, values[name]) for name in names])
        return out


class Pdq:
    """The PDQ kernels (kernels.pdq) over the RGB pixels of decoded images, with
    the 8 rotations/flips when ``dihedral``. Inputs: (H, W, 3) uint8 images."""

    stage = "perceptual"

    def supports(self, name: str) -> bool:
        return True  # the one signal of its group

    def label(self, names: Sequence[str], dihedral: bool) -> str:
        return f"{self._name(names)} dihedral" if dihedral else self._name(names)

    @staticmethod
    def _name(names: Sequence[str]) -> str:
        if len(names) != 1:
            raise ValueError(f"the PDQ kernels compute one signal, not {list(names)}")
        return names[0]

    @staticmethod
    def _values(name: str, rows: Sequence[Sequence[bytes]], qualities: Sequence[int]
                ) -> list[list[HashValue]]:
        variants = DIHEDRAL_VARIANTS if rows and len(rows[0]) > 1 else DIHEDRAL_VARIANTS[:1]
        # The first variant is the picture as it is: no variant name, as the CPU path.
        return [[HashValue(name, bytes(value), int(quality), variant if v else "")
                 for v, (variant, value) in enumerate(zip(variants, row, strict=True))]
                for row, quality in zip(rows, qualities, strict=True)]

    def batch(self, device: Any, images: Sequence[NDArray[np.uint8]], names: Sequence[str],
              dihedral: bool = False) -> list[list[HashValue]]:
        """Per image its PDQ hashes (1, or 8 with ``dihedral``) with its quality."""
        name = self._name(names)
        if not images:
            return []
        hashes, qualities = pdq_batch(images, device.xp, dihedral=dihedral,
                                      host_buffer=device.staging, stream=device.kernel_stream)
        rows = hashes.reshape(len(images), -1, HASH_BYTES)
        return self._values(name, [[r.tobytes() for r in image] for image in rows],
                            [int(q) for q in qualities])

    def cpu(self, images: Sequence[NDArray[np.uint8]], names: Sequence[str],
            dihedral: bool = False) -> list[list[HashValue]]:
        """The same with the CPU hasher, on the same pixels."""
        name = self._name(names)
        rows: list[list[bytes]] = []
        qualities: list[int] = []
        for rgb in images:
            if dihedral:
                values, quality = pdq_dihedral_from_rgb(rgb)
                rows.append([bytes(v) for v in values])
            else:
                value, quality = pdq_from_rgb(rgb)
                rows.append([bytes(value)])
            qualities.append(int(quality))
        return self._values(name, rows, qualities)


digests = Digests()
pdq = Pdq()
