"""Deep Zoom pyramids: structure, levels, tile sizes, atomic staging, partial updates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips

from processing.io.errors import InputError, ProcessingError
from processing.tiles.pyramid import (
    PyramidParams,
    build_pyramid,
    count_tiles,
    level_grid,
    level_size,
    num_levels,
    read_dzi,
    tile_path,
    tiles_for_rect,
    update_pyramid,
)

ROOT = Path(__file__).resolve().parents[3]


def write_image(path: Path, arr: np.ndarray, **kw) -> Path:
    im = pyvips.Image.new_from_array(arr)
    if path.suffix == ".tif":
        im.tiffsave(str(path), tile=True, tile_width=64, tile_height=64, **kw)
    else:
        im.write_to_file(str(path))
    return path


def rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def read(path: Path) -> np.ndarray:
    a = pyvips.Image.new_from_file(str(path)).numpy()
    return a[:, :, None] if a.ndim == 2 else a


def test_structure_levels_and_tile_sizes(tmp_path):
    src = write_image(tmp_path / "in.png", rand_image(150, 300))
    info = build_pyramid(src, tmp_path / "pyr", PyramidParams(tile_size=64, overlap=1, format="jpg", quality=80))
    pyr = tmp_path / "pyr"
    assert (pyr / "image.dzi").is_file() and (pyr / "image_files").is_dir()
    assert info["width"] == 300 and info["height"] == 150
    assert info["levels"] == num_levels(300, 150) == 10  # ceil(log2 300) + 1
    levels = sorted(int(p.name) for p in (pyr / "image_files").iterdir())
    assert levels == list(range(10))
    assert not (pyr / "image_files" / "vips-properties.xml").exists()
    n = sum(len(list((pyr / "image_files" / str(lv)).iterdir())) for lv in levels)
    assert n == info["tiles"] == count_tiles(300, 150, 64)
    assert read_dzi(pyr) == {"width": 300, "height": 150, "tile_size": 64, "overlap": 1, "format": "jpg"}
    # Level sizes halve rounding up; tiles are tile_size plus overlap on inner edges.
    for lv in levels:
        lw, lh = level_size(300, 150, lv)
        nc, nr = level_grid(300, 150, 64, lv)
        assert len(list((pyr / "image_files" / str(lv)).iterdir())) == nc * nr
        for c in range(nc):
            for r in range(nr):
                t = pyvips.Image.new_from_file(str(tile_path(pyr, lv, c, r, "jpg")))
                x0, y0 = c * 64 - (1 if c else 0), r * 64 - (1 if r else 0)
                assert t.width == min(lw, (c + 1) * 64 + 1) - x0
                assert t.height == min(lh, (r + 1) * 64 + 1) - y0
    assert level_size(300, 150, 0) == (1, 1)
    assert level_size(300, 150, 9) == (300, 150)
    assert level_size(300, 150, 8) == (150, 75)
    assert level_size(300, 150, 7) == (75, 38)


def test_full_resolution_tiles_are_exact_png(tmp_path):
    a = rand_image(100, 130, 3)
    build_pyramid(
        write_image(tmp_path / "in.png", a), tmp_path / "p", PyramidParams(tile_size=32, overlap=2, format="png")
    )
    top = num_levels(130, 100) - 1
    assert np.array_equal(read(tile_path(tmp_path / "p", top, 0, 0, "png")), a[:34, :34])
    assert np.array_equal(read(tile_path(tmp_path / "p", top, 1, 1, "png")), a[30:66, 30:66])
    assert np.array_equal(read(tile_path(tmp_path / "p", top, 4, 3, "png")), a[94:100, 126:130])


def test_16bit_and_webp(tmp_path):
    a16 = rand_image(40, 50).astype(np.uint16) * 257
    src = write_image(tmp_path / "in16.tif", a16)
    info = build_pyramid(src, tmp_path / "p", PyramidParams(tile_size=254, format="webp"))
    t = read(tile_path(tmp_path / "p", info["levels"] - 1, 0, 0, "webp"))
    assert t.dtype == np.uint8 and t.shape == (40, 50, 3)


def test_atomic_staging_failure_leaves_nothing(tmp_path, monkeypatch):
    src = write_image(tmp_path / "in.png", rand_image(64, 64))

    def boom(self, *a, **kw):
        raise pyvips.Error("simulated disk full")

    monkeypatch.setattr(pyvips.Image, "dzsave", boom)
    with pytest.raises(ProcessingError):
        build_pyramid(src, tmp_path / "out", PyramidParams())
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.png"]  # no staging folder left behind


def test_progress_is_reported(tmp_path):
    src = write_image(tmp_path / "in.tif", rand_image(600, 700))
    seen = []
    build_pyramid(src, tmp_path / "p", PyramidParams(), progress=seen.append)
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        build_pyramid(tmp_path / "missing.tif", tmp_path / "p")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        build_pyramid(tmp_path / "empty.png", tmp_path / "p")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError):
        build_pyramid(tmp_path / "junk.png", tmp_path / "p")
    src = write_image(tmp_path / "in.png", rand_image(50, 60))
    with pytest.raises(InputError, match="exceeds"):
        build_pyramid(src, tmp_path / "p", max_pixels=1000)
    (tmp_path / "exists").mkdir()
    with pytest.raises(InputError, match="exists"):
        build_pyramid(src, tmp_path / "exists")
    with pytest.raises(ValueError):
        PyramidParams(format="gif")
    assert not (tmp_path / "p").exists()


def test_cli(tmp_path):
    src = write_image(tmp_path / "in.png", rand_image(70, 90))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "processing",
        "pyramid",
        str(src),
        "-o",
        str(tmp_path / "d"),
        "--tile-size",
        "32",
        "--format",
        "png",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tiles"] == count_tiles(90, 70, 32)
    assert (tmp_path / "d" / "image.dzi").is_file() and (tmp_path / "d" / "image_files").is_dir()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)  # exists now
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def brute_tiles(w, h, T, ov, rect):
    """Reference: tiles whose pixels change, found by building both pyramids' level maps."""
    x, y, rw, rh = rect
    mask = np.zeros((h, w), bool)
    mask[max(0, y) : max(0, y + rh), max(0, x) : max(0, x + rw)] = True
    out = set()
    for lv in range(num_levels(w, h) - 1, -1, -1):
        lw, lh = level_size(w, h, lv)
        mask = mask[:lh, :lw]
        nc, nr = level_grid(w, h, T, lv)
        for c in range(nc):
            for r in range(nr):
                x0, y0 = c * T - (ov if c else 0), r * T - (ov if r else 0)
                if mask[y0 : (r + 1) * T + ov, x0 : (c + 1) * T + ov].any():
                    out.add((lv, c, r))
        m = np.pad(mask, ((0, mask.shape[0] % 2), (0, mask.shape[1] % 2)), mode="edge")
        mask = m[0::2, 0::2] | m[1::2, 0::2] | m[0::2, 1::2] | m[1::2, 1::2]
    return out


@pytest.mark.parametrize(
    "rect",
    [(0, 0, 1, 1), (63, 63, 2, 2), (100, 40, 60, 30), (250, 120, 100, 100), (-10, -10, 20, 20), (0, 0, 300, 150)],
)
def test_tiles_for_rect_matches_brute_force(rect):
    got = tiles_for_rect(300, 150, 64, 1, rect)
    assert brute_tiles(300, 150, 64, 1, rect) <= got
    # Every ancestor of a touched tile is in, and level 0 always is.
    for lv, c, r in got:
        if lv > 0:
            assert (lv - 1, c // 2, r // 2) in got
    assert (0, 0, 0) in got


def test_tiles_for_rect_small_and_outside():
    one = tiles_for_rect(300, 150, 64, 0, (10, 10, 5, 5))
    assert len([t for t in one if t[0] == 9]) == 1
    assert tiles_for_rect(300, 150, 64, 1, (400, 10, 5, 5)) == set()
    assert tiles_for_rect(300, 150, 64, 1, (10, 10, 0, 5)) == set()
    # A change on a tile border touches both neighbours through the overlap.
    border = {t for t in tiles_for_rect(300, 150, 64, 1, (64, 10, 1, 1)) if t[0] == 9}
    assert border == {(9, 0, 0), (9, 1, 0)}


@pytest.mark.parametrize("rect", [(140, 60, 40, 30), (290, 140, 10, 10), (0, 0, 5, 150)])
def test_update_pyramid_png_equals_full_rebuild_and_links(tmp_path, rect):
    a = rand_image(150, 301, 1)
    b = a.copy()
    x, y, w, h = rect
    b[y : y + h, x : x + w] = 255 - b[y : y + h, x : x + w]
    params = PyramidParams(tile_size=64, overlap=1, format="png")
    build_pyramid(write_image(tmp_path / "a.png", a), tmp_path / "v1", params)
    new = write_image(tmp_path / "b.tif", b)
    build_pyramid(new, tmp_path / "full", params)
    info = update_pyramid(tmp_path / "v1", new, rect, tmp_path / "v2", params)
    expected = tiles_for_rect(301, 150, 64, 1, rect)
    assert info["tiles_rewritten"] == len(expected)
    assert info["tiles_total"] == count_tiles(301, 150, 64) == info["tiles_rewritten"] + info["tiles_linked"]
    for lv in range(info["levels"]):
        nc, nr = level_grid(301, 150, 64, lv)
        for c in range(nc):
            for r in range(nr):
                new_t, old_t = tile_path(tmp_path / "v2", lv, c, r, "png"), tile_path(tmp_path / "v1", lv, c, r, "png")
                linked = os.stat(new_t).st_ino == os.stat(old_t).st_ino
                assert linked == ((lv, c, r) not in expected)
                # Pixel-identical to a pyramid rebuilt from scratch.
                assert np.array_equal(read(new_t), read(tile_path(tmp_path / "full", lv, c, r, "png"))), (lv, c, r)
    assert (tmp_path / "v2" / "image.dzi").read_bytes() == (tmp_path / "v1" / "image.dzi").read_bytes()


def test_update_pyramid_jpg_close_to_rebuild(tmp_path):
    yy, xx = np.mgrid[0:200, 0:260]
    a = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    b = a.copy()
    b[50:120, 100:180] = [200, 30, 30]
    params = PyramidParams(tile_size=64, format="jpg", quality=90)
    build_pyramid(write_image(tmp_path / "a.png", a), tmp_path / "v1", params)
    new = write_image(tmp_path / "b.tif", b)
    build_pyramid(new, tmp_path / "full", params)
    info = update_pyramid(tmp_path / "v1", new, (100, 50, 80, 70), tmp_path / "v2", params)
    assert 0 < info["tiles_rewritten"] < info["tiles_total"]
    for lv, c, r in tiles_for_rect(260, 200, 64, 1, (100, 50, 80, 70)):
        got = read(tile_path(tmp_path / "v2", lv, c, r, "jpg")).astype(float)
        ref = read(tile_path(tmp_path / "full", lv, c, r, "jpg")).astype(float)
        assert got.shape == ref.shape
        assert np.abs(got - ref).mean() < 3.0, (lv, c, r)


def test_update_pyramid_refuses_mismatch_and_is_atomic(tmp_path):
    a = rand_image(100, 120)
    build_pyramid(write_image(tmp_path / "a.png", a), tmp_path / "v1", PyramidParams(tile_size=64))
    other = write_image(tmp_path / "o.png", rand_image(90, 120))
    with pytest.raises(InputError, match="differs"):
        update_pyramid(tmp_path / "v1", other, (0, 0, 10, 10), tmp_path / "v2")
    assert not (tmp_path / "v2").exists()
    with pytest.raises(InputError, match="format"):
        update_pyramid(
            tmp_path / "v1", tmp_path / "a.png", (0, 0, 10, 10), tmp_path / "v2", PyramidParams(format="png")
        )
    # A previous version with a missing tile: nothing half-written appears.
    victim = next(p for p in (tmp_path / "v1" / "image_files" / "6").iterdir())
    victim.unlink()
    with pytest.raises(InputError, match="missing"):
        update_pyramid(tmp_path / "v1", tmp_path / "a.png", (0, 0, 1, 1), tmp_path / "v2", PyramidParams(tile_size=64))
    assert not (tmp_path / "v2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".v2")]
