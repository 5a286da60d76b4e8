import cv2
import numpy as np

from processing.stack.flow import FlowParams, compute_flow

from .._sr_helpers import texture


def test_flow_recovers_smooth_shift_and_is_clamped():
    g = texture(192).mean(axis=2)
    # aligned(p + f) = master(p) with f = (0.8, -0.5): aligned is master shifted.
    m = np.float32([[1, 0, 0.8], [0, 1, -0.5]])
    aligned = cv2.warpAffine(g, m, (192, 192), borderMode=cv2.BORDER_REFLECT)
    ff = compute_flow(g, aligned, FlowParams(smooth_px=8))
    assert ff is not None
    fx, fy = ff.sample(np.array([[96.0]], np.float32), np.array([[96.0]], np.float32))
    assert abs(float(fx[0, 0]) - 0.8) < 0.25 and abs(float(fy[0, 0]) + 0.5) < 0.25
    ff = compute_flow(g, aligned, FlowParams(smooth_px=8, max_px=0.3))
    assert np.sqrt((ff.field**2).sum(axis=2)).max() <= 0.3 + 1e-5
    assert compute_flow(g, aligned, FlowParams(method="none")) is None
