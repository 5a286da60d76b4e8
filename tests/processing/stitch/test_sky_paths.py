"""A separately shot sky merged in the chain: it fills the ground panorama's
sky and holes, never its buildings, block by block."""

import json

import numpy as np

from processing.io.imageio import write_image
from processing.stitch.blend import Layer, SourceCache
from processing.stitch.pipeline import Layout, StitchParams, render_region, render_to_file, stitch_files
from processing.stitch.project import Camera, footprint, make_canvas, rotation_from_ypr
from processing.stitch.sky_merge import SkyMerger
from processing.synth.synth_pano import make_cylinder_views
from tests.processing._stitch_helpers import texture


def _layouts(tmp_path):
    h, w = 120, 160
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    cams, g_layers, s_layers = [], [], []
    for yaw in (-40, 0, 40):
        cams.append(Camera.make(w, h, 150.0, rotation_from_ypr(yaw, 0, 0)))
    cv = make_canvas(cams, "cylindrical", wrap=False)
    for k, cam in enumerate(cams):
        ground = texture(h, w, seed=k) * 0.5  # dark textured buildings...
        ground[: h // 3] = 1.0  # ...under a blown-out sky
        gp = tmp_path / f"g{k}.png"
        write_image(gp, ground)
        sky = np.broadcast_to(np.float32([0.35, 0.55, 0.9]) * (0.9 + 0.1 * yy), (h, w, 3)).copy()
        sp = tmp_path / f"s{k}.png"
        write_image(sp, sky)
        up = Camera.make(w, h, 150.0, rotation_from_ypr((-40, 0, 40)[k], 25, 0))  # the sky shot higher
        g_layers.append(Layer(str(gp), cam, footprint(cam, cv)))
        s_layers.append(Layer(str(sp), up, footprint(up, cv)))
    cv2 = make_canvas(cams + [L.cam for L in s_layers], "cylindrical", wrap=False)
    g_layers = [Layer(L.path, L.cam, footprint(L.cam, cv2)) for L in g_layers]
    s_layers = [Layer(L.path, L.cam, footprint(L.cam, cv2)) for L in s_layers]
    return Layout(cv2, g_layers, 3, 64), Layout(cv2, s_layers, 3, 64)


def test_sky_fills_sky_and_holes_not_buildings(tmp_path):
    ground, sky = _layouts(tmp_path)
    cv = ground.canvas
    merger = SkyMerger(ground, sky, feather_deg=1.0)
    g, ga = render_region(ground, (0, 0, cv.width, cv.height))
    out, oa = merger((0, 0, cv.width, cv.height), g.copy(), ga.copy())
    s, sa = render_region(sky, (0, 0, cv.width, cv.height))
    blue = out[..., 2] - out[..., 0]
    # holes above the ground panorama, covered by the sky shot: filled, blue
    hole = (ga == 0) & (sa > 0.99)
    assert hole.sum() > 500 and (oa[hole] > 0.99).mean() > 0.95
    assert (blue[hole & (oa > 0.99)] > 0.2).mean() > 0.9
    # the ground's blown-out sky is replaced by the sky shot
    gsky = (ga > 0.99) & (g.min(2) > 0.95) & (sa > 0.99)
    # (all but the feathered margin next to the buildings)
    assert gsky.sum() > 200 and (blue[gsky] > 0.2).mean() > 0.7
    # the buildings (textured, dark) stay exactly as they were
    bld = (ga > 0.99) & (g.max(2) < 0.5)
    bld[: cv.height // 2] = False
    assert bld.sum() > 1000
    assert np.abs(out[bld] - g[bld]).max() < 1e-6


def test_sky_merge_block_by_block_equals_whole(tmp_path):
    ground, sky = _layouts(tmp_path)
    merger = SkyMerger(ground, sky, feather_deg=1.0)
    cv = ground.canvas
    whole = tmp_path / "whole.png"
    render_to_file(ground, whole, 8, SourceCache(), merge=merger)
    tiled = tmp_path / "tiled.tif"
    render_to_file(ground, tiled, 8, SourceCache(), tile=64, merge=merger)  # 64 px blocks
    import cv2
    import tifffile

    a = cv2.imread(str(whole), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]].astype(int)
    b = tifffile.imread(tiled).astype(int)
    assert a.shape == b.shape == (cv.height, cv.width, 4)
    assert np.abs(a - b).max() <= 2


def test_stitch_with_sky_folder(tmp_path):
    views, _, _ = make_cylinder_views(texture(200, 1300, seed=9), n_views=8, overlap=0.4)
    paths = []
    for k, v in enumerate(views):
        paths.append(tmp_path / f"v{k}.png")
        write_image(paths[-1], v)
    ground, extra = paths[:5], paths[5:6]
    out = tmp_path / "p.tif"
    params = StitchParams(projection="cylindrical", wrap=False, crop="off")
    res = stitch_files(ground, out, params, sky_paths=extra)
    assert res.placed == 6 and res.total == 6
    lay = json.loads((tmp_path / "p.tif.sky.layout.json").read_text())
    assert [im["path"] for im in lay["images"]] == [str(extra[0])]
    only = stitch_files(ground, tmp_path / "g.tif", params)
    assert res.width > only.width  # the extra capture widens the canvas and is merged in
