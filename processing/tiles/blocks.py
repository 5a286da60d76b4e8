"""The farm's job graph: block jobs that render the panorama, reduce jobs that build the pyramid.

The full-resolution level is cut into blocks of K x K Deep Zoom tiles (K a
power of two), aligned to the tile grid, so every full-resolution tile has
exactly one owner. A block job renders its rectangle and reduces it log2(K)
times inside itself (its area stays tile-aligned at every level, down to one
tile). A reduce job of stage s gathers the one-tile outputs of K x K jobs of
stage s-1 (their area at that level: K x K tiles) and does the same, until
one job holds the whole level (the root), which reduces to 1x1 and writes the
descriptor. Tiles whose 1-px overlap reaches a neighbour's area are written
by the parent, once the neighbours are done too, from the edge bands each job
keeps (reduce.py). Memory per job is K x K tiles whatever the panorama's area.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .pyramid import level_size, num_levels

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (level pixels)


@dataclasses.dataclass(frozen=True)
class FarmGrid:
    """Geometry of the farm's jobs for one WIDTH x HEIGHT pyramid."""

    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1
    block_tiles: int = 8
    format: str = "jpg"
    quality: int = 85

    def __post_init__(self) -> None:
        k = self.block_tiles
        if k < 2 or k & (k - 1):
            raise ValueError("farm: block_tiles must be a power of two >= 2")
        if self.width < 1 or self.height < 1:
            raise ValueError("farm: the panorama has no pixels")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise ValueError("farm: overlap must be 0..tile_size/2")
        if self.format != "jpg":
            # dzsave reduces images with alpha (png, webp) premultiplied and truncated,
            # not with the rounded 2x2 mean used here: only opaque jpg tiles match it
            raise ValueError("farm: tiles are written as jpg (png/webp keep alpha, which dzsave reduces otherwise)")

    @property
    def block_px(self) -> int:
        return self.block_tiles * self.tile_size

    @property
    def shift(self) -> int:
        """Levels reduced inside one job: log2(block_tiles)."""
        return self.block_tiles.bit_length() - 1

    @property
    def top(self) -> int:
        return num_levels(self.width, self.height) - 1

    def level_size(self, level: int) -> tuple[int, int]:
        return level_size(self.width, self.height, level)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FarmGrid:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    # --- stages -------------------------------------------------------------

    def input_level(self, stage: int) -> int:
        """The level a stage's jobs start from (rendered for stage 0)."""
        return self.top - stage * self.shift

    def stage_shape(self, stage: int) -> tuple[int, int]:
        """Jobs per row and column at STAGE: K x K tiles of its input level each."""
        lw, lh = self.level_size(self.input_level(stage))
        span = self.block_px
        return -(-lw // span), -(-lh // span)

    def n_stages(self) -> int:
        s = 0
        while self.stage_shape(s) != (1, 1):
            s += 1
        return s + 1

    def levels(self, stage: int) -> list[int]:
        """Levels whose tiles STAGE's jobs compute (highest first)."""
        lin = self.input_level(stage)
        hi = lin if stage == 0 else lin - 1
        lo = 0 if self.stage_shape(stage) == (1, 1) else lin - self.shift
        return list(range(hi, lo - 1, -1))

    def region(self, stage: int, col: int, row: int, level: int) -> Rect:
        """Area of job (stage, col, row) at LEVEL, tile-aligned, clipped to the level."""
        lin = self.input_level(stage)
        lw, lh = self.level_size(lin)
        span = self.block_px
        x0, y0 = col * span, row * span
        x1, y1 = min(lw, x0 + span), min(lh, y0 + span)
        d = lin - level
        return x0 >> d, y0 >> d, -(-x1 >> d), -(-y1 >> d)

    # --- the job graph ------------------------------------------------------

    def children(self, stage: int, col: int, row: int) -> list[tuple[int, int]]:
        """Jobs of STAGE-1 whose one-tile outputs this job reduces."""
        if stage == 0:
            return []
        nc, nr = self.stage_shape(stage - 1)
        k = self.block_tiles
        return [(c, r) for r in range(row * k, min(nr, (row + 1) * k)) for c in range(col * k, min(nc, (col + 1) * k))]

    def dependencies(self, stage: int, col: int, row: int) -> list[tuple[int, int]]:
        """Children plus the ring of their neighbours (for the overlap of their edge tiles)."""
        if stage == 0:
            return []
        nc, nr = self.stage_shape(stage - 1)
        k = self.block_tiles
        return [
            (c, r)
            for r in range(max(0, row * k - 1), min(nr, (row + 1) * k + 1))
            for c in range(max(0, col * k - 1), min(nc, (col + 1) * k + 1))
        ]

    def parents(self, stage: int, col: int, row: int) -> list[tuple[int, int]]:
        """Jobs of STAGE+1 that depend on job (stage, col, row)."""
        if stage + 1 >= self.n_stages():
            return []
        nc, nr = self.stage_shape(stage + 1)
        k = self.block_tiles
        cs = sorted({(col + d) // k for d in (-1, 0, 1) if 0 <= (col + d) // k < nc})
        rs = sorted({(row + d) // k for d in (-1, 0, 1) if 0 <= (row + d) // k < nr})
        return [(c, r) for r in rs for c in cs if (col, row) in self.dependencies(stage + 1, c, r)]

    def jobs(self) -> list[dict[str, Any]]:
        """Every job in an order that respects the dependencies (stage by stage)."""
        out = []
        for s in range(self.n_stages()):
            nc, nr = self.stage_shape(s)
            for r in range(nr):
                for c in range(nc):
                    out.append(
                        {
                            "id": job_id(s, c, r),
                            "stage": s,
                            "col": c,
                            "row": r,
                            "kind": "block" if s == 0 else "reduce",
                            "after": [job_id(s - 1, a, b) for a, b in self.dependencies(s, c, r)],
                        }
                    )
        return out


def job_id(stage: int, col: int, row: int) -> str:
    return f"{stage}_{col}_{row}"


def parse_job_id(name: str) -> tuple[int, int, int]:
    try:
        s, c, r = (int(v) for v in name.split("_"))
    except ValueError as e:
        raise ValueError(f"farm: bad job id {name!r} (want STAGE_COL_ROW)") from e
    return s, c, r


def write_plan(work_dir: str | Path, grid: FarmGrid, extra: dict[str, Any] | None = None) -> Path:
    """WORK_DIR/plan.json: the grid and every job with its dependencies."""
    from ..io.atomic import atomic_path

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    plan = {"grid": grid.to_dict(), "jobs": grid.jobs(), **(extra or {})}
    path = work_dir / "plan.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    return path


def read_plan(work_dir: str | Path) -> dict[str, Any]:
    from ..io.errors import InputError

    path = Path(work_dir) / "plan.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read the farm plan: {e}") from e
