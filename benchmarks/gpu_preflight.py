"""The GPU check's preflight: can this machine run the check at all? Answers in seconds.

    python -m benchmarks.gpu_preflight               on the GPU machine
    python -m benchmarks.gpu_preflight --simulator   anywhere, Numba's CUDA simulator
    python -m benchmarks.gpu_preflight --find-cuda-home
        prints the system CUDA toolkit that holds NVVM (nothing if none)

A device run is one shot of a few minutes, so what would break every later
section is checked first, and the first failure stops the check with the step,
the reason and a hint (exit 2):

1. versions of numpy, numba, numba-cuda (numba's own ``numba.cuda`` is not the
   one the project is tested with), CuPy, cuda-core, cuda-pathfinder,
   cuda-bindings, nvJitLink, NVRTC and NVVM wheels; older than tested is a
   warning, a missing numba-cuda or CuPy a failure;
2. the driver and the GPU (nvidia-smi, CuPy's device properties);
3. where numba-cuda finds libNVVM (through cuda-pathfinder: wheels first,
   then ``CUDA_HOME``, which gpu_check.sh sets from the system toolkit) and
   whether that NVVM is newer than nvJitLink (a newer NVVM's output may not
   link);
4. one tiny numba.cuda kernel compiled and launched on a CuPy array, its
   result checked;
5. the same kernel on a numba stream wrapping a CuPy stream
   (``numba.cuda.external_stream(cupy_stream.ptr)``, as numba-cuda documents
   for streams made elsewhere), followed on that CuPy stream by a CuPy
   operation that reads its output: a launch that went to another stream
   would let the reader see the kernel unfinished;
6. the same through the appliance's own ``appliance.gpu.device`` (its
   stream, upload, scope and copy back), as the GPU pipeline uses them.

``--simulator`` runs steps 1, 4, 5 and 6 under the simulator with NumPy
arrays (the simulator has no external streams: step 5 uses ``cuda.stream()``),
and step 3 for information only, so the preflight itself is tested where
there is no GPU.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DISTRIBUTIONS = ("numpy", "numba", "numba-cuda", "cupy-cuda13x", "cuda-core", "cuda-pathfinder",
                 "cuda-bindings", "nvidia-nvjitlink", "nvidia-cuda-nvrtc", "nvidia-nvvm")
# The versions that CI and the simulator runs use (pyproject's gpu extra).
TESTED = {"numba-cuda": (0, 30), "cupy-cuda13x": (14, 0)}
# Where a system CUDA toolkit lives; /usr/local/cuda (the system's default) first.
TOOLKIT_ROOTS = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda")
THREADS = 256


class Failed(Exception):
    """A preflight step failed: the check cannot run here."""

    def __init__(self, step: str, reason: str, hint: str = "") -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason, self.hint = step, reason, hint


def say(text: str) -> None:
    print(f"preflight: {text}", flush=True)


@contextmanager
def step(name: str, hint: str = "") -> Iterator[None]:
    """Turn any exception of a step into Failed, its traceback kept in the log."""
    try:
        yield
    except Failed:
        raise
    except Exception as exc:
        traceback.print_exc()
        raise Failed(name, f"{type(exc).__name__}: {exc}", hint) from exc


def version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:2])


def find_cuda_home(roots: Sequence[str] = TOOLKIT_ROOTS) -> tuple[Path, Path] | None:
    """(root, libnvvm) of the first system toolkit with ``nvvm/lib64/libnvvm.so*``,
    trying ``roots`` (glob patterns) in order, newest version first within one."""
    for pattern in roots:
        for root in sorted(glob.glob(pattern), key=lambda r: _release(Path(r).name + " 0 0"),
                           reverse=True):
            libs = sorted(Path(root, "nvvm", "lib64").glob("libnvvm.so*"))
            if libs:
                return Path(root), libs[0]
    return None


def toolkit_version(root: Path) -> str | None:
    """The CUDA version of a toolkit: its version.json, else its folder's name."""
    try:
        data = json.loads((root / "version.json").read_text())
        return str(data["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        found = re.search(r"cuda-(\d+\.\d+)", str(root.resolve()))
        return found.group(1) if found else None


# ----------------------------------------------------------------------------- steps


def check_versions(simulated: bool) -> None:
    found = {d: version_of(d) for d in DISTRIBUTIONS}
    say(f"python {sys.version.split()[0]}; "
        + ", ".join(f"{d} {v or 'absent'}" for d, v in found.items()))
    if found["numba-cuda"] is None:
        raise Failed("versions", "numba-cuda is not installed: numba's bundled numba.cuda is "
                     "deprecated and untested here", "carry a numba-cuda wheel (no extras)")
    if not simulated and found["cupy-cuda13x"] is None and version_of("cupy") is None:
        raise Failed("versions", "CuPy is not installed", "carry a cupy-cuda13x wheel")
    for dist, tested in TESTED.items():
        have = found[dist]
        if have is not None and _release(have) < tested:
            say(f"WARNING: {dist} {have} is older than the tested "
                f"{'.'.join(map(str, tested))}; carry a newer wheel if a later step fails")


def check_driver() -> Any:
    """The GPU's name and the driver; returns numba.cuda."""
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=15, check=False)
        say(f"nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"nvidia-smi: not usable ({type(exc).__name__})")
    with step("driver", "is the GPU visible (nvidia-smi) and the driver loaded?"):
        import cupy
        from numba import cuda

        count = cupy.cuda.runtime.getDeviceCount()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        driver = cupy.cuda.runtime.driverGetVersion()
        say(f"{count} device(s); #0 {name}, cc {props['major']}.{props['minor']}, "
            f"{props['multiProcessorCount']} SMs, {props['totalGlobalMem'] / 2**30:.1f} GiB; "
            f"driver CUDA {driver // 1000}.{driver % 1000 // 10}; CuPy {cupy.__version__} "
            f"(runtime {cupy.cuda.runtime.runtimeGetVersion()})")
        if not cuda.is_available():
            raise Failed("driver", "CuPy sees the GPU but numba.cuda does not")
        found = cuda.get_current_device().name
        found = found.decode() if isinstance(found, bytes) else found
        say(f"numba.cuda ({Path(cuda.__file__).parent}) sees {found}")
    return cuda


def _found_paths() -> dict[str, tuple[str, str | None]]:
    """(found via, path) of NVVM, libdevice and NVRTC, as numba-cuda finds them
    (its own search, cuda-pathfinder's plus its inferences); cuda-pathfinder's
    NVVM alone where numba-cuda has no such function."""
    try:
        from numba.cuda.cuda_paths import get_cuda_paths
    except ImportError:
        from cuda import pathfinder  # type: ignore[import-untyped]

        nvvm = pathfinder.load_nvidia_dynamic_lib("nvvm")
        return {"nvvm": (str(nvvm.found_via), nvvm.abs_path)}
    paths = get_cuda_paths()
    return {k: (str(paths[k].by), paths[k].info) for k in ("nvvm", "libdevice", "nvrtc")
            if k in paths}


def check_nvvm() -> None:
    """Where numba-cuda finds libNVVM (and libdevice, NVRTC), and NVVM's version
    against nvJitLink's."""
    home = os.environ.get("CUDA_HOME")
    say(f"CUDA_HOME={home or '(unset)'}")
    with step("nvvm", "set CUDA_HOME to a toolkit with nvvm/lib64 and nvvm/libdevice, or carry "
                      "an nvidia-nvvm wheel no newer than nvidia-nvjitlink"):
        found = _found_paths()
        for name, (via, path) in found.items():
            say(f"numba-cuda finds {name} at {path or 'nothing'} (via {via})")
        via, path = found["nvvm"]
        if not path:
            raise Failed("nvvm", "numba-cuda finds no libNVVM")
        if "site-packages" in path or "dist-packages" in path:
            nvvm_version = version_of("nvidia-nvvm")
        else:
            nvvm_version = toolkit_version(Path(path).resolve().parents[2])
        try:
            from cuda.bindings import nvjitlink  # type: ignore[import-untyped]

            link = ".".join(map(str, nvjitlink.version()))
        except Exception as exc:  # absent or unloadable: numba-cuda links with the driver
            link = f"none ({type(exc).__name__})"
        say(f"NVVM {nvvm_version or '?'}, nvJitLink {link}")
        if nvvm_version and link[0].isdigit() and _release(nvvm_version) > _release(link):
            say(f"WARNING: NVVM {nvvm_version} is newer than nvJitLink {link}: its output may "
                "not link; the kernel steps below tell")


def _expect(step_name: str, got: Any, value: int) -> None:
    import numpy as np

    got = np.asarray(got)
    want = value + np.arange(got.shape[0] if got.ndim == 1 else -1, dtype=np.int64)
    if got.shape != want.shape or not np.array_equal(got, want):
        bad = int(np.flatnonzero(got != want)[0]) if got.shape == want.shape else -1
        raise Failed(step_name, f"wrong result (first bad index {bad}: "
                     f"{got.reshape(-1)[bad] if bad >= 0 else got.shape}, want "
                     f"{want[bad] if bad >= 0 else want.shape})")


def check_kernels(simulated: bool) -> None:
    import numpy as np
    from numba import cuda

    from benchmarks import _preflight_kernel

    # 65536 threads spinning ~1 ms on a GPU; under the simulator, where every
    # thread is a Python thread, two blocks and a few rounds.
    n, spins = (2 * THREADS, 4) if simulated else (1 << 16, 200_000)
    kernel, blocks = _preflight_kernel.slow_fill, n // THREADS
    hint = "the traceback above says which of NVVM, the linker or the driver refused"
    with step("kernel", hint):
        began = time.perf_counter()
        if simulated:
            a = np.zeros(n, dtype=np.int64)
            kernel[blocks, THREADS](a, 3, spins)
            got = a
        else:
            import cupy

            a = cupy.zeros(n, dtype=cupy.int64)
            kernel[blocks, THREADS](a, 3, spins)
            cuda.synchronize()
            got = a.get()
        _expect("kernel", got, 3)
        what = "a NumPy array (simulator)" if simulated else "a CuPy array"
        say(f"a numba.cuda kernel on {what}: ok ({time.perf_counter() - began:.1f} s, "
            "compilation included)")
    with step("stream", "CuPy and numba must share one CUDA context and stream handles"):
        if simulated:
            # No external streams in the simulator: a numba stream stands in.
            b = np.zeros(n, dtype=np.int64)
            kernel[blocks, THREADS, cuda.stream()](b, 5, spins)
            got = b + 1
            what = "a numba stream (simulator: no external streams)"
        else:
            import cupy

            theirs = cupy.cuda.Stream(non_blocking=True)
            ours = cuda.external_stream(theirs.ptr)
            handle = ours.__cuda_stream__()[1] if hasattr(ours, "__cuda_stream__") else None
            if handle is not None and int(handle) != int(theirs.ptr):
                raise Failed("stream", f"numba's stream wraps {handle:#x}, not CuPy's "
                             f"{theirs.ptr:#x}")
            with theirs:
                b = cupy.zeros(n, dtype=cupy.int64)
                kernel[blocks, THREADS, ours](b, 5, spins)
                # Queued on CuPy's stream right behind the kernel, no host wait between.
                got = (b + 1).get()
            what = "a numba stream made from a CuPy stream's pointer, read by CuPy on it"
        _expect("stream", got, 6)
        say(f"the kernel on {what}: ok")
    with step("appliance device", "appliance/gpu/device.py's stream or copies are broken"):
        from appliance.gpu.device import open_device

        device = open_device("gpu-sim" if simulated else "gpu")
        with device.scope():
            c = device.upload(np.zeros(n, dtype=np.int64))
            kernel[blocks, THREADS, device.kernel_stream](c, 9, spins)
            got = device.to_host(c + 1)
        _expect("appliance device", got, 10)
        say(f"the kernel on the appliance's device ({device.name}) stream and copies: ok")


def run(simulated: bool) -> None:
    if simulated:
        # numba reads this when numba.cuda is first imported, which is below.
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        say("Numba's CUDA simulator, NumPy in place of CuPy")
    elif os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise Failed("environment", "NUMBA_ENABLE_CUDASIM=1 is set: numba would not use the GPU",
                     "unset it, or run with --simulator")
    with step("versions"):
        check_versions(simulated)
    if simulated:
        from numba import cuda

        if not getattr(cuda.is_available, "__module__", "").endswith("simulator_init"):
            raise Failed("simulator", "numba.cuda is not the simulator")
        try:  # reported, not needed: the simulator compiles nothing
            check_nvvm()
        except Failed as failure:
            say(f"(NVVM not found, which the simulator does not need: {failure.reason})")
    else:
        check_driver()
        check_nvvm()
    check_kernels(simulated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulator", action="store_true", help="Numba's CUDA simulator")
    parser.add_argument("--find-cuda-home", action="store_true",
                        help="print the system toolkit that holds NVVM, if any")
    args = parser.parse_args(argv)
    if args.find_cuda_home:
        found = find_cuda_home()
        if found:
            print(found[0])
        return 0
    began = time.perf_counter()
    try:
        run(args.simulator)
    except Failed as failure:
        say(f"FAILED at {failure.step}: {failure.reason}")
        if failure.hint:
            say(f"hint: {failure.hint}")
        return 2
    say(f"ok in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
