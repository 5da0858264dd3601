"""The thin client (``appliance.client``, ``appliance hash|match --server``) loads
no numerical library: it only speaks gRPC, also while it talks to a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import encode, start_server_process, synthetic_image

ENV = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}

# Printed by the child: the heavy modules it had loaded by the end.
_HEAVY = (
    "import sys\n"
    "HEAVY = ('numba', 'scipy', 'pywt', 'PIL', 'cupy')\n"
    "def heavy():\n"
    "    return sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)\n"
)


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _HEAVY + code], capture_output=True,
                          text=True, timeout=120, env=ENV)


def test_import_client_loads_no_numerical_library() -> None:
    # appliance.security.tls: what the client imports for --tls-ca/--tls-cert.
    out = _child("import appliance.client, appliance.security.tls\nprint(','.join(heavy()))\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.fixture(scope="module")
def server_address() -> Iterator[str]:
    proc, address, _ = start_server_process()
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_cli_against_a_live_server_loads_no_numerical_library(
    tmp_path: Path, server_address: str
) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(encode(synthetic_image(7, (128, 96)), "PNG"))
    big = tmp_path / "big.bin"  # over the single-call limit: sent through MatchStream
    big.write_bytes(os.urandom(5 << 20))
    runs = [["hash", "--server", server_address, str(picture)],
            ["match", "--server", server_address, str(picture), str(big)]]
    # `python -m appliance ...` in the child's own process, then its sys.modules.
    code = (
        "import json, runpy\n"
        "codes = []\n"
        f"for argv in {runs!r}:\n"
        "    sys.argv = ['appliance', *argv]\n"
        "    try:\n"
        "        runpy.run_module('appliance', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exc:\n"
        "        codes.append(exc.code)\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy()}))\n"
    )
    out = _child(code)
    assert out.returncode == 0, out.stderr
    *answers, last = out.stdout.strip().splitlines()
    report = json.loads(last)
    assert report == {"codes": [0, 0], "heavy": []}, out.stderr
    hashed, matched, streamed = (json.loads(line) for line in answers)
    assert hashed["file"] == str(picture) and len(hashed["pdq"]) == 64
    assert "matches" not in hashed
    assert matched["pdq"] == hashed["pdq"] and matched["matched"] is False
    assert streamed["file"] == str(big) and len(streamed["sha256"]) == 64
