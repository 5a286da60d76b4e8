import numpy as np

from processing.io.imageio import write_image
from processing.stitch.blend import Layer, SourceCache, render_rect
from processing.stitch.pipeline import Layout, render_region, render_to_file
from processing.stitch.project import Camera, footprint, make_canvas, rotation_from_ypr
from processing.stitch.seams import _dp_cut
from tests.processing._stitch_helpers import texture


def _layout(tmp_path, yaws, size=(160, 120), focal=150.0, bands=3, block=64):
    layers, cams = [], []
    for k, y in enumerate(yaws):
        p = tmp_path / f"im{k}.png"
        write_image(p, texture(size[1], size[0], seed=k))
        cams.append(Camera.make(size[0], size[1], focal, rotation_from_ypr(y, 0, 0)))
    cv = make_canvas(cams, "cylindrical", wrap=True)
    for k, c in enumerate(cams):
        layers.append(Layer(str(tmp_path / f"im{k}.png"), c, footprint(c, cv)))
    return Layout(cv, layers, bands, block)


def test_block_rendering_matches_whole(tmp_path):
    lay = _layout(tmp_path, [-170, 150, 175])
    cache = SourceCache()
    W, H = lay.canvas.width, lay.canvas.height
    whole, a_whole = render_rect(lay.layers, lay.canvas, (0, 0, W, H), cache, lay.bands)
    blocks, a_blocks = render_region(lay, (0, 0, W, H), cache)  # 64 px blocks
    m = (a_whole > 0) & (a_blocks > 0)
    assert m.mean() > 0.1
    assert np.abs(whole - blocks)[m].max() < 2e-3


def test_wrap_seam_is_continuous(tmp_path):
    # one image straddles +-180 degrees: the left and right edges must continue
    lay = _layout(tmp_path, [180.0, 120.0])
    rgb, alpha = render_region(lay, (0, 0, lay.canvas.width, lay.canvas.height))
    rows = alpha[:, 0] * alpha[:, -1] > 0
    assert rows.sum() > 50
    edge = np.abs(rgb[rows, 0] - rgb[rows, -1]).mean()
    inner = np.abs(rgb[rows, 5] - rgb[rows, 6]).mean()
    assert edge < 2.5 * inner + 0.01
    # and rendering across the seam (x beyond the width) equals the left edge
    seam, _ = render_region(lay, (lay.canvas.width - 8, 0, lay.canvas.width + 8, lay.canvas.height))
    assert np.abs(seam[:, 8:] - rgb[:, :8]).max() < 2e-3


def test_wider_than_32767_tiled_bigtiff(tmp_path):
    import tifffile

    # a huge focal length: the 360-degree cylinder is ~44,000 px wide, but
    # only a thin strip is covered, rendered in tiny blocks
    lay = _layout(tmp_path, [0.0, 0.2], size=(320, 64), focal=7000.0, bands=2, block=64)
    assert lay.canvas.width > 32767
    out = render_to_file(lay, tmp_path / "wide.tif", tile=64)
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert tf.is_bigtiff and page.is_tiled
        assert (page.imagewidth, page.imagelength) == (lay.canvas.width, lay.canvas.height)
        data = page.asarray()
    assert data.shape[2] == 4 and data[..., 3].max() == 255
    covered = np.nonzero(data[..., 3].max(0))[0]
    # yaw 0 sits at the centre column; ~2 x 320 px of views are covered there
    assert 300 < covered.size < 700
    assert abs((covered.min() + covered.max()) / 2 - lay.canvas.width / 2) < 300


def test_dp_cut_follows_the_cheapest_path():
    rng = np.random.default_rng(0)
    cost = rng.random((60, 40)) + 1.0
    path = (20 + 6 * np.sin(np.arange(60) / 8)).astype(int)
    cost[np.arange(60), path] = 0.0  # a zero-cost seam that moves slowly
    allowed = np.ones_like(cost, bool)
    cut = _dp_cut(cost, allowed)
    assert np.abs(cut - path).max() <= 1
    allowed[:, :5] = False
    allowed[30] = False  # a gap row: restarts, reported as -1
    cut = _dp_cut(cost, allowed)
    assert cut[30] == -1 and (cut[cut >= 0] >= 5).all()
