"""``import appliance`` (and the CPU server) loads no GPU library."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_gpu_library() -> None:
    code = (
        "import sys, appliance, appliance.server, appliance.cli, kernels\n"
        "import kernels.hamming, kernels.exact, kernels.digests, kernels.pdq\n"
        "bad = [m for m in sys.modules if m == 'cupy' or m.startswith(('cupy.', 'numba.cuda'))]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == ""
