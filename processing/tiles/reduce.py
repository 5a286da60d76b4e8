"""Run one job of the farm's graph (blocks.py): tiles of its area, bands for its neighbours.

A job holds the pixels of its area at its first level (rendered by a block
job, gathered from its children's one-tile outputs by a reduce job), writes
every tile whose pixels, overlap included, lie inside that area, keeps the
core pixels of its other tiles (the edge bands, one tile wide) in the work
folder, and reduces with dzsave's 2x2 rule (pyramid._reduce) to its next
level. Its parent writes those edge tiles once the neighbours' bands exist,
so every tile is byte for byte what dzsave writes for the whole composite.

Every file appears under its final name by a rename, and a job's marker
(done/<id>.json) is written last: a killed job is simply run again, and a job
whose marker exists is not run twice. Bands are deleted as soon as every job
that reads them is done, so the work folder holds edge bands of the jobs in
flight, not the panorama.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from ..io.errors import ProcessingError
from .blocks import FarmGrid, Rect, job_id
from .pyramid import BASENAME, PyramidParams, _reduce, _write_tile, tile_bounds

Progress = Callable[[float], None]
SIDES = ("top", "bottom", "left", "right")


def done_marker(work_dir: Path, jid: str) -> Path:
    return Path(work_dir) / "done" / f"{jid}.json"


def is_done(work_dir: Path, jid: str) -> bool:
    return done_marker(work_dir, jid).is_file()


def _band_dir(work_dir: Path, jid: str) -> Path:
    return Path(work_dir) / "bands" / jid


def _band_rects(region: Rect, T: int, ov: int) -> dict[str, Rect]:
    """The core pixels of the tiles along each side of a tile-aligned REGION, and the
    OV pixels inside them (an edge tile's overlap may reach into the interior tiles)."""
    x0, y0, x1, y1 = region
    xl = max(x0, x0 + ((x1 - x0 - 1) // T) * T - ov)
    yl = max(y0, y0 + ((y1 - y0 - 1) // T) * T - ov)
    return {
        "top": (x0, y0, x1, min(y1, y0 + T + ov)),
        "bottom": (x0, yl, x1, y1),
        "left": (x0, y0, min(x1, x0 + T + ov), y1),
        "right": (xl, y0, x1, y1),
    }


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr))


def _tiles_in(region: Rect, T: int) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = region
    return [(c, r) for r in range(y0 // T, (y1 - 1) // T + 1) for c in range(x0 // T, (x1 - 1) // T + 1)]


def _inside(b: Rect, region: Rect) -> bool:
    return b[0] >= region[0] and b[1] >= region[1] and b[2] <= region[2] and b[3] <= region[3]


def write_tile_atomic(arr: np.ndarray, pyr_dir: Path, level: int, col: int, row: int, params: PyramidParams) -> None:
    d = Path(pyr_dir) / f"{BASENAME}_files" / str(level)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{col}_{row}.{os.getpid()}.tmp.{params.format}"
    try:
        _write_tile(arr, tmp, params)
        os.replace(tmp, d / f"{col}_{row}.{params.format}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _params(grid: FarmGrid) -> PyramidParams:
    return PyramidParams(tile_size=grid.tile_size, overlap=grid.overlap, format=grid.format, quality=grid.quality)


def gather(
    grid: FarmGrid, work_dir: Path, stage: int, jobs: list[tuple[int, int]], level: int, rect: Rect
) -> np.ndarray:
    """Pixels of RECT at LEVEL from the edge bands of JOBS (of STAGE)."""
    x0, y0, x1, y1 = rect
    out: np.ndarray | None = None
    filled = np.zeros((y1 - y0, x1 - x0), bool)
    for c, r in jobs:
        jd = _band_dir(work_dir, job_id(stage, c, r))
        for side, (bx0, by0, bx1, by1) in _band_rects(
            grid.region(stage, c, r, level), grid.tile_size, grid.overlap
        ).items():
            ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            band = np.load(jd / f"{level}_{side}.npy", mmap_mode="r", allow_pickle=False)
            if out is None:
                out = np.zeros((y1 - y0, x1 - x0, band.shape[2]), np.uint8)
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = band[iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0]
            filled[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = True
    if out is None or not filled.all():
        raise ProcessingError(f"farm: level {level} pixels {rect} are not in the bands of stage {stage}")
    return out


def _assemble(grid: FarmGrid, work_dir: Path, stage: int, col: int, row: int) -> np.ndarray:
    """The children's one-tile outputs side by side: this job's area at its input level."""
    lin = grid.input_level(stage)
    x0, y0, x1, y1 = grid.region(stage, col, row, lin)
    out: np.ndarray | None = None
    for c, r in grid.children(stage, col, row):
        a = np.load(_band_dir(work_dir, job_id(stage - 1, c, r)) / "final.npy", allow_pickle=False)
        cx0, cy0, cx1, cy1 = grid.region(stage - 1, c, r, lin)
        if a.shape[:2] != (cy1 - cy0, cx1 - cx0):
            raise ProcessingError(f"farm: output of job {job_id(stage - 1, c, r)} has the wrong size")
        if out is None:
            out = np.zeros((y1 - y0, x1 - x0, a.shape[2]), np.uint8)
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = a
    assert out is not None
    return out


def write_dzi(pyr_dir: Path, grid: FarmGrid) -> None:
    """The descriptor, as dzsave writes it."""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008"\n'
        f'  Format="{grid.format}"\n  Overlap="{grid.overlap}"\n  TileSize="{grid.tile_size}"\n  >\n'
        f'  <Size \n    Height="{grid.height}"\n    Width="{grid.width}"\n  />\n</Image>\n'
    )
    with atomic_path(Path(pyr_dir) / f"{BASENAME}.dzi") as tmp:
        tmp.write_text(text)


def run_job(
    grid: FarmGrid,
    stage: int,
    col: int,
    row: int,
    work_dir: str | Path,
    pyr_dir: str | Path,
    pixels: np.ndarray | None = None,
    progress: Progress | None = None,
    tile_delay: float = 0.0,
) -> dict[str, Any]:
    """Run job (STAGE, COL, ROW). PIXELS: the rendered area for a block job (stage 0).

    Writes its tiles into PYR_DIR (a staging folder shared by all jobs) and
    its bands, output and marker into WORK_DIR. The root also writes the
    descriptor: PYR_DIR is then a complete pyramid.
    """
    t0 = time.perf_counter()
    work_dir, pyr_dir = Path(work_dir), Path(pyr_dir)
    jid = job_id(stage, col, row)
    if is_done(work_dir, jid):
        return {"job": jid, "skipped": "done"}
    params = _params(grid)
    T, ov = grid.tile_size, grid.overlap
    levels = grid.levels(stage)
    root = grid.stage_shape(stage) == (1, 1)
    if stage == 0:
        if pixels is None:
            raise ValueError("farm: a block job needs its rendered pixels")
        x0, y0, x1, y1 = grid.region(0, col, row, levels[0])
        if pixels.shape[:2] != (y1 - y0, x1 - x0) or pixels.dtype != np.uint8:
            raise ValueError(f"farm: block {jid} needs {x1 - x0}x{y1 - y0} uint8 pixels, got {pixels.shape}")
        cur = pixels if pixels.ndim == 3 else pixels[:, :, None]
        rendered = int(pixels.shape[0] * pixels.shape[1])
    else:
        cur = _reduce(_assemble(grid, work_dir, stage, col, row))
        rendered = 0
    jd = _band_dir(work_dir, jid)
    written = 0
    steps = len(levels) + (1 if stage else 0)
    for i, level in enumerate(levels):
        region = grid.region(stage, col, row, level)
        if cur.shape[:2] != (region[3] - region[1], region[2] - region[0]):
            raise ProcessingError(f"farm: job {jid} level {level}: {cur.shape[:2]} does not fit {region}")
        lw, lh = grid.level_size(level)
        for c, r in _tiles_in(region, T):
            b = tile_bounds(lw, lh, T, ov, c, r)
            if _inside(b, region):
                write_tile_atomic(cur[b[1] - region[1] : b[3] - region[1], b[0] - region[0] : b[2] - region[0]],
                                  pyr_dir, level, c, r, params)  # fmt: skip
                written += 1
                if tile_delay:
                    time.sleep(tile_delay)  # throttled on request (watching a job, killing one in a test)
        if not root:
            for side, (bx0, by0, bx1, by1) in _band_rects(region, T, ov).items():
                _save_npy(
                    jd / f"{level}_{side}.npy",
                    cur[by0 - region[1] : by1 - region[1], bx0 - region[0] : bx1 - region[0]],
                )
        if i + 1 < len(levels):
            cur = _reduce(cur)
        if progress is not None:
            progress((i + 1) / steps)
    if not root:
        _save_npy(jd / "final.npy", cur)
    edges = 0
    if stage > 0:
        edges = _write_child_edges(grid, work_dir, pyr_dir, stage, col, row, params)
        if progress is not None:
            progress(1.0)
    if root:
        write_dzi(pyr_dir, grid)
    marker = done_marker(work_dir, jid)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps({"job": jid, "tiles": written + edges, "pid": os.getpid()}))
    if stage > 0:
        _drop_unneeded_bands(grid, work_dir, stage - 1, grid.dependencies(stage, col, row))
    return {
        "job": jid,
        "stage": stage,
        "levels": [levels[0], levels[-1]],
        "tiles": written + edges,
        "pixels": rendered,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _write_child_edges(
    grid: FarmGrid, work_dir: Path, pyr_dir: Path, stage: int, col: int, row: int, params: PyramidParams
) -> int:
    """Tiles of the children whose overlap reaches a neighbour: from the bands of the children and their ring."""
    T, ov = grid.tile_size, grid.overlap
    cs = stage - 1
    nc, nr = grid.stage_shape(cs)
    n = 0
    rerun = _partial_set(work_dir, cs)
    for c, r in grid.children(stage, col, row):
        if rerun is not None and (c, r) not in rerun:
            continue  # a partial re-render: this child's tiles are the previous version's
        near = [(a, b) for b in range(r - 1, r + 2) for a in range(c - 1, c + 2) if 0 <= a < nc and 0 <= b < nr]
        for level in grid.levels(cs):
            region = grid.region(cs, c, r, level)
            lw, lh = grid.level_size(level)
            for tc, tr in _tiles_in(region, T):
                b = tile_bounds(lw, lh, T, ov, tc, tr)
                if not _inside(b, region):
                    write_tile_atomic(gather(grid, work_dir, cs, near, level, b), pyr_dir, level, tc, tr, params)
                    n += 1
    return n


def _drop_unneeded_bands(grid: FarmGrid, work_dir: Path, stage: int, jobs: list[tuple[int, int]]) -> None:
    """Delete the bands of JOBS once every job that reads them is done (their one-tile
    outputs stay: a partial re-render reduces them again with the jobs it re-runs)."""
    for c, r in jobs:
        if all(is_done(work_dir, job_id(stage + 1, pc, pr)) for pc, pr in grid.parents(stage, c, r)):
            for f in _band_dir(work_dir, job_id(stage, c, r)).glob("*_*.npy"):
                f.unlink(missing_ok=True)


def _partial_set(work_dir: Path, stage: int) -> set[tuple[int, int]] | None:
    """Jobs of STAGE whose edge tiles a partial re-render writes again (None: a whole render)."""
    p = Path(work_dir) / "partial.json"
    if not p.is_file():
        return None
    ids = json.loads(p.read_text()).get("edges", [])
    return {(c, r) for s_, c, r in (map(int, i.split("_")) for i in ids) if s_ == stage}


def partial_jobs(grid: FarmGrid, changed: set[tuple[int, int]]) -> tuple[list[str], list[str]]:
    """(jobs to run again, jobs whose edge tiles are written again) when the blocks
    CHANGED (col, row) have new pixels.

    A changed job's neighbours' edge tiles take their overlap from it (so they are
    written again), which needs the bands of the neighbours' neighbours (so those
    run again too); a parent changes with any of its children, and runs again to
    write its children's edge tiles.
    """

    def dilate(cells: set[tuple[int, int]], nc: int, nr: int) -> set[tuple[int, int]]:
        return {
            (c + dc, r + dr)
            for c, r in cells
            for dc in (-1, 0, 1)
            for dr in (-1, 0, 1)
            if 0 <= c + dc < nc and 0 <= r + dr < nr
        }

    run: list[str] = []
    edges: list[str] = []
    owners: set[tuple[int, int]] = set()
    k = grid.block_tiles
    for s in range(grid.n_stages()):
        nc, nr = grid.stage_shape(s)
        if s > 0:
            changed = {(c // k, r // k) for c, r in changed}
        near = dilate(changed, nc, nr)
        todo = dilate(near, nc, nr) | owners
        run += [job_id(s, c, r) for r in range(nr) for c in range(nc) if (c, r) in todo]
        edges += [job_id(s, c, r) for r in range(nr) for c in range(nc) if (c, r) in near]
        owners = {(c // k, r // k) for c, r in near}
    return run, edges


def prepare_pixels(rgba: np.ndarray, fmt: str) -> np.ndarray:
    """RGBA uint8 block -> the pixels dzsave tiles for FMT (the same libvips steps as build_pyramid)."""
    import pyvips

    from .pyramid import _prepare_for_format, to_8bit

    im = pyvips.Image.new_from_array(np.ascontiguousarray(rgba)).copy(interpretation="srgb")
    out = _prepare_for_format(to_8bit(im), fmt).numpy()
    return out[:, :, None] if out.ndim == 2 else out
