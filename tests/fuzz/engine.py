"""What every fuzz harness shares: the target record and the atheris glue.

A target is a plain function ``one_input(data: bytes) -> None`` that returns
for any input the code under test handles as documented (a result, or its
typed error) and raises anything else, plus the seed corpus it starts from,
generated in code. Importing a harness needs no atheris: only ``main`` (run
by ``scripts/fuzz.py`` as ``python -m tests.fuzz.fuzz_NAME TARGET ARGS...``)
imports it, instruments the code under test and hands the target to libFuzzer.
"""

from __future__ import annotations

import gc
import importlib
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

OneInput = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    """One fuzz target: the check, its seeds, and which packages to instrument
    for coverage (Python code only; C decoders are not instrumented)."""

    name: str
    one_input: OneInput
    seeds: Callable[[], list[bytes]]
    instrument: tuple[str, ...] = ("appliance",)


def _instrument(prefixes: Sequence[str]) -> int:
    """Add atheris's coverage to every function already imported from a module
    under ``prefixes``, in place (``__code__``), so that every reference to it
    (imported names, methods, nested functions) is covered. Modules were
    imported before atheris was: the harness must import without it."""
    atheris = importlib.import_module("atheris")
    objects = gc.get_objects()
    # numba compiles a kernel from its Python function's bytecode, which must
    # stay as it is: the functions behind numba dispatchers are left alone.
    compiled = {id(getattr(obj, "py_func", None)) for obj in objects
                if str(getattr(type(obj), "__module__", "")).startswith("numba")}
    done = 0
    for obj in objects:
        if not isinstance(obj, types.FunctionType) or id(obj) in compiled:
            continue
        module = str(getattr(obj, "__module__", None) or "")
        if not any(module == p or module.startswith(p + ".") for p in prefixes):
            continue
        try:
            atheris.instrument_func(obj)
        except Exception:  # a function atheris cannot patch stays uncovered
            continue
        done += 1
    return done


def main(targets: Mapping[str, Target], argv: Sequence[str] | None = None) -> None:
    """``argv``: [program, TARGET, libFuzzer arguments and corpus dirs...]."""
    args = list(sys.argv if argv is None else argv)
    if len(args) < 2 or args[1] not in targets:
        raise SystemExit(f"usage: {args[0]} TARGET [libFuzzer args]; targets: "
                         f"{', '.join(targets)}")
    target = targets[args[1]]
    atheris = importlib.import_module("atheris")
    count = _instrument(target.instrument)
    print(f"INFO: {target.name}: instrumented {count} functions", file=sys.stderr, flush=True)
    atheris.Setup([args[0], *args[2:]], target.one_input)
    atheris.Fuzz()
