"""Layer 2, the stack: a burst of handheld frames fused into one
super-resolved image. The stages, in the order pipeline.py runs them:

 1. develop    develop.py     decode RAW / JPEG / TIFF to linear 16-bit RGB, proxies,
                              sharpness score, the reference's lateral CA (color.py)
 2. sharpness  sharpness.py   rank the frames, drop the worst (never the reference)
 3. align      align.py       coarse (features + RANSAC homography), then fine (ECC)
 4. colour     color.py       each frame's gain and offset against the reference
 5. master     fuse.py        median of the aligned frames; anchor_to_reference: where
                              the reference disagrees with it (moving things) the
                              reference wins
 6. flow       flow.py        residual motion of each frame against the master
 7. fuse       fuse.py        kernel regression onto the output grid; fusion_check.py
                              first: held-out frames choose kernel or median
 8. dehaze     color.py       optional
 9. encode     develop.py     back to the reference's encoding (sRGB or linear)
10. deblur     fuse.py        Wiener deconvolution of the pixel integration, matched to
                              the kernel and the noise measured over the burst
11. upscale    processing.upscale   EDSR beyond x2, when the model is on
12. sharpen    sharpen.py     unsharp mask
(then the 16-bit quantisation, io.imageio, and on the GPU the copy back.)
The "Stage N" of the modules' own docstrings is DESIGN.md's numbering, not
this order.

RAW bursts can skip develop-then-fuse: bayer.py fuses straight from the
Bayer mosaics (each raw sample once, with its colour; `stack --bayer`).
pipeline.py runs them (process_stack, list_frames); warp.py holds the
pixel-centre geometry the stages share. The GPU path of master, fusion,
deblur and sharpening: gpu.py (xp-generic primitives), fuse_gpu.py (those
stages with xp ops), fuse_cuda.py (one CUDA kernel per frame term, checked
against fuse_gpu once per process).

May import: processing.io, processing.device, processing.upscale (stage 11).
"""
