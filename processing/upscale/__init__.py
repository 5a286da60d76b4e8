"""Layer 2, the upscaler: the EDSR model (edsr: architecture, weights and
their sidecars in weights/), tiled exact-size inference (upscale), training
and fine-tuning (train).

May import: processing.io, processing.device.
"""
