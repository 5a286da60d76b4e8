"""Terapan image science: pure functions on arrays and files, no Django.

Packages by subsystem, in layers; a package imports only from its own layer or
lower ones, and no modules import each other (tests/processing/test_layers.py):

    0  io        safe decoding and writing, atomic outputs, errors, params, metrics
    1  device    NumPy / CuPy array backend
    2  stack     the burst pipeline (develop ... sharpen) and its GPU path
       upscale   EDSR model, tiled inference, training
       stitch    registration, projection, exposure, seams, blending, layers, sky
       tiles     Deep Zoom pyramids
    3  capture   capture ingest
       synth     synthetic bursts and panoramas with ground truth
    4  bench     benchmarks printing JSON
       commands  `python -m processing COMMAND` (see __main__.py)

docs/architecture.md describes the data flow and where new code goes.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
