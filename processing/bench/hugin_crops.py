"""Side-by-side crops of Terapan's and Hugin's results where they differ most.

python -m processing.bench.hugin_crops OURS.tif HUGIN_WORK_DIR OUT.png [--n 3] [--size 360]

Hugin's result is resampled into Terapan's frame (the sphere rotation fitted
by stitch_measures.misalignment), both at Terapan's resolution; the windows
are those with the largest mean difference (after one gain per channel) on
pixels both cover. Left: Terapan, right: Hugin.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from processing.stitch.pipeline import layout_from_json
from processing.stitch.project import canvas_to_rays

from .hugin import pixel_rays as hugin_rays
from .hugin import read_pto, read_rgba_tiff, tiff_offset
from .stitch_measures import canvas_rays, misalignment, scaled_rays, shrink, to_float


def _hugin_pixels(pto, rays: np.ndarray, ox: int, oy: int) -> tuple[np.ndarray, np.ndarray]:
    """World rays (Hugin's frame) -> pixel of Hugin's cropped result (longitude-based projections)."""
    hf = math.radians(pto.hfov)
    s = pto.width / hf
    lon = np.arctan2(rays[..., 0], rays[..., 2])
    lat = np.arctan2(-rays[..., 1], np.hypot(rays[..., 0], rays[..., 2]))
    t = lat if pto.projection == 2 else np.tan(lat)
    x = lon * s + (pto.width - 1) / 2 - ox
    y = (pto.height - 1) / 2 - t * s - oy
    return x.astype(np.float32), y.astype(np.float32)


def crops(ours: Path, hugin_dir: Path, out: Path, n: int = 3, size: int = 360) -> list[tuple[int, int]]:
    import tifffile

    layout = layout_from_json(Path(str(ours) + ".layout.json"))
    cv = layout.canvas
    a = tifffile.imread(ours)
    o_rgb, o_alpha = to_float(a)
    pto = read_pto(hugin_dir / "project.pto")
    h_rgb, h_alpha = read_rgba_tiff(hugin_dir / "result.tif")
    ox, oy = tiff_offset(hugin_dir / "result.tif")
    pto.crop = (ox, ox + h_alpha.shape[1], oy, oy + h_alpha.shape[0])
    # rotation between the frames, on shrunk copies
    m = min(1.0, math.sqrt(6e6 / (cv.width * cv.height)))
    sa = shrink(a, (round(cv.width * m), round(cv.height * m)))
    mh = sa.shape[1] / cv.width * cv.su / (pto.width / math.radians(pto.hfov))
    hs = cv2.resize(
        np.dstack([h_rgb, h_alpha]),
        (max(1, round(h_alpha.shape[1] * mh)), max(1, round(h_alpha.shape[0] * mh))),
        interpolation=cv2.INTER_AREA,
    )
    Q: list = []
    sr, sal = to_float((sa).astype(a.dtype))
    misalignment(
        sr,
        sal,
        scaled_rays(canvas_rays(cv), sa.shape[1] / cv.width),
        hs[..., :3],
        hs[..., 3],
        scaled_rays(lambda x, y: hugin_rays(pto, x, y), hs.shape[1] / h_alpha.shape[1]),
        rotation_out=Q,
    )
    R = Q[0]  # hugin ray -> our ray
    # Hugin resampled into our frame, on the shrunk grid, to find the windows
    ys, xs = np.mgrid[0 : sa.shape[0], 0 : sa.shape[1]].astype(np.float64)
    rays, ok = canvas_to_rays((xs + 0.5) / m - 0.5, (ys + 0.5) / m - 0.5, cv)
    hx, hy = _hugin_pixels(pto, rays @ R, ox, oy)
    warped = cv2.remap(np.dstack([h_rgb, h_alpha]), hx, hy, cv2.INTER_LINEAR, borderValue=0)
    both = (sal > 0.99) & (warped[..., 3] > 0.99) & ok
    gain = np.array([np.median(warped[..., c][both]) / max(np.median(sr[..., c][both]), 1e-6) for c in range(3)])
    diff = np.where(both, np.abs(sr * gain - warped[..., :3]).mean(2), 0).astype(np.float32)
    win = max(8, round(size * m))
    score = cv2.blur(diff, (win, win)) * (cv2.blur(both.astype(np.float32), (win, win)) > 0.98)
    picks = []
    for _ in range(n):
        y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[y, x] <= 0:
            break
        picks.append((int((x + 0.5) / m), int((y + 0.5) / m)))
        score[max(0, y - win) : y + win, max(0, x - win) : x + win] = 0
    rows = []
    for cx, cy in picks:
        x0 = int(np.clip(cx - size // 2, 0, cv.width - size))
        y0 = int(np.clip(cy - size // 2, 0, cv.height - size))
        mine = np.clip(o_rgb[y0 : y0 + size, x0 : x0 + size], 0, 1)
        gy, gx = np.mgrid[y0 : y0 + size, x0 : x0 + size].astype(np.float64)
        r, _ = canvas_to_rays(gx, gy, cv)
        hx, hy = _hugin_pixels(pto, r @ R, ox, oy)
        theirs = cv2.remap(h_rgb, hx, hy, cv2.INTER_LINEAR, borderValue=0)
        gap = np.ones((size, 8, 3), np.float32)
        rows.append(np.hstack([mine, gap, theirs]))
    img = np.vstack([np.vstack([r, np.ones((8, r.shape[1], 3), np.float32)]) for r in rows])
    cv2.imwrite(str(out), (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    return picks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("hugin_dir")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--size", type=int, default=360)
    a = ap.parse_args()
    print(crops(Path(a.ours), Path(a.hugin_dir), Path(a.out), a.n, a.size))


if __name__ == "__main__":
    main()
