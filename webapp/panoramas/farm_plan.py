"""What a farm render of a panorama costs: jobs, bytes, memory per job, wall time.

The panorama's size comes from its layout when it has one, else from its
stacks (frame size x scale, 25 % overlap); the rates are this installation's
(rates.py). Shared by `manage.py plan` and the admin's re-render confirmation.
"""

from __future__ import annotations

import math
from typing import Any

from processing.tiles.blocks import FarmGrid
from processing.tiles.estimate import estimate

from .farm import farm_settings
from .models import Frame, Panorama, Stack
from .rates import load_rates, rates_path


def panorama_size(pano: Panorama) -> tuple[int, int, str]:
    """(width, height, where the figure comes from)."""
    lay = pano.layout or {}
    if lay.get("width") and lay.get("height"):
        return int(lay["width"]), int(lay["height"]), "layout"
    stacks = Stack.objects.filter(subpanorama__panorama=pano)
    area = 0.0
    heights = []
    for s in stacks:
        f = Frame.objects.filter(stack=s).exclude(width=None).first()
        if f is None or not f.width or not f.height:
            continue
        area += f.width * f.height * float(pano.scale) ** 2 * 0.75
        heights.append(f.height * float(pano.scale))
    if not area:
        raise ValueError(f"panorama {pano.slug}: no layout and no frame sizes to estimate its area from")
    h = int(max(heights))
    return math.ceil(area / h), h, "stacks (frame size x scale, 25 % overlap)"


def farm_plan(pano: Panorama, workers: int, gpus: int = 0) -> dict[str, Any]:
    w, h, source = panorama_size(pano)
    fs = farm_settings(pano)
    grid = FarmGrid(w, h, fs["tile_size"], fs["overlap"], fs["block_tiles"], fs["format"], fs["quality"])
    rates = load_rates().get("rates", {})
    stacks = Stack.objects.filter(subpanorama__panorama=pano).count()
    out = estimate(grid, rates, workers, gpus, stacks)
    out.update(width=w, height=h, size_from=source, rates_file=str(rates_path()), block_px=grid.block_px)
    return out
