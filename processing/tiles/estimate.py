"""Jobs, bytes, memory and wall time of a farm render, from rates measured on this installation.

Rates (bench farm, completed jobs): ``block_mp_per_s`` (pixels a block job
renders and tiles per CPU second, one thread), ``reduce_cpu_s`` (CPU seconds of
one reduce job), ``stack_s`` / ``stack_s_gpu`` (one stack job on a CPU / GPU
worker), ``layout_s_per_stack`` (registration and layout, per stack, in the
one layout job), ``tile_bytes_per_mp`` (pyramid bytes per full-resolution
megapixel), ``block_peak_mb`` / ``reduce_peak_mb`` (peak memory of one job).
The model: stacks spread over the workers (GPU workers first), the layout
job alone, then the farm's CPU seconds spread over the workers but never
shorter than its critical path (one job per stage); storage and Redis are
taken as keeping up, so the figures are a lower bound where they do not.
"""

from __future__ import annotations

import math
from typing import Any

from .blocks import FarmGrid
from .pyramid import count_tiles

REQUIRED = ("block_mp_per_s", "reduce_cpu_s")


def farm_counts(grid: FarmGrid) -> dict[str, int]:
    jobs = grid.jobs()
    blocks = sum(1 for j in jobs if j["stage"] == 0)
    return {
        "block_jobs": blocks,
        "reduce_jobs": len(jobs) - blocks,
        "stages": grid.n_stages(),
        "tiles": count_tiles(grid.width, grid.height, grid.tile_size),
    }


def estimate(
    grid: FarmGrid,
    rates: dict[str, float],
    workers: int,
    gpus: int = 0,
    stacks: int = 0,
) -> dict[str, Any]:
    """Jobs, bytes, memory per job and wall seconds for GRID's panorama on WORKERS (+ GPUS)."""
    missing = [k for k in REQUIRED if not rates.get(k)]
    if missing:
        raise ValueError(f"no measured rate for {', '.join(missing)}: run `python -m processing bench farm` first")
    if workers < 1 or gpus < 0:
        raise ValueError("workers must be >= 1 and gpus >= 0")
    c = farm_counts(grid)
    block_mp = grid.block_px**2 / 1e6
    area_mp = grid.width * grid.height / 1e6
    block_cpu = area_mp / rates["block_mp_per_s"]  # the blocks together cover the panorama once
    reduce_cpu = c["reduce_jobs"] * rates["reduce_cpu_s"]
    one_block = min(block_mp, area_mp) / rates["block_mp_per_s"]
    critical = one_block + (c["stages"] - 1) * rates["reduce_cpu_s"]
    farm_wall = max((block_cpu + reduce_cpu) / workers, critical)
    out: dict[str, Any] = {
        "workers": workers,
        "gpus": gpus,
        **c,
        "gigapixels": round(area_mp / 1e3, 3),
        "farm_cpu_s": round(block_cpu + reduce_cpu, 1),
        "farm_wall_s": round(farm_wall, 1),
        "critical_path_s": round(critical, 1),
    }
    wall = farm_wall
    if stacks:
        st = _stack_wall(stacks, workers, gpus, rates)
        lay = stacks * float(rates.get("layout_s_per_stack", 0.0))
        out.update(stack_jobs=stacks, stack_wall_s=st, layout_s=round(lay, 1))
        wall += (st or 0.0) + lay
    out["wall_s"] = round(wall, 1)
    out["wall_h"] = round(wall / 3600, 2)
    if rates.get("tile_bytes_per_mp"):
        out["pyramid_bytes"] = int(area_mp * 4 / 3 * rates["tile_bytes_per_mp"])
    # edge bands of the jobs in flight: 4 sides x one tile (+1 px) x block side x 3 bytes, per level
    out["band_bytes_per_job"] = int(4 * (grid.tile_size + grid.overlap) * grid.block_px * 3 * 4 / 3)
    for k in ("block_peak_mb", "reduce_peak_mb"):
        if rates.get(k):
            out[k] = round(float(rates[k]), 1)
    return out


def _stack_wall(stacks: int, workers: int, gpus: int, rates: dict[str, float]) -> float | None:
    """Stacks spread over CPU workers and GPU workers by their measured speeds."""
    cpu_s = rates.get("stack_s")
    gpu_s = rates.get("stack_s_gpu")
    speed = (workers / cpu_s if cpu_s else 0.0) + (gpus / gpu_s if gpus and gpu_s else 0.0)
    if speed <= 0:
        return None
    per = cpu_s or gpu_s or 0.0
    return round(max(stacks / speed, per), 1)


def scaling(grid: FarmGrid, rates: dict[str, float], workers: list[int], stacks: int = 0, gpus: int = 0) -> list[dict]:
    """estimate() for each worker count, with the parallel efficiency against one worker."""
    rows = [estimate(grid, rates, n, gpus, stacks) for n in workers]
    base = rows[0]["wall_s"] * rows[0]["workers"]
    for r in rows:
        r["efficiency"] = round(base / (r["wall_s"] * r["workers"]), 3) if r["wall_s"] else None
    return rows


def grid_for_gigapixels(gp: float, aspect: float = 8.0, **kw: Any) -> FarmGrid:
    """A panorama of GP gigapixels, ASPECT times as wide as high (for models and plans)."""
    h = math.sqrt(gp * 1e9 / aspect)
    return FarmGrid(int(h * aspect), int(h), **kw)
