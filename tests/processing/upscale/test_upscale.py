"""Upscaling: tiling equals whole-image inference, exact sizes, pixel centres, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import itertools

from processing.io.errors import InputError
from processing.upscale.edsr import load_model, predict
from processing.upscale.upscale import (
    UpscaleParams,
    model_factors,
    plan,
    resize_exact,
    upscale_array,
    upscale_file,
    window_layout,
)

from .._edsr_helpers import tiny_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("w")
    return {2: tiny_weights(d, 2, blocks=3, filters=8), 4: tiny_weights(d, 4, blocks=3, filters=8)}


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return np.clip((a - a.min()) / (a.max() - a.min()), 0, 1)


def test_tiled_equals_whole(weights) -> None:
    img = _img(90, 130)
    whole = np.clip(predict(load_model(4, weights[4]), img[None])[0], 0, 1)
    p = UpscaleParams(scale=4, weights=str(weights[4]), tile=48, margin=6, blend=8, batch=3)
    tiled = upscale_array(img, 4, p)
    assert tiled.shape == whole.shape
    assert np.mean(np.abs(tiled - whole)) < 0.5 / 255
    assert np.max(np.abs(tiled - whole)) < 4.0 / 255


@pytest.mark.parametrize("n", [50, 100, 101, 383, 385, 500, 1000, 2000, 4097])
@pytest.mark.parametrize("jitter", [0, 3])
def test_window_layout_covers_with_overlap(n: int, jitter: int) -> None:
    import math

    t, ov = 384, 22
    side, starts = window_layout(n, t, ov, jitter, np.random.default_rng(n))
    if n <= t:
        assert (side, starts) == (n, [0])
        return
    assert side <= t and starts[0] == 0 and starts[-1] + side == n
    assert all(b - a <= side - ov for a, b in itertools.pairwise(starts))  # overlap >= ov
    # The fewest windows of at most t px that can overlap by ov (+ the jitter allowance).
    assert len(starts) == math.ceil((n - ov - 2 * jitter - 1) / (t - ov - 2 * jitter - 1))


def test_windows_share_one_shape(weights, monkeypatch) -> None:
    import processing.upscale.upscale as up

    shapes: set[tuple[int, ...]] = set()
    real = up._run_batch

    def spy(model, tiles, batch):
        shapes.update(t.shape for t in tiles)
        return real(model, tiles, batch)

    monkeypatch.setattr(up, "_run_batch", spy)
    p = UpscaleParams(scale=2, weights=str(weights[2]), tile=64, margin=5, blend=6)
    upscale_array(_img(150, 170, 2), 2, p)
    assert len(shapes) == 1  # no retracing for edge windows
    shapes.clear()
    upscale_array(_img(60, 64, 2), 2, p)  # fits one window: one call on the whole image
    assert shapes == {(60, 64, 3)}


def test_jitter_changes_grid_not_result(weights) -> None:
    img = _img(80, 100, 1)
    base = UpscaleParams(scale=2, weights=str(weights[2]), tile=40, margin=5, blend=6)
    a = upscale_array(img, 2, base)
    b = upscale_array(img, 2, base.replace(seed=7))
    assert np.mean(np.abs(a - b)) < 0.5 / 255


@pytest.mark.parametrize(
    ("scale", "pre", "iters"), [(4, 0, 1), (4, 25, 1), (4, 0, 2), (3.3, 50, 3), (2.5, 10, 2), (0.7, 0, 1), (6, 0, 1)]
)
def test_exact_sizes(weights, scale, pre, iters) -> None:
    img = _img(23, 31)
    p = UpscaleParams(
        scale=scale, pre_downscale=pre, iterations=iters, weights=str(weights[2]), tile=32, margin=4, blend=4
    )
    out = upscale_array(img, scale, p)
    assert out.shape == (round(23 * scale), round(31 * scale), 3)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize(("scale", "pre", "iters"), [(4, 0, 1), (4, 25, 1), (3.3, 50, 3), (5.5, 0, 2), (1.7, 30, 1)])
def test_pixel_centre_convention_of_plan(scale, pre, iters) -> None:
    h, w = 37, 53
    passes = plan(h, w, UpscaleParams(scale=scale, pre_downscale=pre, iterations=iters), (2, 4))
    H, W = passes[-1].out_h, passes[-1].out_w
    assert (round(scale * h), round(scale * w)) == (H, W)
    # Compose every pass's map back to the input: u_prev = (u + 0.5) / f - 0.5.
    x = np.arange(W, dtype=np.float64)
    u = x.copy()
    for p in reversed(passes):
        f = p.s if p.kind == "model" else p.fx
        u = (u + 0.5) / f - 0.5
    np.testing.assert_allclose(u, (x + 0.5) / scale - 0.5, atol=1e-9)


def test_resample_convention_on_ramp() -> None:
    ramp = np.tile((np.arange(40, dtype=np.float32) / 40)[None, :, None], (20, 1, 3))
    for s in (2.0, 3.7):
        out = resize_exact(ramp, round(20 * s), round(40 * s), s, s)
        u = (np.arange(out.shape[1]) + 0.5) / s - 0.5
        inner = (u > 3) & (u < 36)
        np.testing.assert_allclose(out[3, inner, 0], u[inner] / 40, atol=1e-5)


def test_model_factors() -> None:
    assert model_factors(4, (2, 4)) == (4,)
    assert model_factors(2, (2, 4)) == (2,)
    assert model_factors(8, (2, 4)) == (4, 2)
    assert model_factors(1.1, (2, 4)) == ()
    assert model_factors(3, (2,)) == (2, 2)


def test_bad_params() -> None:
    with pytest.raises(ValueError):
        UpscaleParams(pre_downscale=100).validate()
    with pytest.raises(ValueError):
        UpscaleParams(iterations=0).validate()
    with pytest.raises(InputError):
        upscale_array(np.zeros((10, 10), np.float32), 2)


def test_file_streaming_matches_array(weights, tmp_path) -> None:
    import tifffile
    from PIL import Image

    img = (_img(70, 90) * 255).round().astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    p = UpscaleParams(scale=3, weights=str(weights[2]), tile=40, margin=5, blend=6, strip_rows=32)
    info = upscale_file(src, tmp_path / "out.tif", p)
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint16 and out.shape == (210, 270, 3)
    assert info["out_size"] == [270, 210]
    with tifffile.TiffFile(tmp_path / "out.tif") as t:
        assert t.pages[0].is_tiled
    ref = upscale_array(img.astype(np.float32) / 255, 3, p)
    assert np.mean(np.abs(out / 65535.0 - ref)) < 0.5 / 255


def test_corrupt_input_cli(weights, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InputError):
        upscale_file(bad, tmp_path / "o.tif", UpscaleParams(scale=2, weights=str(weights[2])))
    from processing.__main__ import main

    argv = ["upscale", str(bad), "-o", str(tmp_path / "o.tif"), "--scale", "2", "--weights", str(weights[2]), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.png" in err
    assert main(["upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.tif"), "--scale", "2"]) == 2
    assert not (tmp_path / "o.tif").exists()


def test_missing_weights(tmp_path) -> None:
    img = _img(20, 20)
    with pytest.raises(InputError, match="not found"):
        upscale_array(img, 2, UpscaleParams(weights=str(tmp_path / "none.weights.h5")))


@pytest.mark.parametrize("jitter", [0, 3])
@pytest.mark.parametrize("size", [(80, 100), (41, 150), (150, 39)])
def test_stitching_is_exact_partition(monkeypatch, jitter: int, size: tuple[int, int]) -> None:
    """With a position-independent 'model' (nearest x2), blending the windows
    must give back exactly the whole-image result: the normalised weights of
    every pixel sum to one, whatever the jittered layout (windows wholly
    overlapped by their neighbours included)."""
    import processing.upscale.upscale as up

    monkeypatch.setattr(up, "_run_batch", lambda model, tiles, b: [t.repeat(2, 0).repeat(2, 1) for t in tiles])
    img = np.random.default_rng(1).random((*size, 3)).astype(np.float32)
    for seed in range(3):
        out = np.zeros((size[0] * 2, size[1] * 2, 3), np.float32)
        p = UpscaleParams(scale=2, tile=40, margin=5, blend=6, jitter_px=jitter, seed=seed)
        up.model_pass(up.ArrayRows(img), up.ArrayRows(out), None, 2, p)
        assert np.abs(out - img.repeat(2, 0).repeat(2, 1)).max() < 1e-5


@pytest.mark.parametrize(
    ("ext", "dtype", "tol"), [(".png", np.uint16, 0.5), (".tif", np.uint16, 0.5), (".jpg", np.uint8, 8.0)]
)
def test_cli_writes_format_by_extension(weights, tmp_path, ext: str, dtype: type, tol: float) -> None:
    import cv2
    from PIL import Image

    from processing.__main__ import main

    img = (_img(40, 50, 3) * 255).round().astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    out = tmp_path / f"out{ext}"
    argv = ["upscale", str(src), "-o", str(out), "--scale", "2", "--weights", str(weights[2]), "--quiet"]
    assert main(argv) == 0
    got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert got.dtype == dtype and got.shape == (80, 100, 3)
    ref = upscale_array(img.astype(np.float32) / 255, 2, UpscaleParams(scale=2, weights=str(weights[2])))
    scale = 65535.0 if dtype == np.uint16 else 255.0
    assert np.mean(np.abs(got / scale - ref)) * 255 < tol
    assert not list(tmp_path.glob(".out*"))  # no temporary left beside it


def test_cli_errors_never_share_the_progress_bar_line(weights, tmp_path, capsys) -> None:
    from PIL import Image

    from processing.__main__ import main

    src = tmp_path / "in.png"
    Image.fromarray((_img(30, 30) * 255).astype(np.uint8)).save(src)
    assert main(["upscale", str(src), "-o", str(tmp_path / "o.bmp"), "--scale", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "o.bmp" in err and ".png" in err and err.count("\n") == 1
    # A failure after the bar has started (undecodable input behind a valid header).
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["upscale", str(bad), "-o", str(tmp_path / "o.png"), "--scale", "2", "--weights", str(weights[2])]) == 2
    lines = capsys.readouterr().err.split("\n")
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "bad.png" in errors[0]
    assert not (tmp_path / "o.png").exists()
