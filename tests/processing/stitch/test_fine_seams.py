"""Full-resolution seams (fine_seams.py): a thin bar near a coarse proxy seam."""

import json

import numpy as np
import pytest

from processing.io.imageio import write_image
from processing.stitch.blend import Layer, SourceCache, render_rect
from processing.stitch.fine_seams import dp_cut_wide, fine_seams
from processing.stitch.pipeline import Layout, layout_from_json, layout_to_json, render_region
from processing.stitch.project import Camera, footprint, make_canvas, rotation_from_ypr
from processing.stitch.seam_patches import FineSeams
from tests.processing._stitch_helpers import texture

SCALE = 6  # output px per proxy px


def _bar_layout(tmp_path, bands=0, block=64):
    """Two views with the same camera, identical but for a thin dark bar only
    image 0 shows; proxy labels (1/SCALE) whose seam zigzags across the bar
    in proxy-sized blocks."""
    w, h = 240, 180
    a = texture(h, w, seed=3)
    b = a.copy()
    a[:, 118:121] = (0.05, 0.05, 0.4)
    write_image(tmp_path / "a.png", a)
    write_image(tmp_path / "b.png", b)
    cam = Camera.make(w, h, 200.0, rotation_from_ypr(0, 0, 0))
    cv = make_canvas([cam], "cylindrical", wrap=False)
    layers = [Layer(str(tmp_path / n), cam, footprint(cam, cv)) for n in ("a.png", "b.png")]
    # the bar's canvas columns: where the two images differ
    cache = SourceCache()
    lay = Layout(cv, layers, bands, block)
    only_a, _ = render_rect(layers, cv, (0, 0, cv.width, cv.height), cache, 0, np.zeros((1, 1), np.int16))
    only_b, _ = render_rect(layers, cv, (0, 0, cv.width, cv.height), cache, 0, np.ones((1, 1), np.int16))
    bar = np.abs(only_a - only_b).max(2) > 0.1
    cols = np.flatnonzero(bar.any(0))
    Hp, Wp = -(-cv.height // SCALE), -(-cv.width // SCALE)
    xb = round(float(cols.mean()) * Wp / cv.width)
    lab = np.zeros((Hp, Wp), np.int16)
    for r in range(Hp):
        lab[r, xb + (1 if (r // 2) % 2 else -1) :] = 1  # the seam steps across the bar every 2 proxy rows
    lay.labels = lab
    return lay, bar, only_a, only_b


def _bar_owners(rgb, bar, only_a, only_b):
    """Per row crossing the bar: the share of its bar pixels taken from image 0."""
    rows = np.flatnonzero(bar.sum(1) >= 2)
    share = []
    for r in rows:
        m = bar[r]
        da = np.abs(rgb[r, m] - only_a[r, m]).max(1)
        db = np.abs(rgb[r, m] - only_b[r, m]).max(1)
        share.append(float((da < db).mean()))
    return np.array(share)


def test_fine_seams_keep_a_thin_bar_whole(tmp_path):
    lay, bar, only_a, only_b = _bar_layout(tmp_path)
    cache = SourceCache()
    W, H = lay.canvas.width, lay.canvas.height
    proxy, _ = render_region(lay, (0, 0, W, H), cache)
    coarse = _bar_owners(proxy, bar, only_a, only_b)
    # the proxy seam cuts the bar in blocks: some rows from image 0, some from 1
    assert (coarse > 0.5).any() and (coarse < 0.5).any()
    lay.fine = fine_seams(lay.layers, lay.canvas, lay.labels, cache)
    assert lay.fine is not None and lay.fine.patches
    fine, _ = render_region(lay, (0, 0, W, H), cache)
    share = _bar_owners(fine, bar, only_a, only_b)
    # one source for the whole bar: never cut
    assert (share == 1.0).all() or (share == 0.0).all()
    # away from the band (2 proxy px around the proxy seam) the proxy render is kept
    xb = np.flatnonzero(bar.any(0)).mean()
    far = np.abs(np.arange(W) - xb) > 5 * SCALE
    assert np.array_equal(fine[:, far], proxy[:, far])


def test_fine_seams_blocks_equal_whole_and_round_trip(tmp_path):
    lay, bar, *_ = _bar_layout(tmp_path, bands=3, block=64)
    cache = SourceCache()
    lay.fine = fine_seams(lay.layers, lay.canvas, lay.labels, cache)
    W, H = lay.canvas.width, lay.canvas.height
    whole, aw = render_rect(lay.layers, lay.canvas, (0, 0, W, H), cache, lay.bands, lay.labels, fine=lay.fine)
    blocks, ab = render_region(lay, (0, 0, W, H), cache)  # 64 px blocks
    assert np.array_equal(aw, ab)
    assert np.abs(whole - blocks).max() < 2e-3
    # odd sub-rectangles through the band
    xb = int(np.flatnonzero(bar.any(0)).mean())
    for r in [(xb - 37, 5, xb + 3, 71), (xb - 2, 40, xb + 61, H - 3)]:
        part, _ = render_rect(lay.layers, lay.canvas, r, cache, lay.bands, lay.labels, fine=lay.fine)
        assert np.abs(part - whole[r[1] : r[3], r[0] : r[2]]).max() < 2e-3
    # the layout round trip keeps the overrides (and renders the same)
    p = layout_to_json(lay, tmp_path / "pano.tif.layout.json")
    assert (tmp_path / "pano.tif.layout.json.seams_fine.npz").is_file()
    back = layout_from_json(p)
    assert back.fine is not None and len(back.fine.patches) == len(lay.fine.patches)
    for p0, p1 in zip(lay.fine.patches, back.fine.patches, strict=True):
        assert p0.rect == p1.rect and (p0.i, p0.j) == (p1.i, p1.j)
        assert np.array_equal(p0.upd, p1.upd) and np.array_equal(p0.is_i, p1.is_i)
    again, _ = render_region(back, (0, 0, W, H), cache)
    assert np.array_equal(again, blocks)


def test_layout_without_fine_seams_renders_as_before(tmp_path):
    lay, *_ = _bar_layout(tmp_path, bands=3)
    p = layout_to_json(lay, tmp_path / "old.tif.layout.json")
    d = json.loads(p.read_text())
    assert "seams_fine_file" not in d and not (tmp_path / "old.tif.layout.json.seams_fine.npz").exists()
    back = layout_from_json(p)
    assert back.fine is None
    W, H = lay.canvas.width, lay.canvas.height
    a, _ = render_region(back, (0, 0, W, H))
    b, _ = render_region(lay, (0, 0, W, H))
    assert np.array_equal(a, b)
    # an empty set of overrides renders as the proxy labels alone
    lay.fine = FineSeams()
    c, _ = render_region(lay, (0, 0, W, H))
    assert np.array_equal(a, c)


def test_no_refinement_at_full_resolution_or_far_below(tmp_path):
    lay, *_ = _bar_layout(tmp_path)
    full = np.zeros((lay.canvas.height, lay.canvas.width), np.int16)
    full[:, full.shape[1] // 2 :] = 1
    assert fine_seams(lay.layers, lay.canvas, full, SourceCache()) is None
    # nor far below it (a proxy pixel of more than MAX_SCALE output px)
    coarse = full[::20, ::20]
    assert fine_seams(lay.layers, lay.canvas, coarse, SourceCache()) is None
    # labels that never touch: nothing to refine
    apart = np.full(lay.labels.shape, -1, np.int16)
    apart[:, :3] = 0
    apart[:, -3:] = 1
    f = fine_seams(lay.layers, lay.canvas, apart, SourceCache())
    assert f is not None and not f.patches


def test_window_cap_keeps_the_proxy_seam(tmp_path):
    lay, *_ = _bar_layout(tmp_path)
    f = fine_seams(lay.layers, lay.canvas, lay.labels, SourceCache(), max_window_mp=1e-4)
    assert f is not None and not f.patches and f.skipped > 0


@pytest.mark.parametrize("step", [1, 4])
def test_dp_cut_wide_avoids_crossing_a_bar(step):
    cost = np.zeros((12, 20))
    cost[:, 9] = 5.0  # a costly column: the cut must not sit on it
    cut = dp_cut_wide(cost, np.ones(cost.shape, bool), step)
    assert (cut != 9).all()


def test_bench_seam_differences_drop_with_the_refinement(tmp_path):
    from processing.bench.fine_seams import seam_differences

    lay, *_ = _bar_layout(tmp_path)
    lay.fine = fine_seams(lay.layers, lay.canvas, lay.labels, SourceCache())
    d = seam_differences(lay)
    # the proxy seam runs through the bar; the refined one beside it, where the images agree
    assert d["proxy"]["disagree_share"] > 0.05
    assert d["fine"]["disagree_share"] == 0.0 and d["fine"]["seam_px"] > 0


def test_fine_seams_across_the_360_seam(tmp_path):
    """A wrapping canvas with an image straddling +-180 degrees: patches may
    run past the width, and every block (also one past the width) agrees."""
    from processing.stitch.project import block_map, center_weight

    layers, cams = [], []
    for k, y in enumerate([180.0, 140.0, -140.0]):
        p = tmp_path / f"im{k}.png"
        write_image(p, texture(120, 160, seed=k))
        cams.append(Camera.make(160, 120, 150.0, rotation_from_ypr(y, 0, 0)))
    cv = make_canvas(cams, "cylindrical", wrap=True)
    assert cv.wrap
    layers = [Layer(str(tmp_path / f"im{k}.png"), c, footprint(c, cv)) for k, c in enumerate(cams)]
    pc = cv.scaled(1 / SCALE)
    best = np.zeros((pc.height, pc.width), np.float32)
    lab = np.full(best.shape, -1, np.int16)
    for k, c in enumerate(cams):
        mx, my, valid = block_map(c, pc, 0, 0, pc.width, pc.height)
        w = center_weight(c, mx, my, valid)
        lab[w > best] = k
        np.maximum(best, w, out=best)
    cache = SourceCache()
    fine = fine_seams(layers, cv, lab, cache)
    assert fine is not None and fine.patches
    assert all(0 <= p.rect[0] < cv.width for p in fine.patches)
    lay = Layout(cv, layers, 3, 64, lab, fine=fine)
    W, H = cv.width, cv.height
    whole, _ = render_rect(layers, cv, (0, 0, W, H), cache, 3, lab, fine=fine)
    blocks, _ = render_region(lay, (0, 0, W, H), cache)
    assert np.abs(whole - blocks).max() < 2e-3
    # past the width the labels (proxy + patches) are those of the canvas's
    # first columns (the rendered pixels differ by the pyramid grid's phase
    # when the width is not a multiple of 2^bands, with or without patches)
    Hp, Wp = lab.shape
    rows = np.clip(np.floor((np.arange(H) + 0.5) * Hp / H).astype(np.int64), 0, Hp - 1)
    got = []
    for x0 in (-24, W - 24):
        cols = np.mod(np.floor((np.arange(x0, x0 + 64) + 0.5) * Wp / W).astype(np.int64), Wp)
        lf = lab[rows][:, cols]
        fine.apply(lf, x0, 0, W, True)
        got.append(lf)
    assert np.array_equal(got[0], got[1])
    assert (got[0] != lab[rows][:, np.mod(np.floor((np.arange(-24, 40) + 0.5) * Wp / W).astype(np.int64), Wp)]).any()
