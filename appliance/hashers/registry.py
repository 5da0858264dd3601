"""The CPU batch hashers of the image signals, and which signal each computes.

Digest signals are computed from bytes by ``hashers.digests``. Image signals
come in groups that share work (the imagehash family shares one greyscale
conversion): each group takes the decoded image, the names wanted from it and
the hashing options, and returns HashValues. Which group computes a signal is
the signal type's (``SignalType.cpu_hasher``, a path to ``pdq`` or ``family``
here); ``GROUPS`` is that, read from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from appliance.decode import Decoded
from appliance.errors import ItemCode, ItemFault
from appliance.hashers.imagehash_family import family_hashes
from appliance.hashers.pdq import DIHEDRAL_VARIANTS, pdq_dihedral_from_rgb, pdq_from_rgb
from appliance.results import HashValue
from appliance.signals import SIGNALS, resolve


@dataclass(frozen=True)
class PixelOptions:
    # Also give the 7 other rotations/flips of PDQ (variants named as DIHEDRAL_VARIANTS).
    pdq_dihedral: bool = False


GroupHasher = Callable[[Decoded, Sequence[str], PixelOptions], list[HashValue]]


def pdq(decoded: Decoded, names: Sequence[str], options: PixelOptions) -> list[HashValue]:
    rgb = decoded.rgb()
    if not options.pdq_dihedral:
        value, quality = pdq_from_rgb(rgb)
        return [HashValue("pdq", value, quality)]
    values, quality = pdq_dihedral_from_rgb(rgb)
    return [
        HashValue("pdq", value, quality, "" if variant == "original" else variant)
        for variant, value in zip(DIHEDRAL_VARIANTS, values, strict=True)
    ]


def family(decoded: Decoded, names: Sequence[str], options: PixelOptions) -> list[HashValue]:
    try:
        values = family_hashes(decoded.image, names)
    except ValueError as exc:  # a mode with no greyscale form, as in imagehash
        raise ItemFault(
            ItemCode.UNSUPPORTED_IMAGE, f"mode {decoded.image.mode}: {exc}"
        ) from exc
    return [HashValue(name, values[name]) for name in names]


# Each image signal -> the group that computes it, as its signal type names it.
GROUPS: dict[str, GroupHasher] = {
    name: resolve(s.cpu_hasher) for name, s in SIGNALS.items() if s.media == "image"
}


def hash_pixels(
    decoded: Decoded,
    names: Sequence[str],
    options: PixelOptions,
    groups: Mapping[str, GroupHasher] = GROUPS,
) -> list[HashValue]:
    """All requested pixel signals of one decoded image, each group called once.

    ``groups`` replaces the group of some signals (the GPU backend leaves PDQ
    to its kernel); the order of the hashes stays the same.
    """
    by_group: dict[GroupHasher, list[str]] = {}
    for name in names:
        by_group.setdefault(groups[name], []).append(name)
    out: list[HashValue] = []
    for group, wanted in by_group.items():
        out.extend(group(decoded, wanted, options))
    return out
