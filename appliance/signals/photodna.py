"""PhotoDNA: 144-byte vectors from lists and clients; proprietary, never computed here."""

from __future__ import annotations

from appliance.signals.base import SignalType, threshold

SIGNAL = SignalType(
    name="photodna",
    nbytes=144,
    media="external",
    match="euclidean",
    group="photodna",
    description="PhotoDNA vector; proprietary, never computed here, matched from client values",
    examples=(bytes(range(144)).hex(),),
    # Euclidean distance over the 144 bytes. 0 matches identical vectors only;
    # set the threshold your PhotoDNA licence documentation recommends.
    options=(threshold(0, None),),
)
