"""Layer 2, tiles: Deep Zoom pyramids (pyramid: build one with libvips,
update one region of it, the level and tile grids the viewer reads).

May import: processing.io, processing.device.
"""
