"""The demo's capture: handheld bursts of a procedural 360-degree landscape (scene.py).

N views at evenly spaced yaws (with overlap) are cut from the landscape on a
cylinder, each generated from only the slab of the strip it sees; each view
becomes a burst (synth.make_burst: jitter, rotation, turbulence, noise, pixel
integration) at 1/scale of the view's resolution, so the stacks' super-
resolution brings the detail back. The manifest has the same shape as
demo_capture's (frames, approximate yaw with rig error, focal length).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from ..io.params import StageParams
from .scene import render_slab, strip_size


@dataclass(frozen=True)
class SceneCaptureParams(StageParams):
    STAGE: ClassVar[str] = "scene_capture"
    VERSION: ClassVar[int] = 1
    gigapixels: float = 0.2  # of the panorama's ground truth
    aspect: float = 20.0  # width / height of the panorama
    n_stacks: int = 16
    n_frames: int = 4
    overlap: float = 0.3
    scale: float = 2.0
    seed: int = 1
    shift_px: float = 10.0
    rotation_deg: float = 0.5
    turbulence_px: float = 0.3
    noise: float = 0.008
    workers: int = 2


def geometry(p: SceneCaptureParams) -> dict[str, Any]:
    width, vh = strip_size(p.gigapixels, p.aspect)
    f = width / (2 * math.pi)
    hfov = 2 * math.pi / p.n_stacks * (1 + p.overlap)
    vw = round(2 * f * math.tan(hfov / 2) / 8) * 8
    vh = int(vh) // 8 * 8
    return {"width": width, "strip_height": int(vh * 1.08) + 16, "view": (vw, vh), "focal": f}


def view_ground_truth(p: SceneCaptureParams, k: int) -> tuple[np.ndarray, float]:
    """Ground truth of view K (float32 sRGB) and its yaw in degrees."""
    g = geometry(p)
    W, SH, (vw, vh), f = g["width"], g["strip_height"], g["view"], g["focal"]
    yaw = k * 360.0 / p.n_stacks
    xx = ((np.arange(vw, dtype=np.float64) - (vw - 1) / 2) / f)[None, :]
    yy = ((np.arange(vh, dtype=np.float64) - (vh - 1) / 2) / f)[:, None]
    a = math.radians(yaw)
    # camera rays rotated by the yaw about the vertical axis: the longitude depends on the
    # column only, the height on the cylinder is the row's times a column's factor
    vx, vz = xx * math.cos(a) + math.sin(a), -xx * math.sin(a) + math.cos(a)
    lon = np.arctan2(vx, vz)
    # unwrapped round the view's centre so a view across the seam stays one slab
    lon = a + np.mod(lon - a + math.pi, 2 * math.pi) - math.pi
    t = yy / np.hypot(vx, vz)
    mx = np.broadcast_to(lon / (2 * math.pi) * W + W / 2 - 0.5, (vh, vw))
    my = t * f + (SH - 1) / 2
    x0, x1 = math.floor(mx.min()) - 2, math.ceil(mx.max()) + 3
    y0, y1 = max(0, math.floor(my.min()) - 2), min(SH, math.ceil(my.max()) + 3)
    slab = render_slab((x0, y0, x1, y1), W, SH, p.seed)
    view = cv2.remap(slab, (mx - x0).astype(np.float32), (my - y0).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    return np.clip(view, 0, 1), yaw


def quick_burst(gt: np.ndarray, p: SceneCaptureParams, seed: int) -> list[np.ndarray]:
    """Handheld frames at 1/scale: each a random shift and rotation of the scene, integrated
    over the pixel (a box blur of the scale's width before one resampling), with noise;
    8-bit sRGB. Frame 0 is the reference (no motion). A cheaper stand-in for make_burst
    (no turbulence, no perspective), fast enough for a demo of hundreds of megapixels."""
    rng = np.random.default_rng(seed)
    s = p.scale
    h, w = gt.shape[:2]
    fw, fh = int(w / s), int(h / s)
    k = max(1, round(s))
    box = cv2.blur(gt, (k, k)) if k > 1 else gt
    out = []
    for i in range(p.n_frames):
        dx, dy = (0.0, 0.0) if i == 0 else tuple(rng.uniform(-p.shift_px, p.shift_px, 2))
        ang = 0.0 if i == 0 else float(rng.uniform(-p.rotation_deg, p.rotation_deg))
        # frame pixel (u, v) sees scene pixel s * (u + 0.5) - 0.5, moved by the hand
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
        m[:, 2] += (dx * s, dy * s)
        sc = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
        full = np.vstack([m, [0, 0, 1]]) @ sc
        fr = cv2.warpAffine(box, full[:2], (fw, fh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        fr = fr + rng.normal(0.0, p.noise, fr.shape).astype(np.float32)
        out.append(np.clip(fr * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return out


def _one(args: tuple[SceneCaptureParams, int, str]) -> dict[str, Any]:
    p, k, root = args
    gt, yaw = view_ground_truth(p, k)
    frames = quick_burst(gt, p, seed=p.seed * 1000 + k)
    name = f"stack_{k:03d}"
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    for i, fr in enumerate(frames):
        cv2.imwrite(str(out / f"frame_{i:02d}.png"), fr[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    fh, fw = frames[0].shape[:2]
    rng = np.random.default_rng(p.seed + k)
    return {
        "name": name,
        "yaw": float(yaw + rng.normal(0, 0.3)),  # the rig's log, with its pointing error
        "pitch": 0.0,
        "focal_px": float(geometry(p)["focal"] / p.scale),
        "width": fw,
        "height": fh,
        "frames": sorted(str(x) for x in out.glob("frame_*.png")),
    }


def build_scene_capture(
    root: str | Path,
    params: SceneCaptureParams | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Write the bursts under ROOT/<stack>/ and ROOT/manifest.json; return the manifest."""
    p = params or SceneCaptureParams()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stacks: list[dict[str, Any]] = []
    jobs = [(p, k, str(root)) for k in range(p.n_stacks)]
    with ProcessPoolExecutor(max_workers=max(1, p.workers)) as ex:
        for st in ex.map(_one, jobs):
            stacks.append(st)
            if progress:
                progress(len(stacks) / p.n_stacks, f"burst {len(stacks)}/{p.n_stacks}")
    g = geometry(p)
    manifest = {
        "source": "a procedural 360-degree landscape (processing.synth.scene)",
        "scale": p.scale,
        "circumference_px": g["width"],
        "view": list(g["view"]),
        "params": p.to_dict(),
        "stacks": stacks,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
