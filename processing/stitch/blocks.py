"""Block rendering for the farm: one canvas rectangle from a saved layout, as 8-bit RGBA.

The farm's composite is defined block by block: a block's pixels are what
``render_rect`` gives for exactly that rectangle (blocks aligned to the
pyramid's tile grid, processing.tiles.blocks), so any number of workers on any
number of hosts produce the same pixels, and ``export_composite`` writes the
same image as one file when someone wants it (an optional export: the farm
never needs it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..io.errors import InputError
from .blend import SourceCache, render_rect
from .pipeline import Layout, _quantize, layers_meeting_rows, layout_from_json

Rect = tuple[int, int, int, int]


def load_layout(path: str | Path) -> Layout:
    return layout_from_json(path)


def render_block(layout: Layout, rect: Rect, cache: SourceCache | None = None) -> np.ndarray:
    """Canvas rectangle (x0, y0, x1, y1) as uint8 RGBA, in one render_rect call."""
    x0, y0, x1, y1 = rect
    if not (0 <= x0 < x1 <= layout.canvas.width and 0 <= y0 < y1 <= layout.canvas.height):
        raise InputError("layout", f"block {rect} is outside the {layout.canvas.width}x{layout.canvas.height} canvas")
    only = layers_meeting_rows(layout, y0, y1)
    rgb, alpha = render_rect(
        layout.layers, layout.canvas, rect, cache or SourceCache(), layout.bands, layout.labels, only
    )
    return _quantize(rgb, alpha, 8)


def block_rects(width: int, height: int, block_px: int) -> list[list[Rect]]:
    """Rows of block rectangles covering the canvas (the farm's stage-0 grid)."""
    return [
        [(x, y, min(width, x + block_px), min(height, y + block_px)) for x in range(0, width, block_px)]
        for y in range(0, height, block_px)
    ]


def export_composite(
    layout: Layout,
    out_path: str | Path,
    block_px: int,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """The farm's composite as one tiled BigTIFF (or PNG): block by block, through temporary .v files."""
    import pyvips

    out_path = Path(out_path)
    W, H = layout.canvas.width, layout.canvas.height
    rows = block_rects(W, H, block_px)
    cache = SourceCache()
    n, total = 0, sum(len(r) for r in rows)
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out_path.parent) as tmpd:
        images = []
        for row in rows:
            for rect in row:
                p = Path(tmpd) / f"{rect[0]}_{rect[1]}.tif"
                pyvips.Image.new_from_array(render_block(layout, rect, cache)).write_to_file(str(p))
                images.append(pyvips.Image.new_from_file(str(p)))
                n += 1
                if progress:
                    progress(n, total)
        # arrayjoin's cells are block-sized: the short last column and row leave padding to crop
        im = pyvips.Image.arrayjoin(images, across=len(rows[0])).crop(0, 0, W, H).copy(interpretation="srgb")
        with atomic_path(out_path) as tmp:
            if out_path.suffix.lower() in (".tif", ".tiff"):
                im.tiffsave(str(tmp), tile=True, tile_width=256, tile_height=256, bigtiff=True, compression="deflate")
            else:
                im.write_to_file(str(tmp))
    return out_path


def run_farm_job(
    work_dir: str | Path,
    jid: str,
    cache: SourceCache | None = None,
    progress: Callable[[float], None] | None = None,
    tile_delay: float = 0.0,
) -> dict:
    """Run job JID of the plan in WORK_DIR: render and tile a block (stage 0) or reduce a region."""
    from ..tiles.blocks import FarmGrid, parse_job_id, read_plan
    from ..tiles.reduce import is_done, prepare_pixels, run_job

    work_dir = Path(work_dir)
    plan = read_plan(work_dir)
    grid = FarmGrid.from_dict(plan["grid"])
    stage, col, row = parse_job_id(jid)
    pyr_dir = work_dir / plan["pyramid"]
    pixels = None
    if stage == 0 and not is_done(work_dir, jid):
        layout = load_layout(work_dir / plan["layout"])
        if (layout.canvas.width, layout.canvas.height) != (grid.width, grid.height):
            raise InputError(work_dir / plan["layout"], "layout canvas differs from the farm plan")
        pixels = prepare_pixels(render_block(layout, grid.region(0, col, row, grid.top), cache), grid.format)
    return run_job(grid, stage, col, row, work_dir, pyr_dir, pixels, progress, tile_delay)


def plan_farm(
    layout_path: str | Path,
    work_dir: str | Path,
    pyramid_dir: str | Path,
    *,
    tile_size: int = 254,
    overlap: int = 1,
    block_tiles: int = 8,
    format: str = "jpg",
    quality: int = 85,
) -> dict:
    """Write WORK_DIR/plan.json for the layout's canvas; paths are kept relative to WORK_DIR."""
    import json
    import os

    from ..tiles.blocks import FarmGrid, write_plan

    layout_path, work_dir = Path(layout_path).resolve(), Path(work_dir).resolve()
    canvas = json.loads(layout_path.read_text())["canvas"]
    grid = FarmGrid(int(canvas["width"]), int(canvas["height"]), tile_size, overlap, block_tiles, format, quality)
    extra = {
        "layout": os.path.relpath(layout_path, work_dir),
        "pyramid": os.path.relpath(Path(pyramid_dir).resolve(), work_dir),
    }
    write_plan(work_dir, grid, extra)
    return {"grid": grid.to_dict(), "jobs": grid.jobs(), **extra}
