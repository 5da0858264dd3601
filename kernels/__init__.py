"""CUDA kernels (numba.cuda) with their CPU twins.

Importable without a GPU and without numba.cuda: each kernel module builds its
kernels lazily in a cached factory. The CPU backend does not use this package.
"""
