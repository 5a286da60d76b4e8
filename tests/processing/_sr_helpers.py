"""Shared fixtures for the stack (super-resolution) tests: small bursts."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """A detailed, photo-like sRGB test image (no shared data needed)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32)
    for s in (2, 4, 8, 16, 32):
        n = rng.random((size // s + 2, size // s + 2, 3)).astype(np.float32)
        img += (
            cv2.resize(n, (size + 2 * s, size + 2 * s), interpolation=cv2.INTER_CUBIC)[s : s + size, s : s + size] / 5
        )
    yy, xx = np.mgrid[0:size, 0:size]
    img += 0.25 * (np.sin(xx / 3.0 + yy / 7.0) > 0)[..., None]
    img = (img - img.min()) / (img.max() - img.min())
    return (0.05 + 0.9 * img).astype(np.float32)


PHOTO = SHARED / "photos" / "saw_2725x2225.jpg"


def real_photo(size: int = 256) -> np.ndarray:
    """The centre of a real photo; the test skips where ../shared/data is absent (its
    figures hold for photographs, not for the synthetic texture gt_image falls back to)."""
    import pytest

    if not PHOTO.exists():
        pytest.skip(f"needs the real photo {PHOTO}")
    return gt_image(size)


@lru_cache(maxsize=4)
def gt_image(size: int = 256) -> np.ndarray:
    photo = PHOTO
    if photo.exists():
        import cv2

        from processing.io.imageio import load_image

        img, _ = load_image(photo)
        # Reduced 2x: the photo is soft at 100 %; the reduction makes it
        # sharp at pixel level, which is what SR tests need.
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        return img[(h - size) // 2 : (h + size) // 2, (w - size) // 2 : (w + size) // 2].copy()
    return texture(size)
