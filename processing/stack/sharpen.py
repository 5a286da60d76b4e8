"""Stage 10, sharpen: unsharp mask with radius, amount and threshold."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import cv2
import numpy as np

from ..io.params import StageParams


@dataclasses.dataclass(frozen=True)
class SharpenParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "sharpen"

    radius: float = 1.0  # Gaussian sigma, output px
    amount: float = 0.0  # 0 disables (fusion already deconvolves; this is taste)
    threshold: float = 0.0  # detail smaller than this (0..1) is left alone

    def __post_init__(self) -> None:
        if self.radius <= 0 or self.amount < 0 or self.threshold < 0:
            raise ValueError("sharpen: radius > 0, amount >= 0, threshold >= 0")


def unsharp_mask(img: np.ndarray, params: SharpenParams | None = None) -> np.ndarray:
    """img + amount * (img - blur(img)), only where |detail| > threshold.

    The threshold is soft (a linear ramp over one threshold width) so that it
    does not leave hard steps where detail crosses it.
    """
    p = params or SharpenParams()
    if p.amount == 0:
        return img
    img = img.astype(np.float32, copy=False)
    blur = cv2.GaussianBlur(img, (0, 0), p.radius, borderType=cv2.BORDER_REFLECT)
    detail = img - blur
    if p.threshold > 0:
        mag = np.abs(detail)
        gate = np.clip((mag - p.threshold) / p.threshold, 0.0, 1.0)
        detail = detail * gate
    return np.clip(img + p.amount * detail, 0.0, 1.0)
