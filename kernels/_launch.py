"""What every kernel wrapper does around a launch, for NumPy and CuPy alike.

- Inputs may be NumPy arrays or ``xp``'s own: ``xp.asarray`` first. CuPy's
  ``ascontiguousarray`` (and most of its functions) refuse NumPy arrays
  (cupy#3511), and numba would copy a NumPy kernel argument to the device and
  back at every launch.
- A wrapper's own allocations and fills (``xp.zeros``) run on CuPy's current
  stream, its kernels on the numba ``stream`` it is given. When the two
  differ, nothing orders them: the current stream is waited for before the
  launch, or a kernel could start before its hit counter is zeroed.
- The launch stream is synchronised before anything is read on the host and
  before device results are returned: CuPy reads (``get``, ``int``) on its
  current stream, which outside ``Device.scope`` is the legacy default stream,
  and that stream is not ordered after a non-blocking one.

Under the simulator (``xp`` is NumPy) everything is synchronous already.
Importing this module imports no CUDA library; ``lazy_kernel`` gives each
wrapper the cached factory that imports its kernels on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray


def lazy_kernel(module: str, name: str | None = None, **same: Any) -> Callable[[], Any]:
    """The cached factory of a wrapper's kernel: ``module``'s ``name`` (the
    module itself when None), imported on the factory's first call.

    The kernels live in their own ``_*_cuda`` module, imported only then:
    numba.cuda must be a global of the kernel's module for the simulator
    (``NUMBA_ENABLE_CUDASIM=1``) to stand in for it, and importing a wrapper
    must load no CUDA library. ``same``: constants the wrapper and the kernel's
    module must agree on (RuntimeError when one differs).
    """

    @cache
    def kernel() -> Any:
        mod = importlib.import_module(module)
        for constant, value in same.items():
            if getattr(mod, constant) != value:
                raise RuntimeError(f"{module}.{constant} differs from its wrapper's ({value})")
        return mod if name is None else getattr(mod, name)

    return kernel


def device_array(xp: Any, a: Any, dtype: Any) -> Any:
    """``a`` (a NumPy array, a list or ``xp``'s array) as a C-contiguous
    ``xp`` array of ``dtype``; no copy when it already is one."""
    out = xp.ascontiguousarray(xp.asarray(a, dtype=dtype))
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        # The simulator copies every array argument back after a launch, which
        # a read-only array (np.frombuffer of bytes) refuses.
        out = out.copy()
    return out


def _handle(stream: Any) -> int:
    # A numba Stream's int() is its CUstream handle; 0 is the default stream.
    return int(stream)


def before_launch(xp: Any, stream: Any) -> None:
    """Wait for CuPy's current stream when the kernel goes to another one."""
    cuda = getattr(xp, "cuda", None)
    if cuda is None:  # NumPy: the simulator, synchronous
        return
    current = cuda.get_current_stream()
    if int(current.ptr) != _handle(stream):
        current.synchronize()


def after_launch(stream: Any) -> None:
    """Wait for the work launched on numba ``stream`` (0: the default stream)."""
    synchronize = getattr(stream, "synchronize", None)
    if synchronize is not None:
        synchronize()
        return
    from numba import cuda  # imported already: a kernel was just launched

    cuda.synchronize()  # type: ignore[no-untyped-call]


def to_host(a: Any) -> NDArray[Any]:
    """A NumPy copy of a device (CuPy) array; NumPy arrays as they are."""
    return a.get() if hasattr(a, "get") else np.asarray(a)
