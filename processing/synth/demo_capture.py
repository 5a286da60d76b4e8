"""A synthetic 360-degree capture for the demo, made from real photographs.

A strip of real photos (scikit-image's bundled ones, so no download is needed)
is wrapped round a cylinder (synth_pano.make_cylinder_views); N perspective
views are cut from it at evenly spaced yaws with overlap, and each view becomes a handheld burst
(processing.synth.synth.make_burst: jitter, rotation, turbulence, noise, pixel
integration). The manifest records each stack's frames and approximate yaw
and focal length, as a rig would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from ..io.params import StageParams
from .synth import make_burst, write_burst
from .synth_pano import make_cylinder_views

PHOTOS = ("coffee", "rocket", "astronaut", "chelsea", "immunohistochemistry", "retina")


@dataclass(frozen=True)
class DemoCaptureParams(StageParams):
    STAGE: ClassVar[str] = "demo_capture"
    VERSION: ClassVar[int] = 1
    n_stacks: int = 12
    n_frames: int = 6
    view_height: int = 360
    overlap: float = 0.35  # fraction of a view shared with each neighbour
    scale: float = 2.0
    seed: int = 1
    shift_px: float = 12.0
    rotation_deg: float = 0.7
    turbulence_px: float = 0.3
    noise: float = 0.01


def photo_strip(height: int) -> np.ndarray:
    """Real photos side by side, float32 sRGB in [0, 1], HEIGHT px tall."""
    import skimage.data

    parts = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = img[:, :, :3].astype(np.float32) / 255.0
        w = round(img.shape[1] * height / img.shape[0])
        parts.append(cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA))
    return np.concatenate(parts, axis=1)


def build_capture(
    root: str | Path,
    params: DemoCaptureParams | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Write bursts under ROOT/<stack>/ and ROOT/manifest.json; return the manifest."""
    p = params or DemoCaptureParams()
    root = Path(root)
    # Strip tall enough for the views' vertical field of view on the cylinder.
    strip = photo_strip(int(p.view_height * 1.35))
    sw = strip.shape[1]
    views, yaws, focal = make_cylinder_views(strip, p.n_stacks, p.overlap, view_height=p.view_height)
    hfov = math.degrees(2 * math.atan(views[0].shape[1] / 2 / focal))
    stacks = []
    for i, (gt, yaw) in enumerate(zip(views, yaws, strict=True)):
        gt = np.clip(gt, 0.0, 1.0)
        burst = make_burst(
            gt,
            p.n_frames,
            p.scale,
            seed=p.seed * 1000 + i,
            shift_px=p.shift_px,
            rotation_deg=p.rotation_deg,
            turbulence_px=p.turbulence_px,
            noise=p.noise,
        )
        name = f"stack_{i:03d}"
        out = write_burst(burst, root / name, fmt="png")
        frames = sorted(str(x) for x in out.glob("frame_*.png"))
        fh, fw = burst.frames[0].shape[:2]
        # Yaw is given with rig pointing error, as a real rig's log would be.
        rng = np.random.default_rng(p.seed + i)
        stacks.append(
            {
                "name": name,
                "yaw": float(yaw + rng.normal(0, 0.5)),
                "pitch": 0.0,
                "focal_px": float(focal / p.scale),
                "width": fw,
                "height": fh,
                "frames": frames,
            }
        )
        if progress:
            progress((i + 1) / p.n_stacks, f"burst {i + 1}/{p.n_stacks}")
    manifest = {
        "source": "scikit-image photos (" + ", ".join(PHOTOS) + ")",
        "scale": p.scale,
        "circumference_px": sw,
        "hfov_deg": hfov,
        "params": p.to_dict(),
        "stacks": stacks,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
