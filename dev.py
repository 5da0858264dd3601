#!/usr/bin/env python3
"""Set-up and entry points for a fresh machine that has only Python and pip.

    python3 dev.py serve [ARGS...]   start the server (embedded demo list, CPU)
    python3 dev.py test  [ARGS...]   ruff, mypy, the CUDA kernels under Numba's
                                     simulator, then the whole pytest suite

Each creates ./.venv on first use and (re)installs the project into it when
pyproject.toml has changed since the last install. Extra ARGS go to
`appliance serve` or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_venv(extra: str) -> None:
    """Create the virtualenv and install the project with ``extra`` if needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- runs under any python3
        raise SystemExit("Python 3.11 or newer is needed")
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extra.encode()).hexdigest()
    stamp = VENV / f".installed-{extra or 'base'}"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    _run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    target = f".[{extra}]" if extra else "."
    _run(PYTHON, "-m", "pip", "install", "--quiet", "-e", target)
    # Compile numba's kernels now, once, rather than in the first request.
    _run(PYTHON, "-m", "appliance.warmup")
    stamp.write_text(wanted)
    if extra:
        # An extra installs the base too: `dev.py serve` after `dev.py test` has nothing to do.
        base = VENV / ".installed-base"
        base.write_text(hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        ensure_venv("")
        os.execv(str(BIN / "appliance"), [str(BIN / "appliance"), "serve", *rest])
    ensure_venv("test")
    try:
        _run(BIN / "ruff", "check", ".")
        _run(BIN / "mypy")
        if not rest:
            # The CUDA kernels, under Numba's simulator: a process of their own,
            # since the simulator replaces numba.cuda for the whole process.
            print("+ NUMBA_ENABLE_CUDASIM=1 pytest tests/kernels", flush=True)
            env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
            subprocess.run([str(PYTHON), "-m", "pytest", "-q", "tests/kernels"], cwd=ROOT,
                           env=env, check=True)
        _run(PYTHON, "-m", "pytest", *rest)
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
