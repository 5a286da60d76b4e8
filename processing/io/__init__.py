"""Layer 0, foundation: safe decoding and writing, atomic outputs, errors,
stage parameters, quality metrics.

Owns: imageio (the one decode/encode entry point: probe, load_image,
write_tiff16, ...), safety (process-wide decoder hardening, per-job limits),
stderr (C libraries' stderr captured into one-line reasons), atomic
(temporary name then rename), errors (InputError / ProcessingError naming the
file and the reason), params (frozen, versioned stage parameters, recipe
hashes), metrics (PSNR, SSIM).

May import: only the standard library and third-party packages; nothing else
from processing/.
"""
