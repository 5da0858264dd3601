"""Every kernel compiles to PTX for the H200 (sm_90), with no GPU: NVVM ships in
numba-cuda's cu13 extra; and every kernel keeps its compiled code in numba's
on-disk cache, so only the first start on a machine compiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the simulator does not compile PTX", allow_module_level=True)
cuda = pytest.importorskip("numba.cuda")
types = pytest.importorskip("numba.types")


def test_hamming_kernel_compiles_for_sm90() -> None:
    from kernels import hamming

    u64_2d = types.Array(types.uint64, 2, "C")
    sig = (u64_2d, u64_2d, types.int64, types.int32[::1], types.int64[::1], types.int32[::1],
           types.int64[::1])
    ptx, _ = cuda.compile_ptx(hamming._kernel().py_func, sig, cc=(9, 0))
    assert ".target sm_90" in ptx and "popc" in ptx


def test_exact_kernel_compiles_for_sm90() -> None:
    from kernels import exact

    u64_2d = types.Array(types.uint64, 2, "C")
    sig = (u64_2d, u64_2d, types.int64[::1], types.int64[::1])
    ptx, _ = cuda.compile_ptx(exact._kernel().py_func, sig, cc=(9, 0))
    assert ".target sm_90" in ptx


def test_digests_kernel_compiles_for_sm90() -> None:
    from kernels import digests

    u8_2d = types.Array(types.uint8, 2, "C")
    sig = (types.uint8[::1], types.int64[::1], types.int64[::1], types.int64[::1],
           u8_2d, u8_2d, u8_2d)
    ptx, _ = cuda.compile_ptx(digests._kernel().py_func, sig, cc=(9, 0))
    assert ".target sm_90" in ptx


def test_pdq_kernels_compile_for_sm90() -> None:
    from kernels import pdq

    mod = pdq._kernel()
    u8, f32, i64 = types.uint8[::1], types.float32[::1], types.int64[::1]
    sigs = [
        (mod.luma, (u8, f32)),
        (mod.box_filter, (f32, f32, i64, i64, i64, types.int64)),
        (mod.finish, (f32, i64, i64, i64, types.Array(types.float32, 2, "C"),
                      types.Array(types.uint8, 2, "C"), types.int32[::1])),
    ]
    for kernel, sig in sigs:
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        assert ".target sm_90" in ptx
        assert "fma." not in ptx  # contraction would change the rounding of the DCT/luma


def _kernels() -> list[Any]:
    from kernels import digests, exact, hamming, pdq, tmk

    mod = pdq._kernel()
    return [digests._kernel(), exact._kernel(), hamming._kernel(), mod.luma, mod.float_luma,
            mod.box_filter, mod.finish, tmk._kernel()]


def test_every_kernel_is_cached_on_disk_or_says_why_not() -> None:
    sources = sorted((Path(__file__).resolve().parent.parent / "kernels").glob("_*_cuda.py"))
    assert len(sources) == 5
    uncached = set()
    for path in sources:
        lines = path.read_text(encoding="utf-8").splitlines()
        decorated = [(n, line) for n, line in enumerate(lines, 1)
                     if line.lstrip().startswith("@cuda.jit")]
        assert decorated, path
        for n, line in decorated:
            if "# no-cache:" in line:
                uncached.add(lines[n].split("(")[0].removeprefix("def ").strip())
            else:
                assert "cache=True" in line, f"{path.name}:{n}: {line.strip()}"
    for kernel in _kernels():  # numba took the flag: a disk cache, not its NullCache
        if kernel.py_func.__name__ not in uncached:
            assert type(kernel._cache).__name__ == "CUDACache", kernel.py_func.__name__


def test_tmk_kernel_and_pdq_float_luma_compile_for_sm90() -> None:
    from kernels import pdq, tmk

    f32_2d = types.Array(types.float32, 2, "C")
    ptx, _ = cuda.compile_ptx(tmk._kernel().py_func, (types.uint8[::1], f32_2d, f32_2d),
                              cc=(9, 0))
    assert ".target sm_90" in ptx and "fma" not in ptx  # every product rounded on its own
    ptx, _ = cuda.compile_ptx(pdq._kernel().float_luma.py_func,
                              (types.uint8[::1], types.float32[::1]), cc=(9, 0))
    assert ".target sm_90" in ptx and "fma" not in ptx
