"""EDSR training: patch extraction, augmentation, a loss that falls, resume, fine-tune records."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from processing.upscale.train import (
    TrainConfig,
    augment,
    bicubic_down,
    extract_patches,
    psnr_y,
    rgb_to_y,
    train,
)

from .._edsr_helpers import tiny_weights


def _photo(path, seed: int = 0, size: int = 96) -> None:
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2.0)
    a = (a - a.min()) / (a.max() - a.min())
    Image.fromarray((a * 255).astype(np.uint8)).save(path)


def test_patches_aligned(tmp_path) -> None:
    for i in range(2):
        _photo(tmp_path / f"p{i}.png", i)
    lr, hr = extract_patches(sorted(tmp_path.glob("*.png")), 2, 12, 20, seed=1)
    assert lr.shape == (20, 12, 12, 3) and hr.shape == (20, 24, 24, 3)
    # LR patch equals the bicubic downscale of its HR patch away from the patch edges.
    d = bicubic_down(hr[0], 2).astype(float)
    assert np.abs(d[3:-3, 3:-3] - lr[0, 3:-3, 3:-3]).mean() < 2.0
    a, b = augment(lr, hr, np.random.default_rng(0))
    assert a.shape == lr.shape and b.shape == hr.shape


def test_metrics() -> None:
    img = np.full((20, 20, 3), 128, np.uint8)
    assert psnr_y(img, img, 2) == 99.0
    assert abs(rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0] - 235.0) < 1e-6


def test_loss_falls() -> None:
    import keras

    from processing.upscale.edsr import build_edsr

    keras.utils.set_random_seed(0)
    m = build_edsr(2, 1, 8)
    m.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mean_absolute_error")
    import cv2

    rng = np.random.default_rng(0)
    hr = np.stack([cv2.GaussianBlur(rng.random((16, 16, 3)).astype(np.float32), (0, 0), 1.5) for _ in range(8)])
    lr = hr.reshape(8, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    losses = [float(np.asarray(m.train_on_batch(lr, hr)).reshape(-1)[0]) for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_train_resume_and_finetune(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _photo(data / f"p{i}.png", i)
    out = tmp_path / "run"
    cfg = TrainConfig(
        scale=2,
        data=[str(data)],
        out=str(out),
        steps=4,
        batch=2,
        patch=8,
        blocks=1,
        filters=8,
        n_patches=16,
        ckpt_every=2,
        val=[str(data)],
        val_every=4,
    )
    train(cfg, progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    # Resume to 6 steps: continues from the checkpoint, does not restart.
    train(cfg.__class__(**{**cfg.__dict__, "steps": 6}), resume=True, progress=False)
    meta = json.loads((out / "edsr_x2.json").read_text())
    assert meta["recipe"]["steps_done"] == 6 and meta["architecture"]["n_filters"] == 8
    # Fine-tune a copy of some base weights: the sidecar names them.
    base = tiny_weights(tmp_path, 2, blocks=1, filters=8)
    ft = TrainConfig(
        scale=2,
        data=[str(data)],
        out=str(tmp_path / "ft"),
        steps=2,
        batch=2,
        patch=8,
        blocks=1,
        filters=8,
        n_patches=8,
        finetune_from=str(base),
        degradation="realistic",
        finetune_blur=0.5,
    )
    w = train(ft, progress=False)
    rec = json.loads(w.with_name("edsr_x2.json").read_text())["recipe"]
    assert rec["base_weights"]["path"] == str(base) and len(rec["base_weights"]["sha256"]) == 64
    assert base.read_bytes()  # the base weights are untouched (a copy was fine-tuned)


def test_cli_rejects_missing_data(tmp_path) -> None:
    from processing.__main__ import main

    assert main(["train-edsr", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        main(["train-edsr", "--scale", "5", "--out", str(tmp_path / "o")])
