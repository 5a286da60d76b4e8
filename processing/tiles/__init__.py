"""Layer 2, tiles: Deep Zoom pyramids (pyramid: build one with libvips,
update one region of it, the level and tile grids the viewer reads;
region_export: read a rectangle of a pyramid back as one image, for exports
and the IIIF service).

May import: processing.io, processing.device.
"""
