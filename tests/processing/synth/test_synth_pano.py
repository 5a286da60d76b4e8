import math

import numpy as np
import pytest

from processing.synth.synth_pano import cube_to_equirect, cube_views, load_cube, make_cylinder_views, write_views
from tests.processing._stitch_helpers import SHARED, texture

MEADOW = SHARED / "photos" / "meadow_cubemap_2048x12288.jpg"


def test_cylinder_views_cover_360():
    photo = texture(120, 720, seed=2)
    views, yaws, f = make_cylinder_views(photo, n_views=6, overlap=0.3)
    assert len(views) == 6 and yaws == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    assert abs(f - 720 / (2 * math.pi)) < 1e-9
    # the view centre column equals the photo column at its yaw
    v = views[0]
    c = v.shape[1] // 2
    assert np.abs(v[v.shape[0] // 2, c] - photo[60, 360]).max() < 0.15


def test_meadow_cube_continuity_and_ground_truth(tmp_path):
    if not MEADOW.is_file():
        pytest.skip("shared data absent")
    cube = load_cube(MEADOW, 256)
    eq = cube_to_equirect(cube, 1024)
    # continuity: differences across the cube's face edges (lon = +-45, +-135
    # degrees) are no larger than elsewhere
    g = np.abs(np.diff(eq[200:312], axis=1)).mean(axis=(0, 2))
    edges = [int((0.5 + d / 360) * 1024) - 1 for d in (-135, -45, 45, 135)]
    assert max(g[e - 1 : e + 2].max() for e in edges) < 3 * np.median(g)
    assert eq[:50].mean() > eq[-50:].mean()  # sky on top
    views = cube_views(cube, (160, 120), 65.0, 60.0, pitches=(0.0,), zenith=False, nadir=False)
    assert len(views) >= 6
    write_views(views, tmp_path / "v", eq)
    assert (tmp_path / "v" / "rig.csv").is_file()


def test_meadow_stitch_against_truth(tmp_path):
    """Reduced-resolution ground truth: a ring of views stitched to an
    equirectangular panorama, compared with the truth after alignment."""
    if not MEADOW.is_file():
        pytest.skip("shared data absent")
    from processing.bench.stitch import meadow_quality
    from processing.stitch.pipeline import StitchParams, stitch_files
    from processing.stitch.registration import load_placements

    cube = load_cube(MEADOW, 512)
    views = cube_views(cube, (320, 240), 65.0, 40.0, pitches=(0.0,), zenith=False, nadir=False, exposure_sigma=0.05)
    d = write_views(views, tmp_path / "v")
    files = sorted(d.glob("view_*.png"))
    params = StitchParams(projection="equirectangular", wrap=True, nfeatures=1200, bits=16, vignetting=True)
    res = stitch_files(files, tmp_path / "m.tif", params, load_placements(d / "rig.csv"))
    assert res.placed == len(files)
    q = meadow_quality(d, tmp_path / "m.tif", tmp_path / "m.tif.layout.json", cube)
    assert q["misalignment_rms_px"] < 1.0, q
    assert q["psnr_db"] > 28.0, q
