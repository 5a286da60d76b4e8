"""EDSR training: patch extraction, augmentation, a loss that falls, resume, fine-tune records."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from processing.upscale.train import (
    OnlinePatches,
    TrainConfig,
    augment,
    bicubic_down,
    extract_patches,
    learning_rate,
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


def test_learning_rate_schedules() -> None:
    cos = TrainConfig(steps=100, lr=1e-3, lr_min=1e-5, schedule="cosine")
    rates = [learning_rate(cos, k) for k in range(0, 101, 10)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert rates[5] == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert all(a > b for a, b in itertools.pairwise(rates))
    # Warm-up ramps linearly into the schedule.
    warm = TrainConfig(steps=100, lr=1e-3, schedule="cosine", warmup=10)
    assert learning_rate(warm, 0) == pytest.approx(
        learning_rate(cos.__class__(**{**warm.__dict__, "warmup": 0}), 0) / 10
    )
    # The step schedule halves at 50 % and 75 %, or every decay_every steps.
    st = TrainConfig(steps=100, lr=1e-3)
    assert [learning_rate(st, k) for k in (0, 49, 50, 75, 99)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 2.5e-4])
    assert learning_rate(TrainConfig(steps=100, lr=1e-3, decay_every=20), 45) == pytest.approx(2.5e-4)
    # With a time budget the progress is the larger of steps and seconds.
    tb = TrainConfig(steps=10_000, lr=1e-3, lr_min=0.0, schedule="cosine", time_budget=60.0)
    assert learning_rate(tb, 10, elapsed=30.0) == pytest.approx(5e-4)
    assert learning_rate(tb, 10, elapsed=90.0) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        learning_rate(TrainConfig(schedule="linear"), 0)


def test_online_patches_aligned(tmp_path) -> None:
    for i in range(2):
        _photo(tmp_path / f"p{i}.png", i)
    src = OnlinePatches(sorted(tmp_path.glob("*.png")), 2, 12, seed=1)
    rng = np.random.default_rng(0)
    lr, hr = src.sample(6, rng)
    assert lr.shape == (6, 12, 12, 3) and hr.shape == (6, 24, 24, 3)
    for a, b in zip(lr, hr, strict=True):
        d = bicubic_down(b, 2).astype(float)
        assert np.abs(d[3:-3, 3:-3] - a[3:-3, 3:-3]).mean() < 2.0
    lr2, _ = src.sample(6, rng)
    assert not np.array_equal(lr, lr2)  # new crops every batch


def _tiny_cfg(tmp_path, data, base, **kw) -> TrainConfig:
    """A one-block, 8-filter x2 run on online crops of DATA, warm-started from BASE."""
    common = dict(scale=2, data=[str(data)], out=str(tmp_path / "run"), batch=2, patch=8, blocks=1, filters=8)
    return TrainConfig(**common, sampling="online", init_from=str(base), **kw)


def test_warm_start_cosine_online_time_budget(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _photo(data / f"p{i}.png", i)
    base = tiny_weights(tmp_path, 2, blocks=1, filters=8, seed=3)
    cfg = _tiny_cfg(tmp_path, data, base, steps=3, lr=1e-3, schedule="cosine", warmup=2, ckpt_every=1)
    w = train(cfg, progress=False)
    rec = json.loads(w.with_name("edsr_x2.json").read_text())["recipe"]
    assert rec["steps_done"] == 3 and rec["schedule"] == "cosine" and rec["sampling"] == "online"
    assert rec["initialised_layers"] > 0 and rec["base_weights"]["path"] == str(base)
    assert rec["train_seconds"] > 0
    # A time budget already spent: resuming with more steps does no more training.
    spent = TrainConfig(**{**cfg.__dict__, "steps": 50, "time_budget": 1e-3})
    w = train(spent, resume=True, progress=False)
    assert json.loads(w.with_name("edsr_x2.json").read_text())["recipe"]["steps_done"] == 3


def test_l2_loss_finetune(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _photo(data / "p0.png", 0)
    base = tiny_weights(tmp_path, 2, blocks=1, filters=8, seed=3)
    cfg = _tiny_cfg(tmp_path, data, base, steps=2, loss="l2")
    w = train(cfg, progress=False)
    rec = json.loads(w.with_name("edsr_x2.json").read_text())["recipe"]
    assert rec["loss"] == "L2" and rec["steps_done"] == 2
    with pytest.raises(ValueError, match="loss"):
        train(TrainConfig(**{**cfg.__dict__, "loss": "huber"}), progress=False)


def test_train_on_ready_made_pairs(tmp_path) -> None:
    from PIL import Image

    from processing.io.errors import InputError
    from processing.upscale.train import OnlinePatches

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        hr = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(hr).save(pairs / f"p{i}_hr.png")
        Image.fromarray(hr[::2, ::2]).save(pairs / f"p{i}_lr.png")
    src = OnlinePatches.from_pairs([pairs], 2, 8)
    lo, hi = src.sample(4, rng)
    assert lo.shape == (4, 8, 8, 3) and hi.shape == (4, 16, 16, 3)
    assert np.array_equal(hi[:, ::2, ::2], lo)  # aligned crops
    base = tiny_weights(tmp_path, 2, blocks=1, filters=8, seed=3)
    cfg = TrainConfig(
        scale=2,
        out=str(tmp_path / "run"),
        steps=2,
        batch=2,
        patch=8,
        blocks=1,
        filters=8,
        sampling="online",
        pairs=[str(pairs)],
        init_from=str(base),
    )
    w = train(cfg, progress=False)
    rec = json.loads(w.with_name("edsr_x2.json").read_text())["recipe"]
    assert rec["pairs"] == [str(pairs)] and rec["n_train_images"] == 2
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(pairs / "p0_hr.png")
    with pytest.raises(InputError, match="size"):
        OnlinePatches.from_pairs([pairs], 2, 4)
