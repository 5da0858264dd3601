"""A stand-in for CuPy on the CPU: NumPy inside, CuPy's refusals outside.

The GPU wrappers (kernels.*, appliance.gpu) are tested under the CUDA
simulator with ``xp`` = NumPy, which accepts everything; CuPy does not:

- its functions that take an array (``ascontiguousarray``, ``argsort``,
  ``zeros_like``...) refuse a NumPy array with a TypeError (cupy#3511), and
  so do its operators when one operand is a NumPy array;
- a CuPy array refuses implicit conversion to NumPy (``np.asarray``): the
  host copy is ``.get()``.

``StandIn`` (the module, ``xp``) and ``DeviceArray`` (its array type) do the
same, so wrapper code that would raise on a GPU raises here. Kernels are
replaced by ``FakeKernel``: a launch refuses any NumPy argument (on a GPU numba
would copy it to the device and back, bypassing the stream), runs a CPU twin
on the arrays' contents, and leaves its stream pending until synchronised; a
host read (``get``, ``int``) while a launch is pending raises, as the race it
would be on a real device.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray


class UnsynchronisedRead(AssertionError):
    """A device result read on the host before its launch stream was synchronised."""


class FakeStream:
    """A numba stream: launches leave it pending until ``synchronize``."""

    def __init__(self, handle: int = 7) -> None:
        self.handle = handle
        self.pending = 0
        self.syncs = 0

    def __int__(self) -> int:
        return self.handle

    def synchronize(self) -> None:
        self.pending = 0
        self.syncs += 1


_STREAMS: list[FakeStream] = []


def _check_synchronised() -> None:
    if any(s.pending for s in _STREAMS):
        raise UnsynchronisedRead("a device array was read on the host while a kernel "
                                 "launched on a non-default stream was not synchronised")


def _refuse(name: str, a: Any) -> None:
    if isinstance(a, np.ndarray):
        raise TypeError(f"{name}: Argument 'a' has incorrect type (expected "
                        "cupy._core.core._ndarray_base, got numpy.ndarray)")


class DeviceArray:
    """A "device" array: NumPy storage, CuPy's manners."""

    __array_priority__ = 1000
    __array_ufunc__ = None  # numpy operators defer to ours, which refuse NumPy

    def __init__(self, a: NDArray[Any]) -> None:
        self._a = a

    # -- what the wrappers read ------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return int(self._a.ndim)

    @property
    def size(self) -> int:
        return int(self._a.size)

    @property
    def flags(self) -> Any:
        return self._a.flags

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, key: Any) -> DeviceArray:
        return DeviceArray(np.asarray(self._a[_unwrap(key)]))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _unwrap(value)  # CuPy accepts host values here

    def reshape(self, *shape: Any) -> DeviceArray:
        return DeviceArray(self._a.reshape(*shape))

    def astype(self, dtype: Any) -> DeviceArray:
        return DeviceArray(self._a.astype(dtype))

    def min(self) -> DeviceArray:
        return DeviceArray(np.asarray(self._a.min()))

    def max(self) -> DeviceArray:
        return DeviceArray(np.asarray(self._a.max()))

    def sum(self) -> DeviceArray:
        return DeviceArray(np.asarray(self._a.sum()))

    # -- host transfers ----------------------------------------------------------
    def get(self, stream: Any = None) -> NDArray[Any]:
        _check_synchronised()
        return self._a.copy()

    def __int__(self) -> int:
        _check_synchronised()
        return int(self._a)

    def __array__(self, *args: Any, **kwargs: Any) -> NDArray[Any]:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __repr__(self) -> str:
        return f"DeviceArray({self._a!r})"

    # -- operators: CuPy refuses NumPy operands -------------------------------------
    def _op(self, other: Any, op: Callable[[Any, Any], Any], reflected: bool = False) -> Any:
        _refuse(f"operator {op.__name__}", other)
        b = other._a if isinstance(other, DeviceArray) else other
        return DeviceArray(np.asarray(op(b, self._a) if reflected else op(self._a, b)))

    def __add__(self, o: Any) -> Any:
        return self._op(o, operator.add)

    def __radd__(self, o: Any) -> Any:
        return self._op(o, operator.add, True)

    def __sub__(self, o: Any) -> Any:
        return self._op(o, operator.sub)

    def __rsub__(self, o: Any) -> Any:
        return self._op(o, operator.sub, True)

    def __mul__(self, o: Any) -> Any:
        return self._op(o, operator.mul)

    def __rmul__(self, o: Any) -> Any:
        return self._op(o, operator.mul, True)

    def __floordiv__(self, o: Any) -> Any:
        return self._op(o, operator.floordiv)

    def __eq__(self, o: object) -> Any:
        return self._op(o, operator.eq)

    def __ne__(self, o: object) -> Any:
        return self._op(o, operator.ne)

    def __lt__(self, o: Any) -> Any:
        return self._op(o, operator.lt)

    def __gt__(self, o: Any) -> Any:
        return self._op(o, operator.gt)

    __hash__ = None  # type: ignore[assignment]


def _unwrap(a: Any) -> Any:
    if isinstance(a, DeviceArray):
        return a._a
    if isinstance(a, tuple):
        return tuple(_unwrap(x) for x in a)
    return a


class StandIn:
    """The module: ``xp.asarray`` uploads anything; the rest wants DeviceArrays."""

    uint8, int32, int64, uint64, float32, float64 = (
        np.uint8, np.int32, np.int64, np.uint64, np.float32, np.float64)
    ndarray = DeviceArray

    @staticmethod
    def asarray(a: Any, dtype: Any = None) -> DeviceArray:
        if isinstance(a, DeviceArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return DeviceArray(np.array(a, dtype=dtype))  # a copy: an upload

    @staticmethod
    def ascontiguousarray(a: Any, dtype: Any = None) -> DeviceArray:
        _refuse("ascontiguousarray", a)
        if not isinstance(a, DeviceArray):
            raise TypeError(f"ascontiguousarray: unsupported type {type(a).__name__}")
        return DeviceArray(np.ascontiguousarray(a._a, dtype=dtype))

    @staticmethod
    def argsort(a: Any) -> DeviceArray:
        _refuse("argsort", a)
        return DeviceArray(np.argsort(_unwrap(a), kind="stable"))

    @staticmethod
    def zeros(shape: Any, dtype: Any = float) -> DeviceArray:
        return DeviceArray(np.zeros(shape, dtype=dtype))

    @staticmethod
    def empty(shape: Any, dtype: Any = float) -> DeviceArray:
        return DeviceArray(np.zeros(shape, dtype=dtype))

    @staticmethod
    def zeros_like(a: Any) -> DeviceArray:
        _refuse("zeros_like", a)
        return DeviceArray(np.zeros_like(_unwrap(a)))


Twin = Callable[..., None]


class FakeKernel:
    """``kernel[grid, block, stream](*args)`` running ``twin`` on NumPy views of the
    DeviceArray arguments; a NumPy argument is refused."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.launches = 0

    def __getitem__(self, config: tuple[Any, ...]) -> Callable[..., None]:
        stream = config[2] if len(config) > 2 else 0

        def launch(*args: Any) -> None:
            for k, a in enumerate(args):
                if isinstance(a, np.ndarray):
                    raise TypeError(f"kernel argument {k} is a NumPy array: numba would copy "
                                    "it to the device and back, off the stream")
                if not isinstance(a, DeviceArray | int | float):
                    raise TypeError(f"kernel argument {k}: {type(a).__name__}")
            self.launches += 1
            self.twin(*(_unwrap(a) for a in args))
            if isinstance(stream, FakeStream):
                stream.pending += 1
                if stream not in _STREAMS:
                    _STREAMS.append(stream)

        return launch


def reset() -> None:
    """Forget the streams of earlier tests."""
    _STREAMS.clear()
