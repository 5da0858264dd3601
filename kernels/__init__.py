"""CUDA kernels (numba.cuda) with their CPU twins.

Importable without a GPU and without numba.cuda: each wrapper imports its
kernels' ``_*_cuda`` module on first use, through the cached factory of
``_launch.lazy_kernel``. The CPU backend uses one NumPy-only module of this
package, ``pdq_dct`` (the DCT matrix its PDQ hasher shares with the kernels),
and never a kernel.

Every ``@cuda.jit`` kernel has ``cache=True`` (numba's on-disk cache: only the
first start on a machine compiles; a kernel that cannot be cached says why in
a ``# no-cache:`` comment on its decorator). numba invalidates a cached kernel
only when its own source file changes, so the constants a kernel reads live
in its ``_*_cuda.py`` file. The wrappers take NumPy or device arrays and
synchronise their stream before a result reaches the host (``_launch``).
"""
