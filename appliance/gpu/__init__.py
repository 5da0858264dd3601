"""The GPU backend: the device, the lists' index in device memory, the pipeline.

Imported only when a GPU backend (``gpu`` or ``gpu-sim``) is chosen: it
imports CuPy (or, for ``gpu-sim``, NumPy with Numba's CUDA simulator) and
numba.cuda, which ``import appliance`` must not.
"""
