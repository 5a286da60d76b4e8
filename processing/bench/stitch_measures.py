"""Tool-agnostic measures of a stitched panorama, for comparing Terapan with Hugin.

Every measure takes the result and the tool's own remapped sources ("layers":
each input as the tool warped and exposed it, before blending), all at one
angular resolution, so neither tool is judged with the other's geometry.

- clipped fraction: share of covered pixels with every channel >= 254/255
  (what a photographer sees as blown-out white), against the same share over
  all input pixels.
- ghost measure: in the overlaps, per pixel, the smallest difference between
  the result and any source covering it (mean absolute RGB difference). A
  seam that takes one source where the sources disagree gives ~0 there; a
  blend of two disagreeing sources (a double edge, a half-transparent
  person) is at least half their disagreement away from both. Reported as
  the share of overlap pixels where the sources disagree (> 0.1) and the
  result is farther than 0.05 from all of them ("ghost share"), and the 99th
  percentile of that smallest difference over those pixels. Away from the
  seams a result equals one source, so the measure concentrates on the seams
  without needing to know where a tool put them.
- holes: share of pixels some source covers that the result leaves empty.
- misalignment: SIFT matches between the two results, each pixel turned into
  a ray by its tool's projection, one sphere rotation fitted (the tools
  choose different yaw and horizon), the residual angles (RMS and median).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from processing.stitch.project import Camera, Canvas, block_map, footprint

RayFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

CLIP = 254
#: sources disagreeing by more than this (mean |RGB| in [0, 1]) may show as a double image
DISAGREE = 0.1
#: a result pixel farther than this from every covering source is a blend of disagreeing ones
GHOST = 0.05


def clipped_fraction(rgba: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of pixels (inside ``mask``) whose every channel is >= 254/255 (8 bit) or the 16-bit equivalent."""
    thr = CLIP if rgba.dtype == np.uint8 else CLIP * 257
    clip = np.ones(rgba.shape[:2], bool)
    for c in range(3):
        clip &= rgba[..., c] >= thr
    if mask is None:
        return float(clip.mean())
    n = int(mask.sum())
    return float((clip & mask).sum() / max(n, 1))


def inputs_clipped_fraction(files: Iterable[Path]) -> float:
    """Clipped share over all pixels of the input photos."""
    from processing.io.imageio import load_image_int

    clipped = total = 0
    for f in files:
        a, _ = load_image_int(f)
        total += a.shape[0] * a.shape[1]
        clipped += round(clipped_fraction(a) * a.shape[0] * a.shape[1])
    return clipped / max(total, 1)


def covered(alpha: np.ndarray) -> np.ndarray:
    return alpha >= (254 if alpha.dtype == np.uint8 else 254 * 257)


def to_float(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mx = 255.0 if rgba.dtype == np.uint8 else 65535.0
    return rgba[..., :3].astype(np.float32) / mx, rgba[..., 3].astype(np.float32) / mx


def shrink(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average an RGBA image to (width, height) (in 2048-row bands: cv2's limits)."""
    if (rgba.shape[1], rgba.shape[0]) == size:
        return rgba
    return cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------- projections


def canvas_rays(canvas: Canvas) -> RayFn:
    """Pixel (x, y) of a Terapan canvas -> world ray (any projection)."""
    from processing.stitch.project import canvas_to_rays

    return lambda xs, ys: canvas_to_rays(np.asarray(xs, np.float64), np.asarray(ys, np.float64), canvas)[0]


def scaled_rays(rays: RayFn, m: float) -> RayFn:
    """Rays of an image shrunk by ``m`` from the one ``rays`` describes."""
    return lambda xs, ys: rays((np.asarray(xs) + 0.5) / m - 0.5, (np.asarray(ys) + 0.5) / m - 0.5)


# ----------------------------------------------------------- layers


def shift_scaled(
    rgb: np.ndarray, valid: np.ndarray, x: float, y: float, m: float
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """A layer at full-resolution offset (x, y) shrunk by m and placed on the
    shrunk grid: (x0, y0, rgb, valid) with integer offsets."""
    h, w = valid.shape
    size = (max(1, round(w * m)), max(1, round(h * m)))
    r = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    v = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    # resized pixel i sits at shrunk coordinate i + x m (pixel centres)
    fx, fy = x * m, y * m
    ix, iy = math.floor(fx), math.floor(fy)
    M = np.float32([[1, 0, fx - ix], [0, 1, fy - iy]])
    out = (size[0] + 1, size[1] + 1)
    r = cv2.warpAffine(r, M, out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    v = cv2.warpAffine(v, M, out, flags=cv2.INTER_LINEAR, borderValue=0)
    return ix, iy, r, v > 0.99


def terapan_layers(layout, m: float) -> tuple[Canvas, Iterable[tuple[int, int, np.ndarray, np.ndarray]]]:
    """Each source warped onto Terapan's canvas shrunk by ``m``, with the
    layout's gains and vignetting, as the renderer exposes it."""
    from processing.io.imageio import load_image_int
    from processing.stitch.blend import vignetting_gain
    from processing.stitch.response import Response, encode

    pc = layout.canvas.scaled(m)

    def gen():
        for L in layout.layers:
            src, _ = load_image_int(L.path)
            cam: Camera = L.cam
            t = min(1.0, pc.su / cam.focal)
            if t < 1.0:
                size = (max(2, round(cam.width * t)), max(2, round(cam.height * t)))
                src = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
            th, tw = src.shape[:2]
            tcam = cam.resized(tw, th)
            x0, y0, x1, y1 = footprint(cam, pc)
            if x1 <= x0 or y1 <= y0:
                continue
            mx, my, valid = block_map(tcam, pc, x0, y0, x1 - x0, y1 - y0)
            img = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            img /= 255.0 if src.dtype == np.uint8 else 65535.0
            vg = vignetting_gain(mx, my, tcam, L.vignetting) if L.vignetting[0] or L.vignetting[1] else None
            if L.response:
                # as blend._sample: gain and vignetting in linear light, re-encoded
                lin = Response.from_list(L.response).linear(img) * np.asarray(L.gain)
                img = encode(lin if vg is None else lin * vg[:, :, None], L.output or None).astype(np.float32)
            else:
                img *= np.asarray(L.gain, np.float32)
                if vg is not None:
                    img *= vg[:, :, None]
            yield x0, y0, np.clip(img, 0, 1), valid

    return pc, gen()


def hugin_layers(
    layers: Iterable[Path], crop: tuple[int, int], m: float
) -> Iterable[tuple[int, int, np.ndarray, np.ndarray]]:
    """nona's remapped layers shrunk by ``m``, in the cropped result's frame."""
    from .hugin import read_rgba_tiff, tiff_offset

    for p in layers:
        rgb, alpha = read_rgba_tiff(p)
        ox, oy = tiff_offset(p)
        yield shift_scaled(rgb, alpha > 0.999, ox - crop[0], oy - crop[1], m)


# ----------------------------------------------------------- measures


def seam_measures(
    out_rgb: np.ndarray,
    out_alpha: np.ndarray,
    layers: Iterable[tuple[int, int, np.ndarray, np.ndarray]],
    wrap: bool = False,
) -> dict[str, float]:
    """Ghost measure and holes (module docstring) of a result against its layers."""
    H, W = out_alpha.shape
    cnt = np.zeros((H, W), np.uint8)
    mind = np.full((H, W), np.inf, np.float32)
    lo = np.full((H, W, 3), np.inf, np.float32)
    hi = np.full((H, W, 3), -np.inf, np.float32)
    k3 = np.ones((3, 3), np.uint8)
    for x0, y0, img, valid in layers:
        # one pixel off each layer's border: edge pixels are interpolated with nothing
        valid = cv2.erode(valid.astype(np.uint8), k3).astype(bool)
        h, w = valid.shape
        rows = np.arange(y0, y0 + h)
        cols = np.arange(x0, x0 + w)
        rk = (rows >= 0) & (rows < H)
        ck = np.ones(w, bool) if wrap else (cols >= 0) & (cols < W)
        if wrap:
            cols = np.mod(cols, W)
        rows, cols = rows[rk], cols[ck]
        img, valid = img[rk][:, ck], valid[rk][:, ck]
        if not valid.any():
            continue
        ix = np.ix_(rows, cols)
        d = np.abs(out_rgb[ix] - img).mean(2)
        md = mind[ix]
        mind[ix] = np.where(valid, np.minimum(md, d), md)
        cnt[ix] += valid
        lo[ix] = np.where(valid[..., None], np.minimum(lo[ix], img), lo[ix])
        hi[ix] = np.where(valid[..., None], np.maximum(hi[ix], img), hi[ix])
    inside = out_alpha > 0.99
    overlap = inside & (cnt >= 2)
    spread = np.where(cnt[..., None] >= 2, hi - lo, 0.0).max(2)
    disagree = overlap & (spread > DISAGREE)
    ghost = disagree & (mind > GHOST)
    n_ov = int(overlap.sum())
    holes = (cnt >= 1) & (out_alpha < 0.5)
    return {
        "overlap_px": n_ov,
        "disagree_share": round(float(disagree.sum() / max(n_ov, 1)), 4),
        "ghost_share": round(float(ghost.sum() / max(n_ov, 1)), 5),
        "ghost_min_diff_p99": round(float(np.percentile(mind[disagree], 99)) if disagree.any() else 0.0, 4),
        "holes_share": round(float(holes.sum() / max(int((cnt >= 1).sum()), 1)), 5),
    }


def _sift(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sift = cv2.SIFT_create(nfeatures=8000)
    g = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) * 255).astype(np.uint8)
    mask = cv2.erode((alpha > 0.99).astype(np.uint8), np.ones((7, 7), np.uint8))
    k, d = sift.detectAndCompute(g, mask)
    if d is None:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    d = d / np.maximum(d.sum(1, keepdims=True), 1e-7)
    return np.array([p.pt for p in k]), np.sqrt(d).astype(np.float32)


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation Q minimising |Q a_i - b_i|."""
    u, _s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def misalignment(
    a_rgb: np.ndarray,
    a_alpha: np.ndarray,
    a_rays: RayFn,
    b_rgb: np.ndarray,
    b_alpha: np.ndarray,
    b_rays: RayFn,
    rotation_out: list | None = None,
) -> dict[str, float]:
    """Residual angles between matched points of two results after one
    rotation Q (b's rays -> a's; appended to ``rotation_out`` if given)."""
    pa, da = _sift(a_rgb, a_alpha)
    pb, db = _sift(b_rgb, b_alpha)
    if len(pa) < 10 or len(pb) < 10:
        return {"matches": 0}
    bf = cv2.BFMatcher(cv2.NORM_L2)
    m1 = bf.knnMatch(da, db, k=2)
    m2 = {m[0].queryIdx: m[0].trainIdx for m in bf.knnMatch(db, da, k=1) if m}
    pairs = [
        (m[0].queryIdx, m[0].trainIdx)
        for m in m1
        if len(m) == 2 and m[0].distance < 0.75 * m[1].distance and m2.get(m[0].trainIdx) == m[0].queryIdx
    ]
    if len(pairs) < 10:
        return {"matches": len(pairs)}
    ia, ib = np.array(pairs).T
    ra = a_rays(pa[ia, 0], pa[ia, 1])
    rb = b_rays(pb[ib, 0], pb[ib, 1])
    keep = np.ones(len(ia), bool)
    ang = np.zeros(len(ia))
    for _ in range(6):
        Q = _kabsch(rb[keep], ra[keep])
        ang = np.arccos(np.clip(((rb @ Q.T) * ra).sum(1), -1, 1))
        keep = ang < max(3 * np.median(ang[keep]), 1e-4)
    deg = np.degrees(ang[keep])
    if rotation_out is not None:
        rotation_out.append(Q)
    return {
        "matches": int(keep.sum()),
        "rms_deg": round(float(np.sqrt(np.mean(deg**2))), 4),
        "median_deg": round(float(np.median(deg)), 4),
        "frame_rotation_deg": round(math.degrees(math.acos(np.clip((np.trace(Q) - 1) / 2, -1, 1))), 2),
    }
