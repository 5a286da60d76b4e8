"""Every projection round-trips points; partial panoramas get a canvas fitted
to their content (not padded to 360 x 180) and an auto-crop that is filled."""

import math

import numpy as np
import pytest

from processing.stitch.project import (
    PROJECTIONS,
    Camera,
    autocrop,
    block_map,
    canvas_to_rays,
    coverage_mask,
    covers_360,
    largest_filled_rectangle,
    make_canvas,
    rays_to_canvas,
    rotation_from_ypr,
)


def _partial_cams(pitch: float = 10.0) -> list[Camera]:
    return [Camera.make(1000, 666, 900.0, rotation_from_ypr(y, pitch + p, 0)) for y in (-30, 0, 30) for p in (0, 25)]


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_projection_round_trips_points(projection):
    cams = _partial_cams()
    cv = make_canvas(cams, projection, wrap=False)
    rng = np.random.default_rng(1)
    u = rng.uniform(0, cv.width - 1, 2000)
    v = rng.uniform(0, cv.height - 1, 2000)
    rays, ok = canvas_to_rays(u, v, cv)
    assert ok.mean() > 0.5
    u2, v2 = rays_to_canvas(rays[ok], cv)
    err = np.hypot(u2 - u[ok], v2 - v[ok])
    assert err.max() < 0.01, (projection, err.max())
    # and from the sphere: rays of the cameras' pixels -> canvas -> rays
    r = np.stack([c.rot[:, 2] for c in cams])
    uc, vc = rays_to_canvas(r, cv)
    back, ok2 = canvas_to_rays(uc, vc, cv)
    assert ok2.all() and np.abs(back - r).max() < 1e-9


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_block_map_agrees_with_the_forward_projection(projection):
    cams = _partial_cams()
    cv = make_canvas(cams, projection, wrap=False, max_pixels=0.3e6)
    cam = cams[2]
    mx, my, valid = block_map(cam, cv, 0, 0, cv.width, cv.height)
    # inside by a pixel: within half a pixel of the border the map is clamped
    valid &= (mx > 1) & (mx < cam.width - 2) & (my > 1) & (my < cam.height - 2)
    ys, xs = np.nonzero(valid)
    sel = np.random.default_rng(0).choice(len(xs), 200, replace=False)
    # the source pixel's ray lands on the output pixel it was sampled for
    cx, cy = cam.center
    v = np.stack([(mx[ys[sel], xs[sel]] - cx) / cam.focal, (my[ys[sel], xs[sel]] - cy) / cam.focal, np.ones(200)], -1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    u2, v2 = rays_to_canvas(v @ cam.rot.T, cv)
    assert np.hypot(u2 - xs[sel], v2 - ys[sel]).max() < 0.01


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_partial_canvas_fits_the_covered_area(projection):
    cams = [Camera.make(1000, 666, 1100.0, rotation_from_ypr(y, 5, 0)) for y in (-20, 15)]
    cv = make_canvas(cams, projection, wrap=False)
    cov = coverage_mask(cams, cv)
    ys, xs = np.nonzero(cov)
    bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert cv.width <= 1.1 * bw and cv.height <= 1.1 * bh, (projection, cv.width, cv.height, bw, bh)
    # two 1000 x 666 photos: nowhere near a 360 x 180 canvas
    assert cv.width * cv.height < 4 * 1000 * 666


def test_equirectangular_partial_is_not_padded_but_a_full_sphere_is():
    two = [Camera.make(1000, 666, 1100.0, rotation_from_ypr(y, 0, 0)) for y in (0, 40)]
    assert not covers_360(two)
    ring = [Camera.make(1000, 666, 800.0, rotation_from_ypr(y, 0, 0)) for y in range(0, 360, 45)]
    assert covers_360(ring)
    # a ring that does not quite close (one view missing) is still a 360 panorama
    assert covers_360(ring[:3] + ring[4:])
    assert not covers_360(ring[:5])
    full = make_canvas(ring, "equirectangular", wrap=True)
    assert full.width == 2 * full.height
    padded = make_canvas(two, "equirectangular", wrap=True)  # what issue 17 found: 360 x 180
    part = make_canvas(two, "equirectangular", wrap=False)
    assert part.width < padded.width / 3 and part.height < padded.height / 2


def test_largest_filled_rectangle():
    m = np.zeros((40, 60), bool)
    m[5:30, 10:50] = True
    m[12, 20] = False
    x0, y0, x1, y1 = largest_filled_rectangle(m)
    assert m[y0:y1, x0:x1].all()
    assert (x1 - x0) * (y1 - y0) == 29 * 25  # columns 21-49, rows 5-29
    rng = np.random.default_rng(3)
    for _ in range(5):  # against brute force on small random masks
        m = rng.random((9, 11)) < 0.8
        x0, y0, x1, y1 = largest_filled_rectangle(m)
        best = max(
            (b - a) * (d - c)
            for a in range(9)
            for b in range(a + 1, 10)
            for c in range(11)
            for d in range(c + 1, 12)
            if m[a:b, c:d].all()
        )
        assert m[y0:y1, x0:x1].all() and (x1 - x0) * (y1 - y0) == best


@pytest.mark.parametrize("projection", ["cylindrical", "equirectangular", "rectilinear"])
def test_autocrop_is_filled(projection):
    cams = _partial_cams()
    cv = make_canvas(cams, projection, wrap=False, max_pixels=1e6)
    cut = autocrop(cams, cv)
    assert cut.width < cv.width or cut.height < cv.height
    cov = coverage_mask(cams, cut)
    assert cov.mean() > 0.999, cov.mean()
    assert cut.width * cut.height > 0.4 * cv.width * cv.height
    # the same rays land on the same scene point (only the origin moved)
    r, _ = canvas_to_rays(np.array([10.0]), np.array([10.0]), cut)
    u, v = rays_to_canvas(r, cv)
    assert math.isclose(u[0] - (cv.u0 - cut.u0), 10.0, abs_tol=1e-6)
    assert math.isclose(v[0] - (cv.v0 - cut.v0), 10.0, abs_tol=1e-6)
