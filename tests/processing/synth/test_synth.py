import json

import numpy as np

from processing.synth.synth import make_burst, smooth_flow, write_burst

from .._sr_helpers import texture


def test_burst_shapes_noise_and_truth(tmp_path):
    gt = texture(128)
    b = make_burst(gt, 3, 2.0, seed=1, noise=0.0, shift_px=5)
    assert len(b.frames) == 3 and b.frames[0].shape == (64, 64, 3)
    assert np.allclose(b.transforms[0], np.eye(3))
    # Frame 0 is the GT integrated over 2x2 pixels (area sampling, linear).
    from processing.stack.develop import linear_to_srgb, srgb_to_linear

    box = linear_to_srgb(srgb_to_linear(gt).reshape(64, 2, 64, 2, 3).mean(axis=(1, 3)))
    assert np.abs(b.frames[0][4:-4, 4:-4] - box[4:-4, 4:-4]).mean() < 0.01
    noisy = make_burst(gt, 1, 2.0, seed=1, noise=0.02)
    assert np.abs(noisy.frames[0] - b.frames[0]).mean() > 0.005
    write_burst(b, tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["frames"] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert (tmp_path / "truth" / "gt.png").exists() and len(truth["transforms"]) == 3


def test_smooth_flow_rms():
    f = smooth_flow(np.random.default_rng(0), 64, 48, 1.5)
    assert f.shape == (48, 64, 2)
    assert abs(float(np.sqrt((f**2).sum(axis=2).mean())) - 1.5) < 1e-3
