from __future__ import annotations

import pytest

from appliance import signals as sig
from appliance.errors import ItemCode, ItemFault


def test_parse_normalises_and_validates() -> None:
    md5 = sig.get("MD5")
    assert md5.parse(" D41D8CD98F00B204E9800998ECF8427E ") == bytes.fromhex(
        "d41d8cd98f00b204e9800998ecf8427e"
    )
    short, long = "d41d8cd98f00b204e9800998ecf8427", "d41d8cd98f00b204e9800998ecf8427e0"
    for bad in (short, "g" * 32, "", long):
        with pytest.raises(ItemFault) as info:
            md5.parse(bad)
        assert info.value.code == ItemCode.MALFORMED_HASH


def test_registry() -> None:
    # Of a picture md5, sha1, sha256 and pdq; of a video tmk and vpdq instead
    # of pdq (appliance.media picks by the file's container).
    assert sig.DEFAULT_SIGNALS == ("md5", "sha1", "sha256", "pdq", "tmk", "vpdq")
    assert sig.SIGNALS["photodna"].nbytes == 144
    assert sig.select_computable([]) == sig.DEFAULT_SIGNALS
    assert sig.select_computable(["pdq", "md5", "md5"]) == ("md5", "pdq")
    with pytest.raises(ItemFault) as info:
        sig.select_computable(["md5", "phash2"])
    assert info.value.code == ItemCode.UNKNOWN_SIGNAL
    with pytest.raises(ItemFault) as info:
        sig.select_computable(["photodna"])
    assert info.value.code == ItemCode.NOT_COMPUTABLE
