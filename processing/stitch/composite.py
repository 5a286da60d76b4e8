"""Partial re-compositing: re-blend one rectangle of a saved panorama.

The previous composite and its layout (cameras, gains, seams settings) are
reused; only the images whose outputs changed are swapped in, only RECT is
re-rendered, and the result is streamed into a new tiled BigTIFF (the old one
stays untouched: versions are immutable).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from ..io.errors import InputError
from .pipeline import _quantize, layout_from_json, layout_to_json, render_region

Rect = tuple[int, int, int, int]  # x, y, w, h


def layout_path_for(composite: str | Path) -> Path:
    p = Path(composite)
    return p.with_name(p.name + ".layout.json")


def patch_composite(
    base_path: str | Path,
    replacements: dict[str, str],
    rect: Rect,
    out_path: str | Path,
    bits: int = 8,
) -> dict[str, Any]:
    """Write OUT_PATH = BASE_PATH with RECT re-rendered after swapping source images.

    REPLACEMENTS maps an image path in the base layout to its new path.
    """
    import pyvips

    t0 = time.perf_counter()
    base_path, out_path = Path(base_path), Path(out_path)
    lp = layout_path_for(base_path)
    if not base_path.exists() or not lp.exists():
        raise InputError(base_path, "base composite or its layout is missing; rebuild the whole panorama")
    layout = layout_from_json(lp)
    known = {L.path for L in layout.layers}
    for old in replacements:
        if old not in known:
            raise InputError(old, "not an image of the base layout")
    layout.layers = [dataclasses.replace(L, path=replacements.get(L.path, L.path)) for L in layout.layers]
    W, H = layout.canvas.width, layout.canvas.height
    x, y, w, h = rect
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        raise InputError(out_path, f"rectangle {rect} is outside the {W}x{H} panorama")
    rgb, alpha = render_region(layout, (x0, y0, x1, y1))
    patch = np.ascontiguousarray(_quantize(rgb, alpha, bits))
    base = pyvips.Image.new_from_file(str(base_path), access="random")
    if (base.width, base.height) != (W, H) or base.bands != 4:
        raise InputError(base_path, "base composite does not match its layout")
    fmt = "uchar" if bits == 8 else "ushort"
    vp = pyvips.Image.new_from_memory(patch.tobytes(), x1 - x0, y1 - y0, 4, fmt)
    out = base.insert(vp.copy(interpretation=base.interpretation), x0, y0)
    with atomic_path(out_path) as tmp:
        out.tiffsave(str(tmp), tile=True, tile_width=256, tile_height=256, bigtiff=True, compression="deflate")
    layout_to_json(layout, layout_path_for(out_path))
    return {
        "width": W,
        "height": H,
        "rect": [x0, y0, x1 - x0, y1 - y0],
        "seconds": round(time.perf_counter() - t0, 3),
    }
