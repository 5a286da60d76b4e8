"""Layer 1, the array backend: NumPy everywhere, CuPy where a CUDA device
exists (backend: device choice, xp_for / xp_of, host <-> device copies,
memory pools, thread settings for OpenCV and BLAS).

May import: processing.io.
"""
