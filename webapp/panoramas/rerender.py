"""Partial re-renders: which stacks, which composite area, which tiles.

A region (or a set of stacks) maps to the stacks whose footprints overlap it;
only those re-run, only the union of their footprints is re-blended into the
composite, and only the pyramid tiles under it (and their ancestors) are
re-encoded into a new version that shares every other tile with the previous
one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Avg, F

from .models import Job, Panorama, Stack, Status
from .pipeline import RenderPlan, enqueue_render

Rect = tuple[int, int, int, int]


class RerenderError(ValueError):
    pass


def parse_param_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['fuse.method=naive', 'sharpness.drop_worst=3'] -> {'fuse': {'method': 'naive'}, ...}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        if not sep or not dot or not stage or not name:
            raise RerenderError(f"parameter {item!r} must look like stage.key=value")
        try:
            value: Any = json.loads(raw, parse_constant=_no_constant)
        except json.JSONDecodeError:
            value = raw
        except RecursionError as e:
            raise RerenderError(f"parameter {key.strip()!r}: value nested too deeply") from e
        if not _finite(value):
            raise RerenderError(f"parameter {key.strip()!r}: {raw.strip()[:40]} is not a finite number")
        out.setdefault(stage, {})[name] = value
    return out


def parse_region(raw: str) -> Rect:
    """'X,Y,W,H' in panorama pixels; RerenderError for anything else (inf and NaN included)."""
    import math

    try:
        values = [float(v) for v in str(raw).split(",")]
    except ValueError as e:
        raise RerenderError("region must be X,Y,W,H in panorama pixels") from e
    if len(values) != 4 or not all(math.isfinite(v) and abs(v) < 2**53 for v in values):
        raise RerenderError("region must be four finite numbers X,Y,W,H in panorama pixels")
    x, y, w, h = (int(v) for v in values)
    return x, y, w, h


def _no_constant(name: str) -> Any:
    raise RerenderError(f"{name} is not a finite number")


def _finite(value: Any) -> bool:
    """No inf or NaN anywhere in VALUE (JSON and the database cannot hold them)."""
    import math

    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def merge_recipe(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = json.loads(json.dumps(base or {}))
    for stage, values in overrides.items():
        merged.setdefault(stage, {}).update(values)
    return merged


def validate_recipe(recipe: dict[str, Any]) -> None:
    from processing.stack.pipeline import StackParams

    try:
        StackParams.from_dict(recipe)
    except (TypeError, ValueError) as e:
        raise RerenderError(f"invalid recipe: {e}") from e


def _fp_rect(fp: dict[str, Any]) -> Rect | None:
    try:
        return int(fp["x"]), int(fp["y"]), int(fp["w"]), int(fp["h"])
    except (KeyError, TypeError, ValueError):
        return None


def intersects(a: Rect, b: Rect, wrap_width: int | None = None) -> bool:
    """Rectangles overlap; with WRAP_WIDTH, x is periodic (a 360-degree panorama)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    if ay >= by + bh or by >= ay + ah:
        return False
    shifts = (0,) if not wrap_width else (-wrap_width, 0, wrap_width)
    return any(ax + s < bx + bw and bx < ax + s + aw for s in shifts)


def union(rects: list[Rect], width: int, height: int) -> Rect:
    """Bounding box of RECTS clipped to the panorama (a wrapped footprint spans it)."""
    x0 = min(r[0] for r in rects)
    y0 = min(r[1] for r in rects)
    x1 = max(r[0] + r[2] for r in rects)
    y1 = max(r[1] + r[3] for r in rects)
    if x0 < 0 or x1 > width:  # straddles the 360-degree seam: whole width
        x0, x1 = 0, width
    x0, y0 = max(0, x0), max(0, y0)
    return x0, y0, min(width, x1) - x0, min(height, y1) - y0


@dataclass
class RerenderPlan:
    panorama: Panorama
    stacks: list[Stack]
    region: Rect | None  # composite area to re-blend; None = full rebuild
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    estimate_seconds: float = 0.0
    tiles_estimate: int | None = None

    @property
    def full(self) -> bool:
        return self.region is None


def _estimate(pano: Panorama, n_stacks: int, fraction: float) -> float:
    def avg(kind: str) -> float | None:
        rows = Job.objects.filter(panorama=pano, kind=kind, status=Status.DONE, started__isnull=False)
        v = rows.annotate(d=F("ended") - F("started")).aggregate(a=Avg("d"))["a"]
        return v.total_seconds() if v is not None else None

    stack_s = avg("stack") or 30.0
    comp_s = avg("composite") or 30.0
    pyr_s = avg("pyramid") or 10.0
    return n_stacks * stack_s / 2 + comp_s * max(fraction, 0.1) + pyr_s * max(fraction, 0.1)


def plan_rerender(
    pano: Panorama,
    *,
    stack_ids: list[int] | None = None,
    region: Rect | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    full: bool = False,
) -> RerenderPlan:
    stacks_qs = Stack.objects.filter(subpanorama__panorama=pano).select_related("subpanorama")
    pyr = pano.published_pyramid
    width = int(pyr.width) if pyr else 0
    height = int(pyr.height) if pyr else 0
    wrap_w = width if pano.wrap else None
    farm_built = pyr is not None and "farm" in (pyr.stats or {})  # no composite file, block jobs instead
    if full or (stack_ids is None and region is None) or pyr is None or not (pano.composite_path or farm_built):
        stacks = list(stacks_qs)
        plan = RerenderPlan(pano, stacks, None, overrides or {})
    else:
        if stack_ids is not None:
            stacks = list(stacks_qs.filter(pk__in=stack_ids))
            missing = set(stack_ids) - {s.pk for s in stacks}
            if missing:
                raise RerenderError(f"stacks {sorted(missing)} are not in panorama {pano.slug}")
        else:
            assert region is not None
            x, y, w, h = region
            if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
                raise RerenderError(f"region {region} is outside the {width}x{height} panorama")
            stacks = [s for s in stacks_qs if (r := _fp_rect(s.footprint)) and intersects(r, region, wrap_w)]
        rects = [r for s in stacks if (r := _fp_rect(s.footprint))]
        if len(rects) < len(stacks):
            plan = RerenderPlan(pano, stacks if stacks else list(stacks_qs), None, overrides or {})
        else:
            area = union(rects + ([region] if region else []), width, height) if rects else region
            plan = RerenderPlan(pano, stacks, area, overrides or {})
    if plan.overrides:
        for s in plan.stacks:
            validate_recipe(merge_recipe(s.recipe, plan.overrides))
    frac = 1.0 if plan.region is None or not width else (plan.region[2] * plan.region[3]) / (width * height)
    plan.estimate_seconds = round(_estimate(pano, len(plan.stacks), frac), 1)
    if pyr is not None:
        from processing.tiles.pyramid import count_tiles, tiles_for_rect

        plan.tiles_estimate = (
            count_tiles(width, height, pyr.tile_size)
            if plan.region is None
            else len(tiles_for_rect(width, height, pyr.tile_size, pyr.overlap, plan.region))
        )
    return plan


def execute(plan: RerenderPlan) -> RenderPlan:
    """Apply recipe changes and queue the partial (or full) chain."""
    pano = plan.panorama
    with transaction.atomic():
        if plan.overrides:
            for s in plan.stacks:
                s.recipe = merge_recipe(s.recipe, plan.overrides)
                s.save(update_fields=["recipe"])
    if pano.published_pyramid is not None and "farm" in (pano.published_pyramid.stats or {}):
        # Built by the farm (no composite file to patch): a region re-runs only the block
        # jobs under it (and around and above them); a full re-render, the whole farm chain.
        from .farm import enqueue_farm_partial, enqueue_farm_render

        if plan.region is not None and pano.layout.get("path"):
            return enqueue_farm_partial(pano, plan.stacks, list(plan.region))
        return enqueue_farm_render(pano, plan.stacks)
    extra = {}
    if plan.region is not None and pano.published_pyramid is not None:
        extra = {
            "region": list(plan.region),
            "base_composite": pano.composite_path,
            "base_pyramid": pano.published_pyramid.pk,
        }
    return enqueue_render(pano, plan.stacks, partial=extra or None)


def describe(plan: RerenderPlan) -> dict[str, Any]:
    return {
        "panorama": plan.panorama.slug,
        "stacks": [s.name for s in plan.stacks],
        "region": list(plan.region) if plan.region else None,
        "full": plan.full,
        "overrides": plan.overrides,
        "estimate_seconds": plan.estimate_seconds,
        "tiles_estimate": plan.tiles_estimate,
    }
