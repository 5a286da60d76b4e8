import math

import numpy as np

from processing.stitch.project import (
    Camera,
    Canvas,
    block_map,
    footprint,
    make_canvas,
    rays_to_canvas,
    rect_hits,
    rotation_from_ypr,
    ypr_from_rotation,
)


def test_ypr_roundtrip_and_directions():
    for ypr in [(10, 5, 3), (-170, -40, 1), (90, 80, -5)]:
        R = rotation_from_ypr(*ypr)
        assert np.allclose(ypr_from_rotation(R), ypr, atol=1e-9)
    z = rotation_from_ypr(30, 20, 0)[:, 2]
    assert math.isclose(math.degrees(math.atan2(z[0], z[2])), 30)
    assert z[1] < 0  # pitch up looks towards -y (world up)


def test_equirect_canvas_is_full_sphere_and_map_inverts():
    cam = Camera.make(200, 150, 180.0, rotation_from_ypr(175, 10, 2))
    cv = make_canvas([cam], "equirectangular")
    assert cv.width == 2 * cv.height
    assert math.isclose(cv.su * 2 * math.pi, cv.width)
    # forward-project the camera's centre and map it back
    c = cam.rot[:, 2]
    u, v = rays_to_canvas(c[None], cv)
    mx, my, valid = block_map(cam, cv, int(u[0]) - 1, int(v[0]) - 1, 3, 3)
    assert valid.all()
    assert abs(mx[1, 1] - 99.5) < 1.5 and abs(my[1, 1] - 74.5) < 1.5


def test_footprint_wraps_across_180():
    cam = Camera.make(200, 150, 180.0, rotation_from_ypr(179, 0, 0))
    cv = make_canvas([cam], "cylindrical", wrap=True)
    x0, y0, x1, y1 = footprint(cam, cv)
    assert x1 > cv.width > x0  # continues at the left edge
    assert rect_hits((x0, y0, x1, y1), (0, y0, 10, y1), cv)
    assert rect_hits((x0, y0, x1, y1), (cv.width - 10, y0, cv.width, y1), cv)
    assert not rect_hits((x0, y0, x1, y1), (cv.width // 4, y0, cv.width // 4 + 10, y1), cv)


def test_pole_camera_footprint_spans_width():
    cam = Camera.make(200, 200, 100.0, rotation_from_ypr(0, 90, 0))
    cv = make_canvas([cam], "equirectangular")
    x0, y0, x1, y1 = footprint(cam, cv)
    assert (x0, x1) == (0, cv.width) and y0 == 0


def test_canvas_scaled_keeps_angles():
    cv = Canvas("equirectangular", 400, 200, 400 / (2 * math.pi), 200 / math.pi, 199.5, 99.5, True)
    s = cv.scaled(0.5)
    assert (s.width, s.height) == (200, 100)
    assert math.isclose(s.u0, 99.5) and math.isclose(s.su * 2 * math.pi, 200)
