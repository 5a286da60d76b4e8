"""The composite job's sky step: the panorama's sky capture (a sub-panorama
marked is_sky) merged into the ground composite last (processing.stitch.layers).

Thin glue: which stacks are sky, their approximate placements, and which
processing call fits the composite that was just made (a full merge, or, after
a partial re-render of the ground, the stored sky merge re-applied to the
re-rendered rectangle so the sky stays as it was).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processing.stitch.registration import Placement

from . import storage
from .models import Stack, SubPanorama


def split_sky_stacks(stacks: Sequence[Stack]) -> tuple[list[Stack], list[Stack]]:
    """(ground stacks, sky stacks) in their given order."""
    sky_ids = set(
        SubPanorama.objects.filter(pk__in={s.subpanorama_id for s in stacks}, is_sky=True).values_list("pk", flat=True)
    )
    ground = [s for s in stacks if s.subpanorama_id not in sky_ids]
    sky = [s for s in stacks if s.subpanorama_id in sky_ids]
    return ground, sky


def ground_target(out: Path, sky: Sequence[Stack]) -> Path:
    """Where the composite job renders the ground: OUT itself without a sky
    capture, else a hidden file beside it that the merge turns into OUT (so
    OUT, once there, always holds the sky)."""
    from processing.stitch.layers import ground_path_for

    return ground_path_for(out) if sky else out


def merge_sky_stacks(
    out: Path,
    sky: Sequence[Stack],
    scale: float,
    bits: int,
    patched_from: Path | None = None,
    rect: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Merge the sky stacks into composite OUT from the ground rendered at
    ground_target(OUT) (see module docstring); a reused OUT is left alone.

    patched_from/rect: the ground was just written from composite
    PATCHED_FROM with RECT (x, y, w, h) re-rendered."""
    from processing.stitch.layers import has_sky, load_sky, merge_sky_capture, remerge_sky_rect, remove_ground

    ground = ground_target(out, sky)
    if out.exists() and has_sky(out):
        remove_ground(ground)
        return {"sky": True, "reused": True}
    paths = [storage.absolute(s.output_path) for s in sky]
    if patched_from is not None and rect is not None and has_sky(patched_from):
        # A re-rendered sky stack replaces its old output at the same place.
        old = [L.path for L in load_sky(patched_from).layout.layers]
        by_dir = {str(Path(p).parent): p for p in old}
        repl = {by_dir[str(p.parent)]: str(p) for p in paths if by_dir.get(str(p.parent), str(p)) != str(p)}
        info = remerge_sky_rect(patched_from, ground, tuple(int(v) for v in rect), bits, repl, out)  # type: ignore[arg-type]
        remove_ground(ground)
        return info
    placements = {
        p.name: Placement(
            yaw=s.yaw, pitch=s.pitch or 0.0, roll=0.0, focal=s.focal_px * float(scale) if s.focal_px else None
        )
        for s, p in zip(sky, paths, strict=True)
        if s.yaw is not None
    }
    info = merge_sky_capture(ground, paths, out, sky_placements=placements or None, bits=bits)
    remove_ground(ground)
    return {"sky": True, **info}
