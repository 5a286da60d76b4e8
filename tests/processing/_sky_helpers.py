"""Synthetic ground and sky captures of one textured sphere (sky tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from processing.synth.synth_pano import cube_views, write_views
from tests.processing._stitch_helpers import texture


def synthetic_captures(tmp: Path, face: int = 128, view: int = 160) -> tuple[list[Path], list[Path], Path, Path]:
    """Ground views (a ring at the horizon) and a sky capture (a ring at 40
    degrees and the zenith, shot at 0.7x the exposure), each folder with its
    rig.csv (nominal angles) and truth.json.

    Returns (ground files, sky files, ground folder, sky folder)."""
    cube = np.concatenate([texture(face, face, seed=k) for k in range(6)], 0)
    size = (view, view * 3 // 4)
    g = cube_views(cube, size, 65.0, 40.0, pitches=(0.0,), zenith=False, nadir=False, exposure_sigma=0.03)
    s = cube_views(cube, size, 65.0, 50.0, pitches=(40.0,), zenith=True, nadir=False, exposure_sigma=0.03, seed=1)
    for v in s:
        v.image = np.clip(v.image * 0.7, 0, 1)
        v.name = "sky_" + v.name
    gd, sd = write_views(g, tmp / "ground"), write_views(s, tmp / "sky")
    return sorted(gd.glob("view_*.png")), sorted(sd.glob("sky_*.png")), gd, sd
