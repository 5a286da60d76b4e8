"""The demo's procedural landscape: pixels that depend on absolute coordinates only (any
slab, any banding, across the 360-degree wrap), and bursts whose views overlap."""

from __future__ import annotations

import json

import numpy as np

from processing.synth.scene import BAND_ROWS, render_slab
from processing.synth.scene_capture import SceneCaptureParams, build_scene_capture, view_ground_truth

W, H = 8192, 700


def test_a_slab_is_the_same_pixels_wherever_it_starts() -> None:
    big = render_slab((1000, 0, 1600, H), W, H, seed=3)
    assert H > 2 * BAND_ROWS  # rendered in several bands
    part = render_slab((1210, 333, 1400, 601), W, H, seed=3)
    np.testing.assert_array_equal(part, big[333:601, 210:400])
    assert big.std() > 0.1  # sky, mountains, forest, town and lake, not a flat colour
    # detail at the finest scale: neighbouring pixels differ
    assert np.abs(np.diff(big, axis=1)).mean() > 0.01


def test_the_strip_wraps_at_360_degrees() -> None:
    across = render_slab((W - 40, 100, W + 40, 400), W, H, seed=1)
    start = render_slab((0, 100, 40, 400), W, H, seed=1)
    np.testing.assert_array_equal(across[:, 40:], start)


def test_capture_views_overlap_and_the_manifest_lists_every_frame(tmp_path) -> None:
    p = SceneCaptureParams(gigapixels=0.01, aspect=12.0, n_stacks=6, n_frames=2, workers=1)
    a, yaw_a = view_ground_truth(p, 0)
    b, yaw_b = view_ground_truth(p, 1)
    assert yaw_b - yaw_a == 60.0 and a.shape == b.shape
    m = build_scene_capture(tmp_path, p)
    assert len(m["stacks"]) == 6 and all(len(s["frames"]) == 2 for s in m["stacks"])
    assert json.loads((tmp_path / "manifest.json").read_text())["stacks"][0]["name"] == "stack_000"
    # frames are at 1/scale of the ground truth
    assert m["stacks"][0]["width"] == round(a.shape[1] / p.scale)
