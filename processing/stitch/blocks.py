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
    tone = None if layout.tone.identity else layout.tone.apply  # the same highlight shoulder as render_to_file
    rgb, alpha = render_rect(
        layout.layers,
        layout.canvas,
        rect,
        cache or SourceCache(),
        layout.bands,
        layout.labels,
        only,
        tone,
        layout.fine,
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


def plan_partial(
    work_dir: str | Path,
    layout_path: str | Path,
    pyramid_dir: str | Path,
    previous_pyramid: str | Path,
    rect: Rect,
) -> list[dict]:
    """Re-render canvas RECT (x, y, w, h) with LAYOUT_PATH into a new version at PYRAMID_DIR.

    WORK_DIR is the farm folder of the previous version (its jobs' one-tile outputs are
    kept). The new version starts as hard links to PREVIOUS_PYRAMID; only the block jobs
    meeting RECT (plus the blend margin) and the jobs around and above them run again.
    Returns those jobs, dependencies restricted to them.
    """
    import json
    import os
    import shutil

    from ..tiles.blocks import FarmGrid, read_plan, write_plan
    from ..tiles.reduce import done_marker, partial_jobs
    from .blend import margin_for

    work_dir = Path(work_dir).resolve()
    grid = FarmGrid.from_dict(read_plan(work_dir)["grid"])
    layout = load_layout(layout_path)
    if (layout.canvas.width, layout.canvas.height) != (grid.width, grid.height):
        raise InputError(layout_path, "the canvas changed: a partial re-render needs the previous layout's canvas")
    m = margin_for(layout.bands) + (1 << max(layout.bands, 0))
    x, y, w, h = rect
    y0, y1 = max(0, y - m), min(grid.height, y + h + m)
    S = grid.block_px
    cols: set[int] = set()
    for xx in range(x - m, x + w + m, S // 2):  # S/2 steps: no block skipped
        cols.add((xx % grid.width if layout.canvas.wrap else min(max(xx, 0), grid.width - 1)) // S)
    end = x + w + m - 1
    cols.add((end % grid.width if layout.canvas.wrap else min(max(end, 0), grid.width - 1)) // S)
    changed = {(c, r) for c in cols for r in range(y0 // S, (max(y0, y1 - 1)) // S + 1)}
    run, edges = partial_jobs(grid, changed)
    pyramid_dir = Path(pyramid_dir)
    if pyramid_dir.exists():
        raise InputError(pyramid_dir, "already exists (pyramid versions are immutable)")
    shutil.copytree(previous_pyramid, pyramid_dir, copy_function=os.link)
    write_plan(
        work_dir,
        grid,
        {
            "layout": os.path.relpath(Path(layout_path).resolve(), work_dir),
            "pyramid": os.path.relpath(pyramid_dir.resolve(), work_dir),
        },
    )
    (work_dir / "partial.json").write_text(json.dumps({"rect": list(rect), "edges": edges, "run": run}))
    for jid in run:
        done_marker(work_dir, jid).unlink(missing_ok=True)
    keep = set(run)
    return [{**j, "after": [a for a in j["after"] if a in keep]} for j in grid.jobs() if j["id"] in keep]
