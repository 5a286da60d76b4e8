"""Stitching at scale: neighbour pairs from priors, sparse bundle adjustment
of a few hundred images, O(n) exposure pairs (issue 5's many-tile target)."""

import math

import numpy as np
from scipy.spatial.transform import Rotation

from processing.stitch.exposure import overlap_pairs, solve_gains
from processing.stitch.project import Camera, Canvas, rotation_from_ypr
from processing.stitch.registration import Features, PairMatch, bundle_adjust, candidate_pairs, predicted_overlap

TILE, HFOV = 256, 8.0
FOCAL = TILE / 2 / math.tan(math.radians(HFOV / 2))
STEP = HFOV * 0.7  # 30 % overlap, as in the big bench


def _grid(n_yaw: int, n_pitch: int, yaw_step: float = STEP) -> tuple[dict[int, Camera], dict[int, tuple[int, int]]]:
    cams, where = {}, {}
    for i in range(n_pitch):
        for j in range(n_yaw):
            k = i * n_yaw + j
            pitch = (i - (n_pitch - 1) / 2) * STEP
            cams[k] = Camera.make(TILE, TILE, FOCAL, rotation_from_ypr(j * yaw_step, pitch, 0.0))
            where[k] = (i, j)
    return cams, where


def test_neighbour_pairs_from_priors_are_the_overlapping_ones():
    cams, where = _grid(12, 5)  # 67 degrees of yaw: no wrap-around neighbours
    pairs = candidate_pairs(len(cams), cams)
    # exactly the 8-neighbourhood: side by side, above / below and diagonal
    expect = {
        (a, b)
        for a in cams
        for b in cams
        if a < b and max(abs(where[a][0] - where[b][0]), abs(where[a][1] - where[b][1])) == 1
    }
    assert set(pairs) == expect
    # and it agrees with the overlap test applied to all pairs
    brute = {(a, b) for a in cams for b in cams if a < b and predicted_overlap(cams[a], cams[b], 2.0) > 0}
    assert set(pairs) == brute
    # an image without a prior is paired with everything
    part = {k: c for k, c in cams.items() if k != 7}
    p2 = candidate_pairs(len(cams), part)
    assert {p for p in p2 if 7 in p} == {(min(7, k), max(7, k)) for k in cams if k != 7}


def test_neighbour_pairs_scale_linearly():
    counts = []
    for n_yaw in (15, 60):  # 60 x 5.6 degrees: no wrap-around
        cams, _ = _grid(n_yaw, 6)
        counts.append(len(candidate_pairs(len(cams), cams)))
    # 4x the images: 4x the pairs (at most 4 new pairs per image), not 16x (no timing here:
    # the machine is shared; the pair counts are what scales)
    assert counts[1] <= 4.3 * counts[0] and counts[1] <= 4 * 60 * 6
    # crowded views (near a pole): each image keeps its largest overlaps
    crowd = {k: Camera.make(TILE, TILE, FOCAL, rotation_from_ypr(k * 0.5, 80.0, 0.0)) for k in range(60)}
    deg = np.bincount(np.array(candidate_pairs(60, crowd, max_neighbours=6)).ravel(), minlength=60)
    assert deg.max() <= 2 * 6 + 2 and deg.min() >= 2


def _synthetic_pairs(cams: dict[int, Camera], pairs, rng, n_pts=40, noise=0.3) -> list[PairMatch]:
    """Matches from directions seen by both true cameras (pixel noise in px)."""
    out = []
    for a, b in pairs:
        ca, cb = cams[a], cams[b]
        d = ca.rot[:, 2] + cb.rot[:, 2]
        d /= np.linalg.norm(d)
        # directions scattered around the mid-direction, kept where both see them
        v = d[None, :] + rng.normal(0, math.radians(HFOV) / 3, (n_pts * 4, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        pts = []
        for c in (ca, cb):
            q = v @ c.rot  # camera coordinates (rows)
            pts.append(q[:, :2] / q[:, 2:] * c.focal + (TILE - 1) / 2)
        inside = np.ones(len(v), bool)
        for p in pts:
            inside &= (p >= 0).all(1) & (p <= TILE - 1).all(1)
        pa, pb = (p[inside][:n_pts] + rng.normal(0, noise, (min(n_pts, inside.sum()), 2)) for p in pts)
        if len(pa) >= 8:
            out.append(PairMatch(a, b, pa, pb, len(pa), len(pa), 1.0, np.eye(3)))
    return out


def test_sparse_bundle_adjustment_converges_on_a_grid_of_hundreds():
    rng = np.random.default_rng(1)
    # 320 images on a closed 360-degree ring (an open strip of narrow views
    # leaves the focal, hence the angular scale, nearly undetermined)
    cams, _ = _grid(64, 5, 360 / 64)
    n = len(cams)
    pairs = _synthetic_pairs(cams, candidate_pairs(n, cams), rng)
    feats = [Features(TILE, TILE, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)) for _ in range(n)]
    # priors off by about a degree (random axis), focal 2 % off
    noisy = {
        k: Rotation.from_rotvec(rng.normal(0, math.radians(1.0) / math.sqrt(3), 3)).as_matrix() @ c.rot
        for k, c in cams.items()
    }
    root = 0
    noisy[root] = cams[root].rot  # the gauge: one camera fixed
    rots, focals, pair_rms, _ = bundle_adjust(
        list(range(n)), pairs, feats, noisy, {k: FOCAL * 1.02 for k in range(n)}, root, groups={k: 0 for k in range(n)}
    )

    def misalignment_px(R: dict[int, np.ndarray]) -> np.ndarray:
        # where the image corners land, solved vs true cameras (px at the focal)
        c = (TILE - 1) / 2 / FOCAL
        corners = np.array([[-c, -c, 1], [c, -c, 1], [c, c, 1], [-c, c, 1]])
        corners /= np.linalg.norm(corners, axis=1, keepdims=True)
        return np.array(
            [np.linalg.norm(corners @ R[k].T - corners @ cams[k].rot.T, axis=1).max() * FOCAL for k in range(n)]
        )

    err, before = misalignment_px(rots), misalignment_px(noisy)
    assert np.median(before) > 15
    assert err.max() < 1.0 and np.median(err) < 0.3, (err.max(), np.median(err))
    assert abs(focals[5] / FOCAL - 1) < 0.002
    assert np.median(list(pair_rms.values())) < 1.0


def test_overlap_pairs_match_all_pairs_test_with_wrap():
    rng = np.random.default_rng(2)
    cv = Canvas("cylindrical", 1000, 300, 1000 / (2 * math.pi), 150.0, 499.5, 150.0, True)
    rects = []
    for _ in range(150):
        x0, y0 = int(rng.integers(0, 1000)), int(rng.integers(0, 280))
        rects.append((x0, y0, x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(10, 60))))
    rects.append((0, 0, 1000, 40))  # a polar cap: full width
    rects.append(None)
    got = overlap_pairs(rects, cv)

    def meets(a, b):
        return min(a[3], b[3]) > max(a[1], b[1]) and any(
            min(a[2], b[2] + s) > max(a[0], b[0] + s) for s in (-1000, 0, 1000)
        )

    brute = [(i, j) for i in range(151) for j in range(i + 1, 151) if meets(rects[i], rects[j])]
    assert got == brute


def test_sparse_gains_equal_dense():
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(3)
    n = 30
    N = np.zeros((n, n))
    for i in range(n - 1):  # a chain of overlaps
        N[i, i + 1] = N[i + 1, i] = rng.integers(50, 500)
    Im = rng.uniform(0.2, 0.8, (n, n, 3)) * (N[:, :, None] > 0)
    dense = solve_gains(N, Im)
    sparse = solve_gains(csr_matrix(N), [csr_matrix(Im[:, :, c]) for c in range(3)])
    assert np.allclose(dense, sparse, atol=1e-9)


def test_load_image_int_keeps_8_bit_sources_small(tmp_path):
    from processing.io.imageio import load_image, load_image_int, write_image
    from tests.processing._stitch_helpers import texture

    img = texture(40, 64, seed=4)
    write_image(tmp_path / "a.jpg", img)
    a8, info = load_image_int(tmp_path / "a.jpg")
    assert a8.dtype == np.uint8 and a8.shape == (40, 64, 3) and info.kind == "jpeg"
    f, _ = load_image(tmp_path / "a.jpg")
    assert np.abs(a8 / 255.0 - f).max() < 1e-6
    import tifffile

    tifffile.imwrite(tmp_path / "b.tif", (img * 65535).astype(np.uint16))
    a16, _ = load_image_int(tmp_path / "b.tif")
    assert a16.dtype == np.uint16 and a16.shape == (40, 64, 3)


def test_render_with_preselected_layers_equals_all(tmp_path):
    from processing.io.imageio import write_image
    from processing.stitch.blend import Layer, SourceCache, render_rect
    from processing.stitch.project import footprint, make_canvas
    from tests.processing._stitch_helpers import texture

    cams = [Camera.make(160, 120, 150.0, rotation_from_ypr(y, p, 0)) for y in (0, 40, 80) for p in (-25, 25)]
    cv = make_canvas(cams, "cylindrical", wrap=True)
    layers = []
    for k, c in enumerate(cams):
        write_image(tmp_path / f"{k}.png", texture(120, 160, seed=k))
        layers.append(Layer(str(tmp_path / f"{k}.png"), c, footprint(c, cv)))
    cache = SourceCache()
    rect = (cv.width // 2 - 40, 0, cv.width // 2 + 200, 60)  # meets the upper views only
    full, a_full = render_rect(layers, cv, rect, cache, 3)
    top = [k for k, L in enumerate(layers) if L.footprint[1] < rect[3] + 24]  # + the 3-band margin
    assert len(top) < len(layers)
    part, a_part = render_rect(layers, cv, rect, cache, 3, only=top)
    assert a_full.mean() > 0.3 and np.array_equal(a_full, a_part)
    assert np.abs(full - part).max() < 1e-6


def test_render_region_preselects_layers_per_block_row(tmp_path):
    """render_region only looks at layers whose footprint (plus the blend
    margin) meets a block row, and renders what looking at all of them does."""
    from processing.io.imageio import write_image
    from processing.stitch.blend import Layer, SourceCache, render_rect
    from processing.stitch.pipeline import Layout, layers_meeting_rows, render_region
    from processing.stitch.project import footprint, make_canvas
    from tests.processing._stitch_helpers import texture

    cams = [Camera.make(160, 120, 150.0, rotation_from_ypr(y, p, 0)) for y in (0, 40, 80) for p in (-30, 30)]
    cv = make_canvas(cams, "cylindrical", wrap=True)
    layers = []
    for k, c in enumerate(cams):
        write_image(tmp_path / f"{k}.png", texture(120, 160, seed=k))
        layers.append(Layer(str(tmp_path / f"{k}.png"), c, footprint(c, cv)))
    lay = Layout(cv, layers, 3, 64)
    top = layers_meeting_rows(lay, 0, 32)
    assert 0 < len(top) < len(layers)
    assert all(layers[k].footprint[1] < 32 + 24 for k in top)  # the 3-band margin is 24 px
    assert layers_meeting_rows(lay, 0, cv.height) == list(range(len(layers)))
    rect = (cv.width // 2 - 100, 0, cv.width // 2 + 100, cv.height)
    rgb, alpha = render_region(lay, rect, SourceCache())
    cache = SourceCache()
    B = lay.block
    for by in range(0, cv.height, B):
        for bx in range(rect[0], rect[2], B):
            r = (bx, by, min(bx + B, rect[2]), min(by + B, cv.height))
            c, a = render_rect(layers, cv, r, cache, 3)  # every layer
            sl = (slice(by, r[3]), slice(bx - rect[0], r[2] - rect[0]))
            assert np.array_equal(alpha[sl], a) and np.abs(rgb[sl] - c).max() < 1e-6
    assert alpha.mean() > 0.3


def test_big_bench_geometry_reaches_the_requested_area():
    """The big set's rig gives at least the requested gigapixels of cylinder
    (2 pi f x 2 t f), also past the +-63 degree cap where the focal length
    grows instead of the height, and tiles overlap in yaw and pitch."""
    from processing.bench.stitch import BIG_MAX_TAN, big_geometry

    for gp in (0.05, 1.0, 3.0, 10.0):
        f, hfov, n_yaw, n_pitch = big_geometry(gp)
        t = min(BIG_MAX_TAN, gp * 1e9 / (4 * math.pi * f * f))
        area = 2 * math.pi * f * 2 * t * f
        assert area >= 0.999 * gp * 1e9
        assert n_yaw * hfov > 360 and n_pitch % 2 == 1
        top_edge = (n_pitch - 1) / 2 * hfov * 0.7 + hfov / 2
        assert top_edge >= math.degrees(math.atan(t))  # the rows cover the height
    assert big_geometry(3.0)[1] < 8.0 == big_geometry(1.0)[1]  # 3 GP: narrower tiles


def test_bench_child_takes_code_longer_than_one_argument():
    """The bench child gets its code on stdin: 3,360 tile paths are more than
    the 128 KiB one command-line argument may hold on Linux."""
    from processing.bench.stitch import run_child

    names = [f"/tmp/big/tile_{i:05d}.jpg" for i in range(8000)]
    code = f"names = {names!r}\nprint('RESULT', '{{\"n\": ' + str(len(names)) + '}}')\n"
    assert len(code) > 128 * 1024
    got, secs, peak_mb = run_child(code)
    assert got == {"n": 8000} and secs > 0 and peak_mb > 0
