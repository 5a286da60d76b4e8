"""The focal of images with neither prior nor EXIF (issue 17, docs/stitch.md:
weir's 17241 px for 1333-px-wide images)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processing.stitch.project import rotation_from_ypr
from processing.stitch.registration import (
    Features,
    PairMatch,
    _Adjusted,
    _guard_estimated_focals,
    detect,
    focal_from_homography_pairs,
    proxy_gray,
    register,
)
from processing.synth.synth_pano import make_cylinder_views
from tests.processing._stitch_helpers import SHARED, texture

W, H = 1200, 800


def _feats() -> Features:
    return Features(W, H, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))


def _homography(f: float, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Pixel homography from image a to image b of a camera turning about its centre."""
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    return K @ rb.T @ ra @ np.linalg.inv(K)


def _pair(i: int, j: int, Hm: np.ndarray) -> PairMatch:
    return PairMatch(i, j, np.zeros((0, 2)), np.zeros((0, 2)), 100, 100, 3.0, Hm / Hm[2, 2])


def test_focal_from_homographies_when_they_constrain_it():
    """Pans and tilts of 20 degrees at f = 1000 px: the estimate is within 2 %."""
    f = 1000.0
    R = [rotation_from_ypr(y, p, 0.0) for y, p in ((0, 0), (20, 0), (0, 15), (20, 15))]
    pairs = [_pair(i, j, _homography(f, R[i], R[j])) for i, j in ((0, 1), (0, 2), (1, 3), (2, 3), (0, 3))]
    fe = focal_from_homography_pairs([_feats()] * 4, pairs, 50.0)
    assert fe.source == "homographies" and fe.pairs >= 3, fe
    assert abs(fe.rel * W / f - 1) < 0.02, fe.rel * W


def test_near_affine_homographies_fall_back_to_the_default_field_of_view():
    """Translations with a little noise in the perspective terms (a long lens,
    a flat strip): the two images' estimates disagree or scatter, so the
    focal is pto_gen's 50-degree guess, and says so."""
    rng = np.random.default_rng(0)
    pairs = []
    for k in range(4):
        Hm = np.array([[1.0, 0, -600.0 + 20 * k], [0, 1.0, 5.0 * k], [0, 0, 1.0]])
        Hm[:2, :2] += rng.normal(0, 2e-3, (2, 2))
        Hm[2, :2] = rng.normal(0, 2e-6, 2)
        pairs.append(_pair(k, k + 1, Hm))
    fe = focal_from_homography_pairs([_feats()] * 5, pairs, 50.0)
    assert fe.source == "default", fe
    assert fe.rel == pytest.approx(1 / (2 * math.tan(math.radians(25.0))))


def _adjusted(focals: dict[int, float]) -> _Adjusted:
    return _Adjusted([], {}, focals, {}, 0.0)


def test_runaway_focal_gets_one_focal_per_image_then_is_held():
    prior = {0: 2700.0, 1: 2700.0, 2: 2700.0}
    calls = []

    def adjust(groups, weight, ok_split=True):
        calls.append((groups, weight))
        if weight > 100:
            return _adjusted(dict(prior))
        return _adjusted({0: 2600.0, 1: 2980.0, 2: 2970.0} if ok_split else {0: 9000.0, 1: 2700.0, 2: 2700.0})

    ran_away = _adjusted({0: 17000.0, 1: 17000.0, 2: 17000.0})
    groups = dict.fromkeys(prior, 0)
    adj, how = _guard_estimated_focals(adjust, ran_away, [0, 1, 2], prior, groups)
    assert how == "one focal per image" and adj.focals[1] == 2980.0
    assert calls[0] == ({}, 30.0)  # every estimated image its own lens
    calls.clear()
    adj, how = _guard_estimated_focals(lambda g, w: adjust(g, w, False), ran_away, [0, 1, 2], prior, groups)
    assert how == "held" and adj.focals == prior and calls[-1] == (groups, 1e4)
    calls.clear()
    fine = _adjusted({0: 3900.0, 1: 3900.0, 2: 3900.0})  # budapest: 1.95 x its estimate, kept
    adj, how = _guard_estimated_focals(adjust, fine, [0, 1, 2], {k: 2000.0 for k in prior}, groups)
    assert adj is fine and how == "" and not calls


def test_synthetic_views_recover_their_focal_from_the_homographies():
    photo = texture(220, 1400, seed=5)
    views, _yaws, f = make_cylinder_views(photo, n_views=8, overlap=0.4)
    feats = []
    for v in views:
        g, s = proxy_gray(v, 1.0)
        feats.append(detect(g, s, v.shape[1], v.shape[0], 800))
    reg = register(feats, [f"v{k}.png" for k in range(8)])
    assert reg.focal_source.startswith("homographies"), reg.focal_source
    assert all(abs(c.focal / f - 1) < 0.03 for c in reg.cameras.values())


@pytest.mark.slow
def test_weir_focal_is_plausible():
    """weir (3 images, no EXIF): the shared focal ran from the homographies'
    2668 px to 17241 px (a 4.4-degree field of view for 1333 px), because
    weir_1 is at 1.15 x the scale of the others and a longer focal fits
    that better; with one focal per image each is 2600-3000 px."""
    d = SHARED / "panoramas" / "weir"
    if not d.is_dir():
        pytest.skip("shared data absent")
    import tempfile
    from pathlib import Path

    from processing.stitch.pipeline import StitchParams, list_images, stitch_files

    with tempfile.TemporaryDirectory() as tmp:
        params = StitchParams(projection="cylindrical", allow_partial=True)
        res = stitch_files(list_images(d), Path(tmp) / "w.tif", params, render=False)
    foc = {c["file"]: c["focal"] for c in res.cameras}
    assert {"weir_1.jpg", "weir_2.jpg", "weir_3.jpg"} <= set(foc)
    for name in ("weir_1.jpg", "weir_2.jpg", "weir_3.jpg"):
        hfov = 2 * math.degrees(math.atan(1333 / 2 / foc[name]))
        assert 15 < hfov < 60, (name, foc[name])
    assert "one focal per image" in res.focal_source, res.focal_source
    assert res.rms_px < 2.0, res.rms_px  # pixels at the adjusted focals
