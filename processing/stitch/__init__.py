"""Layer 2, the stitcher: images of a rotating rig into one panorama.
registration (features, matches, bundle adjustment) -> project (cameras,
canvases, warp maps) -> exposure (gains, vignetting) -> seams (label map on a
proxy canvas) -> blend (multi-band blending, block by block) -> pipeline
(stitch_files, layouts, streamed output, render_region). composite
re-blends one rectangle of a saved panorama; sky merges layers and a
separately shot sky on one canvas.

May import: processing.io, processing.device.
"""
