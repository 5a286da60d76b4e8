"""Layer 3, capture ingest: from the folders a camera wrote to bursts placed
on a grid (ingest: scan, burst grouping, repeats, placement, previews).

May import: processing.io, processing.device and the layer-2 packages
(stack, upscale, stitch, tiles).
"""
