"""Modules stay small: no .py file of the package or the kernels over 400 lines.

The generated protobuf and gRPC modules (appliance/v1/) are not ours to split.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
GENERATED = ROOT / "appliance" / "v1"


def _sizes() -> dict[str, int]:
    sizes = {}
    for top in ("appliance", "kernels"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if not path.is_relative_to(GENERATED):
                with path.open("rb") as f:
                    sizes[path.relative_to(ROOT).as_posix()] = sum(1 for _ in f)
    return sizes


def test_the_walk_finds_the_modules() -> None:
    sizes = _sizes()
    assert "appliance/server.py" in sizes and "kernels/pdq.py" in sizes
    assert not any(name.startswith("appliance/v1/") for name in sizes)


def test_no_module_over_400_lines() -> None:
    over = {name: n for name, n in _sizes().items() if n > MAX_LINES}
    named = ", ".join(f"{name} ({n} lines)" for name, n in sorted(over.items()))
    assert not over, f"split these modules (at most {MAX_LINES} lines each): {named}"
