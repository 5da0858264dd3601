"""The device hashers of the signal groups (appliance.gpu.hashers) against their
CPU twins, and the refusal of a signal that a device hasher cannot compute
(a fourth digest is computed or refused at start, never answered empty)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from appliance.backend import Backend
from appliance.errors import ConfigError
from appliance.gpu import hashers
from appliance.gpu.pipeline import device_hashers
from appliance.signals import SIGNALS
from tests.imaging import synthetic_image


def test_every_device_group_of_the_registry_has_its_hasher() -> None:
    found = device_hashers()
    assert found == {SIGNALS["md5"].group: hashers.digests, SIGNALS["pdq"].group: hashers.pdq}


def test_the_digest_kernel_answers_the_columns_asked_for(backend: Backend) -> None:
    files = [b"", b"a", b"x" * 55, b"y" * 64, bytes(range(256)) * 3]
    for names in (["md5", "sha1", "sha256"], ["sha256"], ["sha1", "md5"]):
        got = hashers.digests.batch(backend.gpu, files, names)
        assert got == hashers.digests.cpu(files, names)
        assert [[h.signal for h in row] for row in got] == [names] * len(files)
        assert [row[-1].value for row in got] == [
            hashlib.new(names[-1], f).digest() for f in files]


def test_a_digest_the_kernel_does_not_compute_is_refused(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="not blake2b"):
        hashers.digests.batch(backend.gpu, [b"abc"], ["md5", "blake2b"])
    fourth = replace(SIGNALS["sha256"], name="blake2b", nbytes=64)
    monkeypatch.setitem(SIGNALS, "blake2b", fourth)
    with pytest.raises(ConfigError, match="cannot compute blake2b"):
        device_hashers()


@pytest.mark.parametrize("dihedral", [False, True], ids=["plain", "dihedral"])
def test_the_pdq_kernels_answer_as_the_cpu_hasher(backend: Backend, dihedral: bool) -> None:
    images = [np.asarray(synthetic_image(i, size).convert("RGB"))
              for i, size in enumerate([(24, 20), (16, 16), (4, 9)])]
    got = hashers.pdq.batch(backend.gpu, images, ["pdq"], dihedral)
    assert got == hashers.pdq.cpu(images, ["pdq"], dihedral)
    assert [len(row) for row in got] == [8 if dihedral else 1] * len(images)
    assert got[0][0].variant == "" and got[0][0].quality is not None
    assert hashers.pdq.batch(backend.gpu, [], ["pdq"], dihedral) == []
