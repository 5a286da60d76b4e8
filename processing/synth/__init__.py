"""Layer 3, synthetic data with ground truth: handheld bursts (synth),
panorama captures from a cube map or a wrapped photo (synth_pano), and the
demo's 360-degree capture (demo_capture).

May import: processing.io, processing.device and the layer-2 packages
(stack, upscale, stitch, tiles).
"""
