"""stitch.layers: a sky capture registered, exposure-matched and merged into a
ground panorama; the re-render of a ground region leaves the sky as it was;
sub-panoramas rendered apart merged; the --sky option of the stitch command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from processing.stitch.layers import (
    ground_sky_mask,
    load_sky,
    merge_sky_capture,
    merge_subpanoramas,
    proxy_to_block,
    remerge_sky_rect,
    sky_weights,
    tone_map,
)
from processing.stitch.pipeline import Layout, StitchParams, layout_from_json, render_region, stitch_files
from processing.stitch.project import Canvas
from processing.stitch.registration import load_placements
from tests.processing._sky_helpers import synthetic_captures
from tests.processing._stitch_helpers import SHARED, texture

MEADOW = SHARED / "photos" / "meadow_cubemap_2048x12288.jpg"


def _canvas(w: int, h: int) -> Canvas:
    return Canvas("equirectangular", w, h, w / (2 * math.pi), h / math.pi, w / 2 - 0.5, h / 2 - 0.5, True)


def test_tone_map_rolls_off_without_clipping() -> None:
    ramp = np.linspace(0, 1, 101, dtype=np.float32)
    rgb = np.stack([ramp, ramp * 0.8, ramp * 0.5], -1)[None]
    assert np.allclose(tone_map(rgb, 1.0, 1.0), rgb)  # nothing to roll off
    out = tone_map(rgb, 2.0, 2.0, knee=0.5)[0]
    assert np.allclose(out[:25], rgb[0, :25] * 2.0, atol=1e-6)  # linear below the knee
    assert np.all(np.diff(out[:, 0]) > 0)  # monotone: detail kept
    assert out.max() <= 1.0 + 1e-6 and out[-1, 0] > 0.999  # the brightest maps to white, none above
    assert out[60, 0] < 0.999  # bright cloud detail stays below white
    assert np.allclose(out[80, 1] / out[80, 0], 0.8, atol=1e-4)  # hue kept


def _skyline(h: int = 120, w: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """Proxy ground: uncovered above row 30, a smooth bright sky, a textured
    tower rising into it, textured ground below row 70."""
    rgb = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    alpha[30:] = 1
    yy = np.arange(h, dtype=np.float32)[:, None, None]
    rgb[:] = np.array([0.55, 0.7, 0.95], np.float32) + 0.001 * yy
    tex = texture(h, w, seed=3) * 0.4
    rgb[70:] = tex[70:]
    rgb[35:70, 100:120] = tex[35:70, 100:120]  # the tower
    rgb[alpha == 0] = 0
    return rgb, alpha


def test_sky_mask_follows_sky_connected_to_the_hole_above() -> None:
    rgb, alpha = _skyline()
    m = ground_sky_mask(rgb, alpha, wrap=True)
    assert m[40:65, 10:90].mean() > 0.95  # the sky below the uncovered top
    assert m[40:68, 102:118].mean() == 0  # not the tower
    assert m[75:].mean() == 0  # not the ground


def test_sky_weights_keep_the_transition_out_of_the_tower() -> None:
    from processing.stitch.layers import SkyMergeParams

    rgb, alpha = _skyline()
    pc = _canvas(240, 120)
    s_alpha = np.zeros_like(alpha)
    s_alpha[:80] = 1  # the sky capture covers the top down past the skyline
    w, _ = sky_weights(rgb, alpha, s_alpha, pc, SkyMergeParams(feather_deg=4.0, erode_deg=1.0))
    assert np.all(w[:30] == 1)  # no ground: the sky fills
    assert w[36:68, 102:118].max() == 0  # the tower keeps the ground's pixels
    assert w[75:].max() == 0  # and so does the ground
    assert w[50, 40] > 0.9  # the ground's sky is replaced inside
    row = w[32:66, 60]
    assert np.all(np.abs(np.diff(row)) < 0.5)  # a gradual transition


def _read(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def test_rerender_of_a_ground_region_leaves_the_sky(tmp_path: Path) -> None:
    from processing.stitch.composite import patch_composite

    gfiles, sfiles, gd, sd = synthetic_captures(tmp_path)
    params = StitchParams(projection="equirectangular", wrap=True, nfeatures=600, bits=8, block=256)
    res = stitch_files(gfiles, tmp_path / "g.tif", params, load_placements(gd / "rig.csv"))
    assert res.placed == len(gfiles)
    info = merge_sky_capture(tmp_path / "g.tif", sfiles, tmp_path / "m.tif", load_placements(sd / "rig.csv"))
    assert info["placed"] == len(sfiles)
    assert 1.25 < float(np.median(info["exposure_gain"])) < 1.6  # the 0.7x capture brought up to the ground
    g, m = _read(tmp_path / "g.tif"), _read(tmp_path / "m.tif")
    assert (m[..., 3] > 0).mean() > (g[..., 3] > 0).mean() + 0.25  # the sky filled above the ground
    # the ground keeps its own pixels except in a band along its top border
    sm0 = load_sky(tmp_path / "m.tif")
    w0 = proxy_to_block(sm0.weights, sm0.layout.canvas, (0, 0, g.shape[1], g.shape[0]))
    both = (g[..., 3] == 255) & (m[..., 3] == 255)
    kept = both & (w0 < 1e-3)
    assert kept.sum() > 0.85 * both.sum()
    assert np.abs(m[kept][:, :3].astype(int) - g[kept][:, :3].astype(int)).max() <= 1
    # re-render a rectangle across the skyline with one ground image brightened
    lay = layout_from_json(tmp_path / "m.tif.layout.json")
    L = lay.layers[0]
    x0, y0, x1, y1 = L.footprint
    top = int(np.argmax(g[:, (x0 + x1) // 2 % g.shape[1], 3] > 0))
    rect = (x0, max(0, top - 60), x1 - x0, 120)
    import cv2

    img = cv2.imread(L.path)
    bright = tmp_path / "new" / Path(L.path).name
    bright.parent.mkdir()
    cv2.imwrite(str(bright), np.clip(img.astype(np.float32) * 1.3, 0, 255).astype(np.uint8))
    patch_composite(tmp_path / "m.tif", {L.path: str(bright)}, rect, tmp_path / "p.tif", bits=8)
    remerge_sky_rect(tmp_path / "m.tif", tmp_path / "p.tif", rect)
    p = _read(tmp_path / "p.tif")
    sm = load_sky(tmp_path / "p.tif")  # the sky merge travels with the new version
    rx0, ry0, rx1, ry1 = rect[0], rect[1], min(p.shape[1], rect[0] + rect[2]), rect[1] + rect[3]
    w = proxy_to_block(sm.weights, sm.layout.canvas, (rx0, ry0, rx1, ry1))
    pr, mr, gr = p[ry0:ry1, rx0:rx1], m[ry0:ry1, rx0:rx1], g[ry0:ry1, rx0:rx1]
    sky_only = (w > 0.999) | (gr[..., 3] == 0)
    assert sky_only.sum() > 500
    assert np.array_equal(pr[sky_only], mr[sky_only])  # the sky exactly as it was
    ground_only = (w < 1e-3) & (gr[..., 3] == 255)
    assert pr[ground_only][:, :3].astype(float).mean() > mr[ground_only][:, :3].astype(float).mean() + 5


def test_subpanoramas_rendered_apart_merge(tmp_path: Path) -> None:
    gfiles, _, gd, _ = synthetic_captures(tmp_path, view=128)
    params = StitchParams(projection="equirectangular", wrap=True, nfeatures=600, bits=8, seams="voronoi", block=256)
    stitch_files(gfiles, tmp_path / "g.png", params, load_placements(gd / "rig.csv"))
    lay = layout_from_json(tmp_path / "g.png.layout.json")
    n = len(lay.layers)
    a = Layout(lay.canvas, lay.layers[: n // 2 + 1], lay.bands, lay.block)
    b = Layout(lay.canvas, lay.layers[n // 2 :], lay.bands, lay.block)
    merge_subpanoramas([a, b], tmp_path / "ab.png", feather=16)
    import cv2

    ab = cv2.imread(str(tmp_path / "ab.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
    ref, ref_a = render_region(lay, (0, 0, lay.canvas.width, lay.canvas.height))
    cov = (ab[..., 3] > 0.99) & (ref_a > 0.99)
    assert cov.mean() > 0.9 * (ref_a > 0.99).mean()  # the union of both halves
    mse = float(((ab[..., 2::-1][cov] - ref[cov]) ** 2).mean())
    assert 10 * math.log10(1 / mse) > 30  # the halves agree with one stitch of all
    with pytest.raises(ValueError, match="one canvas"):
        merge_subpanoramas([a, Layout(lay.canvas.scaled(0.5), b.layers, b.bands)], tmp_path / "x.png")


def test_stitch_command_with_sky(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from processing.__main__ import main

    gfiles, _, gd, sd = synthetic_captures(tmp_path, view=128)
    out = tmp_path / "o.png"
    # a bad sky folder fails at once, before the ground is stitched
    assert main(["stitch", str(gd), "-o", str(out), "--sky", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and err.count("\n") == 0 and not out.exists()
    argv = ["stitch", str(gd), "-o", str(out), "--projection", "equirectangular", "--sky", str(sd), "--json"]
    assert main([*argv, "--glob", "view_*.png"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["placed"] == len(gfiles) and summary["sky"]["placed"] == summary["sky"]["sky_images"]
    assert (tmp_path / "o.png.sky.json").is_file() and (tmp_path / "o.png.layout.json").is_file()


@pytest.mark.skipif(not MEADOW.is_file(), reason="shared data absent")
def test_meadow_sky_merge_against_truth(tmp_path: Path) -> None:
    from processing.bench.sky import meadow_case

    q = meadow_case(tmp_path, face=256, view=256, joint=False)
    assert q["sky_placed"] == q["sky_images"], q
    assert q["coverage_merged"] > q["coverage_ground"] + 0.3, q
    assert q["psnr_merged_db"] > 29.0 and q["psnr_filled_sky_db"] > 27.5, q
    # the overall level is a free choice; after one global gain the sky costs the ground nothing
    assert q["psnr_merged_db_global_gain"] > q["psnr_ground_db"] - 0.5, q
    assert q["seam_gradient_ratio"] < 0.85, q  # the transitions lie in smoother-than-average content
    assert q["sky_seam_px"] > 0 and q["sky_seam_on_structure"] < 0.02, q  # inside the sky: not on structure
