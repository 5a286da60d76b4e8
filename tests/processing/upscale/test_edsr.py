"""EDSR model: shapes, pixel shuffle order, weights loading and bad weights."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from processing.io.errors import InputError
from processing.upscale.edsr import build_edsr, default_weights, depth_to_space, load_model, predict

from .._edsr_helpers import tiny_weights


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shapes(scale: int) -> None:
    m = build_edsr(scale, n_blocks=1, n_filters=8)
    y = predict(m, np.random.rand(2, 13, 17, 3).astype(np.float32))
    assert y.shape == (2, 13 * scale, 17 * scale, 3)


def test_bicubic_skip_starts_at_bicubic() -> None:
    from keras import layers

    x = np.random.default_rng(0).random((1, 12, 12, 3)).astype(np.float32)
    m = build_edsr(2, 1, 8, skip="bicubic")  # tail starts at zero: output = the bicubic skip
    ref = predict(layers.UpSampling2D(2, interpolation="bicubic"), x)
    np.testing.assert_allclose(predict(m, x), ref, atol=1e-5)


def test_bad_scale() -> None:
    with pytest.raises(ValueError):
        build_edsr(5, 1, 8)


def test_depth_to_space_matches_tf_order() -> None:
    from keras import ops

    r, c = 2, 3
    x = np.arange(1 * 2 * 3 * c * r * r, dtype=np.float32).reshape(1, 2, 3, c * r * r)
    y = ops.convert_to_numpy(depth_to_space(ops.convert_to_tensor(x), r))
    ref = np.empty((1, 4, 6, c), np.float32)
    for h in range(2):
        for w in range(3):
            for i in range(r):
                for j in range(r):
                    ref[0, h * r + i, w * r + j] = x[0, h, w, (i * r + j) * c : (i * r + j + 1) * c]
    np.testing.assert_array_equal(y, ref)


def test_load_roundtrip(tmp_path) -> None:
    w = tiny_weights(tmp_path, 2)
    m = load_model(2, w, cache=False)
    x = np.random.rand(1, 8, 8, 3).astype(np.float32)
    assert predict(m, x).shape == (1, 16, 16, 3)
    with pytest.raises(InputError, match="not x4"):
        load_model(4, w, cache=False)


def test_missing_and_corrupt_weights(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_model(4, tmp_path / "nope.weights.h5")
    w = tiny_weights(tmp_path, 2)
    w.write_bytes(b"not an hdf5 file")
    with pytest.raises(InputError, match="cannot load"):
        load_model(2, w, cache=False)
    (tmp_path / "x.weights.h5").write_bytes(b"x")
    with pytest.raises(InputError, match="sidecar"):
        load_model(2, tmp_path / "x.weights.h5", cache=False)


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_weights_load(scale: int) -> None:
    if not default_weights(scale).is_file():
        pytest.skip("shipped weights not present")
    m = load_model(scale)
    meta = m.terapan_meta
    assert meta["architecture"]["scale"] == scale
    assert default_weights(scale).stat().st_size < 8 * 2**20


@pytest.fixture(scope="module")
def shipped_x4():
    if not default_weights(4).is_file():
        pytest.skip("shipped weights not present")
    return load_model(4)


def test_shipped_x4_beats_bicubic(shipped_x4) -> None:
    from processing.upscale.train import bicubic_down, bicubic_up, mod_crop, psnr_y, read_rgb8, sr_image

    from .._edsr_helpers import SHARED

    img = SHARED / "sr" / "Set5" / "bird.png"
    if not img.is_file():
        pytest.skip("shared SR data absent")
    hr = mod_crop(read_rgb8(img), 4)
    lr = bicubic_down(hr, 4)
    gain = psnr_y(sr_image(shipped_x4, lr), hr, 4) - psnr_y(bicubic_up(lr, (hr.shape[1], hr.shape[0])), hr, 4)
    assert gain > 1.0
