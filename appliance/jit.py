"""numba's CPU compilation, as every host kernel of the package uses it.

The index kernels (``index.exact``, ``index.mih``) and the PDQ hasher's
(``hashers.pdq_downsample``, ``hashers.pdq_bits``) are compiled alike: on first
call, then from numba's disk cache (keyed by the kernel's own source file, not
this one), releasing the GIL so that callers on several threads run in
parallel. ``prefetch`` is the one LLVM intrinsic they use (``index.mih``'s
probes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic
from numpy.typing import NDArray

_F = TypeVar("_F", bound=Callable[..., Any])
cgutils: Any = _cgutils  # numba's LLVM helpers, untyped


def kernel(fn: _F) -> _F:
    """numba-compile fn on first call (then from the disk cache), releasing the GIL.

    Typed for mypy (numba is not); numba ignores the annotations.
    """
    return cast(_F, njit(cache=True, nogil=True)(fn))


def _prefetch_codegen(typingctx: Any, arr: Any, i: Any, j: Any) -> Any:
    """Typing and code of ``prefetch(arr, i, j)``: the llvm.prefetch of &arr[i, j]."""
    sig = types.void(arr, i, j)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        inds = [context.cast(builder, args[k], signature.args[k], types.intp) for k in (1, 2)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, inds)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read (0), keep in all cache levels (3), data (1)
        flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        builder.call(fn, [builder.bitcast(ptr, i8p), *flags])
        return context.get_dummy_value()

    return sig, codegen


# A hint to load the cache line of arr[i, j] (a 2-D array): no fault, no wait.
prefetch = cast(Callable[[NDArray[Any], Any, Any], None], intrinsic(_prefetch_codegen))
