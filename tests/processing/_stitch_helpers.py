"""Shared helpers for the stitching tests (synthetic textures, data paths)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Feature-rich float RGB texture (blurred noise + blobs), exactly
    periodic in x (w a multiple of 4), so a 360-degree wrap has no seam."""
    rng = np.random.default_rng(seed)
    bw = w // 4
    base = rng.random((h // 4 + 1, bw, 3)).astype(np.float32)
    ext = np.concatenate([base[:, -8:], base, base[:, :8]], 1)  # wrap before resizing
    big = cv2.resize(ext, ((bw + 16) * 4, (h // 4 + 1) * 4), interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(big[:h, 32 : 32 + w])
    for _ in range(w * h // 3000):
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(3, 12))
        col = tuple(float(x) for x in rng.random(3))
        for sx in (-w, 0, w):  # blobs cut by an edge continue on the other side
            cv2.circle(img, (cx + sx, cy), r, col, -1)
    img = np.concatenate([img[:, -8:], img, img[:, :8]], 1)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)[:, 8:-8]
    return np.clip(img, 0, 1)
