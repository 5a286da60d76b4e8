"""Camera response per lens (response.py), fitted jointly with exposure and
vignetting: recovery of a known S-shaped (filmic, not a power law) curve,
seams against the power-law-only model, the identity at the default curve,
the layout JSON field."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.stitch.blend import Layer, SourceCache, render_rect
from processing.stitch.exposure import _overlap, corrected, proxy_warp, solve_exposure
from processing.stitch.pipeline import Layout, layout_from_json, layout_to_json
from processing.stitch.project import Camera, footprint, make_canvas, rotation_from_ypr
from processing.stitch.response import DEFAULT_GAMMA, Response, encoded_lut
from tests.processing._stitch_helpers import texture

#: exposures (linear light) of the five views and their vignetting V = 1 - VIG r^2
EXPOSURES = (1.0, 2.2, 0.55, 1.6, 0.75)
VIG = 0.3


def _filmic(lin: np.ndarray, p: float = 1.6, a: float = 3.0) -> np.ndarray:
    """An S-shaped encoding (toe and shoulder): not a power law."""

    def h(t):
        return t**p / (t**p + 1)

    return h(a * np.maximum(lin, 0)) / h(a)


def _views(encode=_filmic, exposures=EXPOSURES, vig=VIG):
    """Views of a textured cylinder (linear radiance), exposed and vignetted
    in linear light, then encoded to 8 bits."""
    tex = texture(200, 1200, seed=5) ** 1.5 * 0.8  # linear radiance, dark and bright parts
    cams, thumbs = [], []
    for k, e in enumerate(exposures):
        cam = Camera.make(200, 150, 160.0, rotation_from_ypr(-60 + 30 * k, 0, 0))
        xx, yy = np.meshgrid((np.arange(200) - 99.5) / 160, (np.arange(150) - 74.5) / 160)
        v = np.stack([xx, yy, np.ones_like(xx)], -1) @ cam.rot.T
        lon = np.arctan2(v[..., 0], v[..., 2])
        t = v[..., 1] / np.hypot(v[..., 0], v[..., 2])
        img = cv2.remap(
            tex, ((lon / (2 * np.pi) + 0.5) * 1200).astype(np.float32), (t * 190 + 100).astype(np.float32), 1
        )
        r2 = ((np.arange(200)[None] - 99.5) ** 2 + (np.arange(150)[:, None] - 74.5) ** 2) / (100.0**2 + 75.0**2)
        lin = img * e * (1 - vig * r2)[:, :, None]
        cams.append(cam)
        thumbs.append(np.clip(encode(np.minimum(lin, 1.0)) * 255 + 0.5, 0, 255).astype(np.uint8))
    return cams, thumbs


def _seam_difference(warps, cv, gains, vigs, responses, output=None) -> float:
    """Mean |difference| of every overlap's corrected pixel pairs (neither
    clipped), relative to their mean level."""
    out = [
        None if w is None else corrected(w.img, w.r2, gains[k], vigs[k], responses[k] if responses else None, output)
        for k, w in enumerate(warps)
    ]
    num = den = 0.0
    for i in range(len(warps)):
        for j in range(i + 1, len(warps)):
            for sa, sb in _overlap(warps[i], warps[j], cv):
                ok = warps[i].valid[sa] & warps[j].valid[sb] & ~warps[i].clipped[sa] & ~warps[j].clipped[sb]
                ok &= (warps[i].img[sa].min(2) > 0.03) & (warps[j].img[sb].min(2) > 0.03)
                a, b = out[i][sa][ok], out[j][sb][ok]
                num += float(np.abs(a - b).sum())
                den += float(((a + b) / 2).sum())
    return num / den


def test_response_family_basics():
    r = Response()
    x = np.linspace(0, 1, 11)
    assert np.allclose(r.linear(x), x**DEFAULT_GAMMA)
    s = Response(1.5, (0.4, -0.3, 0.2))
    assert abs(float(s.linear(np.array([1.0]))[0]) - 1.0) < 1e-12 and float(s.linear(np.array([0.0]))[0]) == 0
    assert s.plausible() and np.all(np.diff(s.linear(np.linspace(0, 1, 101))) > 0)
    assert not Response(1.0, (0.0, 0.0, 5.0)).plausible()  # falls before rising: not monotone
    assert Response.from_list(s.to_list()) == s


@pytest.mark.parametrize(("p", "a", "tol"), [(1.4, 2.0, 0.03), (1.6, 3.0, 0.06)])
def test_filmic_response_recovered_and_seams_better_than_power_law(p, a, tol):
    cams, thumbs = _views(encode=lambda lin: _filmic(lin, p, a))
    cv = make_canvas(cams, "cylindrical", wrap=False)
    lens = [0] * len(cams)
    warps = [proxy_warp(t, c, cv) for t, c in zip(thumbs, cams, strict=True)]
    ex = solve_exposure(warps, cv, lens, True, response=True)
    assert ex.response_note == "fitted", ex.response_note
    fit = Response.from_list(ex.response[0])
    # the truth up to the exponential ambiguity (g^k fits as well as g):
    # raised to the power that puts it through the fitted curve at 0.5
    x = np.linspace(0.05, 0.95, 181)
    lin = np.linspace(0, 1, 200001)
    truth = np.interp(x, _filmic(lin, p, a), lin)
    k = np.log(fit.linear(np.array([0.5]))[0]) / np.log(np.interp(0.5, _filmic(lin, p, a), lin))
    err = np.abs(fit.linear(x) - truth**k).max()
    # the best power law through the same point
    err_pow = np.abs(x ** (np.log(fit.linear(np.array([0.5]))[0]) / np.log(0.5)) - truth**k).max()
    print(f"\nfilmic p={p} a={a}: response max error over [0.05, 0.95] {err:.4f} (power law {err_pow:.4f})")
    assert err < tol and err_pow > 3 * err
    # exposures: the fitted ev are the true linear ones (times k)
    ev_true = np.log(EXPOSURES) * k
    ev_true -= ev_true.mean()
    assert np.abs(-ex.ev - ev_true).max() < 0.08, (ex.ev, ev_true)
    # seams: the same warps corrected by each model
    old = solve_exposure(warps, cv, lens, True, response=False)
    d_new = _seam_difference(warps, cv, ex.gains(), ex.vignetting[lens], ex.responses(), tuple(ex.response[0]))
    d_old = _seam_difference(warps, cv, old.gains(), old.vignetting[lens], None)
    print(f"relative seam difference: response {d_new:.4f}, power law only {d_old:.4f}")
    assert d_new < 0.5 * d_old, (d_new, d_old)


def test_power_law_data_keeps_the_default_curve():
    """Gains on gamma-encoded values (what the power-law model assumes):
    the fit finds nothing better and keeps the default curve."""
    cams, thumbs = _views(encode=lambda lin: lin ** (1 / DEFAULT_GAMMA))
    cv = make_canvas(cams, "cylindrical", wrap=False)
    ex = solve_exposure(
        [proxy_warp(t, c, cv) for t, c in zip(thumbs, cams, strict=True)], cv, None, True, response=True
    )
    assert ex.response_note.startswith("default"), ex.response_note
    assert np.allclose(ex.response[0], [DEFAULT_GAMMA, 0, 0, 0])
    ev_true = np.log(EXPOSURES) - np.log(EXPOSURES).mean()
    assert np.abs(-ex.ev - ev_true).max() < 0.03, (ex.ev, ev_true)


def test_little_data_falls_back_to_the_default():
    cams, thumbs = _views(exposures=(1.0, 1.3))
    cv = make_canvas(cams, "cylindrical", wrap=False)
    small = [cv2.resize(t, (40, 30), interpolation=cv2.INTER_AREA) for t in thumbs]
    ex = solve_exposure(
        [proxy_warp(t, c, cv.scaled(0.2)) for t, c in zip(small, cams, strict=True)], cv.scaled(0.2), response=True
    )
    assert ex.response_note.startswith("default") and np.allclose(ex.response[0], [DEFAULT_GAMMA, 0, 0, 0])


def _one_view(tmp_path, img: np.ndarray):
    """IMG saved as a PNG seen by one straight-ahead camera on a rectilinear
    canvas: (path, camera, canvas, footprint, a rectangle inside it)."""
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), img[..., ::-1])
    cam = Camera.make(img.shape[1], img.shape[0], 500.0, rotation_from_ypr(0, 0, 0))
    canvas = make_canvas([cam], "rectilinear", wrap=False)
    fp = footprint(cam, canvas)
    return p, cam, canvas, fp, (fp[0] + 8, fp[1] + 8, fp[2] - 8, fp[3] - 8)


def test_default_response_at_gain_one_renders_the_input(tmp_path):
    """The response at its default, no gain, no vignetting: the LUT path
    gives back the source values where one image covers."""
    img = (np.random.default_rng(1).random((64, 80, 3)) * 255).astype(np.uint8)
    p, cam, canvas, fp, rect = _one_view(tmp_path, img)
    base = Layer(str(p), cam, fp)
    with_r = Layer(str(p), cam, fp, response=tuple(Response().to_list()))
    a, _ = render_rect([base], canvas, rect, SourceCache(), bands=0)
    b, _ = render_rect([with_r], canvas, rect, SourceCache(), bands=0)
    assert np.abs(a - b).max() < 1e-5
    # a linear gain G on the default curve is G^(1 / 2.2) on the encoded values
    lut = encoded_lut(tuple(Response().to_list()), (2.0, 1.0, 0.5), 255)
    assert np.allclose(lut[128], 128 / 255 * np.array([2.0, 1.0, 0.5]) ** (1 / DEFAULT_GAMMA), atol=1e-5)
    # a fitted curve that is also the output curve: gain 1 renders the input
    # (within the inverse table's interpolation), and vignetting (0, 0) too
    fitted = (1.4, -1.0, 0.8, -0.3)
    lay = Layer(str(p), cam, fp, response=fitted, output=fitted)
    c, _ = render_rect([lay], canvas, rect, SourceCache(), bands=0)
    assert np.abs(c - a).max() < 2e-3
    assert np.abs(encoded_lut(fitted, (1.0, 1.0, 1.0), 255, fitted)[:, 0] - np.arange(256) / 255).max() < 2e-3


def test_layout_json_round_trip_and_old_layouts(tmp_path):
    cam = Camera.make(80, 64, 500.0, rotation_from_ypr(0, 0, 0))
    canvas = make_canvas([cam], "rectilinear", wrap=False)
    r = (1.8, 0.1, -0.05, 0.02)
    lay = Layout(canvas, [Layer("a.png", cam, footprint(cam, canvas), (1.2, 1.0, 0.9), (0.0, 0.0), 1.0, r)], 3)
    p = layout_to_json(lay, tmp_path / "l.json")
    back = layout_from_json(p)
    assert back.layers[0].response == r and back.layers[0].gain == (1.2, 1.0, 0.9)
    # a layout written before the response model: no field, gains on the encoded values
    d = json.loads(p.read_text())
    del d["images"][0]["response"], d["exposure"]
    p.write_text(json.dumps(d))
    old = layout_from_json(p)
    assert old.layers[0].response == () and old.exposure == {}


def test_equal_exposures_keep_the_default_curve():
    """Every view at one exposure, no vignetting: any curve fits, so the default stays."""
    cams, thumbs = _views(exposures=(1.0,) * 5, vig=0.0)
    cv = make_canvas(cams, "cylindrical", wrap=False)
    ex = solve_exposure([proxy_warp(t, c, cv) for t, c in zip(thumbs, cams, strict=True)], cv, response=True)
    assert ex.response_note.startswith("default: exposure spread"), ex.response_note
    assert np.abs(ex.gains() - 1).max() < 0.01


@pytest.mark.parametrize("output", [(), (1.4, -1.0, 0.8, -0.3)])
def test_render_applies_gain_and_vignetting_in_linear_light(tmp_path, output):
    """The renderer's tables (and its vignetting factor through a power-law
    output curve) equal the model: encode(g(x) gain / V(r)) per pixel."""
    from processing.stitch.project import block_map

    img = (np.random.default_rng(2).random((64, 80, 3)) * 200 + 20).astype(np.uint8)
    p, cam, canvas, fp, rect = _one_view(tmp_path, img)
    x, _ = render_rect([Layer(str(p), cam, fp)], canvas, rect, SourceCache(), bands=0)
    resp, gain, vig = (1.8, -0.5, 0.3, -0.1), (1.5, 1.0, 0.7), (-0.3, 0.05)
    lay = Layer(str(p), cam, fp, gain, vig, 0.0, resp, output)
    got, _ = render_rect([lay], canvas, rect, SourceCache(), bands=0)
    mx, my, _ = block_map(cam, canvas, rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1])
    r2 = ((mx - cam.center[0]) ** 2 + (my - cam.center[1]) ** 2) / (40.0**2 + 32.0**2)
    want = np.clip(corrected(x, r2, np.asarray(gain), vig, Response.from_list(resp), output or None), 0, 1)
    assert np.abs(got - want).max() < 3e-3


def test_cli_switch_and_pipeline_layout(tmp_path):
    """--no-response reaches StitchParams; a stitch of the filmic views saves
    the fitted curves in its layout, one without the model saves none."""
    import argparse

    from processing.commands.stitch import add_arguments
    from processing.io.imageio import write_image
    from processing.stitch.pipeline import StitchParams, stitch_files
    from processing.stitch.registration import Placement

    ap = argparse.ArgumentParser()
    add_arguments(ap)
    assert ap.parse_args(["d", "-o", "o.tif"]).response is True
    assert ap.parse_args(["d", "-o", "o.tif", "--no-response"]).response is False

    cams, thumbs = _views(encode=lambda lin: _filmic(lin, 1.4, 2.0))
    paths, pl = [], {}
    for k, t in enumerate(thumbs):
        paths.append(tmp_path / f"v{k}.png")
        write_image(paths[-1], t.astype(np.float32) / 255)
        pl[paths[-1].name] = Placement(-60 + 30 * k, 0.0, 0.0, 160.0)
    for on in (True, False):
        params = StitchParams(projection="cylindrical", wrap=False, response=on, lens_k1=False)
        res = stitch_files(paths, tmp_path / f"o{on}.png", params, pl)
        assert res.placed == 5
        d = json.loads(Path(res.layout_path).read_text())
        if on:
            assert d["exposure"]["response"] == "fitted", d["exposure"]
            from processing.bench.response_seams import measure

            m = measure(Path(res.layout_path))
            # (no vignetting model here: the views' 0.3 stays in both)
            assert m["response"]["relative_mean_diff"] < 0.7 * m["power_law"]["relative_mean_diff"], m
            assert len(d["images"][0]["response"]) == 4 and d["images"][0]["output_response"]
            assert layout_from_json(res.layout_path).layers[0].response == tuple(d["images"][0]["response"])
        else:
            assert "response" not in d["images"][0]
