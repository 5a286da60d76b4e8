"""Regions, thumbnails and IIIF-style tiles cut from a real Deep Zoom pyramid."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from processing.io.errors import InputError
from processing.tiles.pyramid import PyramidParams, build_pyramid, level_size, num_levels, tile_path
from processing.tiles.region_export import (
    ExportError,
    PyramidGeometry,
    choose_level,
    clip_rect,
    encode_jpeg,
    output_size,
    render_region,
    write_image,
    write_thumbnail,
)

W, H, TS = 1000, 430, 64


@pytest.fixture(scope="module")
def png_pyramid(tmp_path_factory):
    """A PNG pyramid (lossless) of a random image, and the image."""
    d = tmp_path_factory.mktemp("rx")
    img = np.random.default_rng(3).integers(0, 256, (H, W, 3)).astype(np.uint8)
    pyvips.Image.new_from_array(img).write_to_file(str(d / "src.png"))
    build_pyramid(d / "src.png", d / "pyr", PyramidParams(tile_size=TS, overlap=1, format="png"))
    return d / "pyr", img, PyramidGeometry(W, H, TS, 1, "png")


def read_tile(pyr, level, col, row):
    return pyvips.Image.new_from_file(str(tile_path(pyr, level, col, row, "png"))).numpy()[:, :, :3]


def test_full_resolution_regions_are_the_original_pixels(png_pyramid):
    pyr, img, geo = png_pyramid
    assert np.array_equal(render_region(pyr, geo, (0, 0, W, H), W, H), img)
    for x, y, w, h in [(130, 70, 300, 200), (0, 0, 1, 1), (999, 429, 1, 1), (63, 63, 3, 3), (640, 0, 360, 430)]:
        assert np.array_equal(render_region(pyr, geo, (x, y, w, h), w, h), img[y : y + h, x : x + w]), (x, y, w, h)


def test_level_grid_tiles_equal_pyramid_tiles_without_overlap(png_pyramid):
    pyr, _, geo = png_pyramid
    top = num_levels(W, H) - 1
    for level in (top - 1, top - 2, top - 4):
        d = 1 << (top - level)
        lw, lh = level_size(W, H, level)
        last = ((lw - 1) // TS, (lh - 1) // TS)
        for col, row in {(0, 0), (min(1, last[0]), 0), last}:
            x, y = col * TS * d, row * TS * d
            w, h = min(TS * d, W - x), min(TS * d, H - y)
            ow, oh = min(TS, lw - col * TS), min(TS, lh - row * TS)
            assert choose_level(geo, (x, y, w, h), ow, oh) == level
            got = render_region(pyr, geo, (x, y, w, h), ow, oh)
            tile = read_tile(pyr, level, col, row)
            left, top_ = (1 if col else 0), (1 if row else 0)
            assert np.array_equal(got, tile[top_ : top_ + oh, left : left + ow]), (level, col, row)


def test_whole_image_at_a_level_size_is_that_level(png_pyramid):
    pyr, _, geo = png_pyramid
    level = num_levels(W, H) - 1 - 5  # 32x smaller: one tile
    lw, lh = level_size(W, H, level)
    got = render_region(pyr, geo, (0, 0, W, H), lw, lh)
    assert np.array_equal(got, read_tile(pyr, level, 0, 0)[:lh, :lw])


def test_resampled_output_follows_the_image(png_pyramid):
    pyr, img, geo = png_pyramid
    out = render_region(pyr, geo, (100, 50, 600, 300), 250, 125)
    assert out.shape == (125, 250, 3)
    ref = np.asarray(
        pyvips.Image.new_from_array(img[50:350, 100:700]).resize(250 / 600, vscale=125 / 300, kernel="linear").numpy()
    )[:125, :250, :3]
    # Random noise averages differently by kernel; the means and the layout agree.
    assert abs(out.astype(float).mean() - ref.astype(float).mean()) < 1.5
    a = pyvips.Image.new_from_array(img[50:350, 100:700]).resize(1 / 12).numpy()[:, :, 0].astype(float)
    b = pyvips.Image.new_from_array(out).resize(1 / 5).numpy()[:, :, 0].astype(float)
    n = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    assert np.corrcoef(a[: n[0], : n[1]].ravel(), b[: n[0], : n[1]].ravel())[0, 1] > 0.5


def test_blocks_join_without_seams(tmp_path):
    """A smooth gradient resampled across several output blocks stays smooth."""
    yy, xx = np.mgrid[0:1200, 0:2600]
    img = np.stack([xx * 255 // 2599, yy * 255 // 1199, (xx + yy) * 255 // 3798], -1).astype(np.uint8)
    pyvips.Image.new_from_array(img).write_to_file(str(tmp_path / "g.png"))
    build_pyramid(tmp_path / "g.png", tmp_path / "p", PyramidParams(tile_size=254, format="png"))
    geo = PyramidGeometry(2600, 1200, 254, 1, "png")
    from processing.tiles import region_export

    blocks = list(region_export.iter_region_blocks(tmp_path / "p", geo, (0, 0, 2600, 1200), 1700, 784, block=512))
    assert len(blocks) == 4 * 2
    out = render_region(tmp_path / "p", geo, (0, 0, 2600, 1200), 1700, 784)
    step = np.abs(np.diff(out[:, :, 0].astype(int), axis=1))
    assert step.max() <= 2


def test_limits_and_bad_requests():
    geo = PyramidGeometry(W, H, TS, 1, "png")
    assert clip_rect(geo, (-10, -10, 100, 100)) == (0, 0, 90, 90)
    with pytest.raises(ExportError, match="outside"):
        clip_rect(geo, (2000, 0, 10, 10))
    with pytest.raises(ExportError, match="outside"):
        clip_rect(geo, (0, 0, 0, 10))
    assert output_size((0, 0, 1000, 400), 500, None, 10**6, 4096) == (500, 200)
    assert output_size((0, 0, 1000, 400), None, 100, 10**6, 4096) == (250, 100)
    with pytest.raises(ExportError, match="larger than the region"):
        output_size((0, 0, 100, 100), 200, None, 10**6, 4096)
    with pytest.raises(ExportError, match="MP"):
        output_size((0, 0, 5000, 5000), 2000, None, 10**6, 4096)
    with pytest.raises(ExportError, match="a side"):
        output_size((0, 0, 5000, 50), 5000, None, 10**7, 4096)


def test_missing_tile_names_the_file(png_pyramid, tmp_path):
    import shutil

    pyr, _, geo = png_pyramid
    copy = tmp_path / "broken"
    shutil.copytree(pyr, copy)
    victim = tile_path(copy, num_levels(W, H) - 1, 2, 1, "png")
    victim.unlink()
    with pytest.raises(InputError, match=str(victim.name)):
        render_region(copy, geo, (0, 0, 400, 200), 400, 200)


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("jpg", b"\xff\xd8\xff"), ("tif", b"II*\x00")])
def test_write_image_formats(tmp_path, fmt, magic):
    px = np.random.default_rng(1).integers(0, 256, (40, 70, 3)).astype(np.uint8)
    out = write_image(px, tmp_path / f"o.{fmt}", fmt)
    assert out.read_bytes()[:4].startswith(magic)
    back = pyvips.Image.new_from_file(str(out)).numpy()
    assert back.shape == (40, 70, 3)
    if fmt != "jpg":
        assert np.array_equal(back, px)
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]  # no temporary left
    with pytest.raises(ExportError):
        write_image(px, tmp_path / "o.gif", "gif")
    assert encode_jpeg(px)[:3] == b"\xff\xd8\xff"


def test_thumbnail(png_pyramid, tmp_path):
    pyr, img, geo = png_pyramid
    size = write_thumbnail(pyr, geo, tmp_path / "t.jpg", 640, 320)
    assert size == (640, 275)
    th = pyvips.Image.new_from_file(str(tmp_path / "t.jpg"))
    assert (th.width, th.height) == size
    assert abs(th.numpy().astype(float).mean() - img.astype(float).mean()) < 3
