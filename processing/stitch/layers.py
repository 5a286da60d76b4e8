"""A separately shot sky merged into a finished ground panorama (the last step
of the Holmenkollen method), and sub-panoramas rendered apart merged into one.

``merge_sky_capture(composite, sky_files)``:
1. registers the sky images to the ground panorama: the ground images (from
   the composite's layout, their cameras as priors) and the sky images are
   registered together, then the joint solution is rotated onto the ground
   layout (Kabsch over the ground cameras), so the ground stays exactly
   where it was rendered;
2. matches the sky's exposure: gains among the sky images (overlaps), then
   one per-channel gain to the ground on the unclipped sky both show;
3. chooses the merge weights on a proxy canvas: the sky wins where the
   ground has no data and inside the ground's sky (bright / blue, smooth,
   connected to the top or the hole above the ground), and the transition
   runs inside that sky only, so the seam stays out of buildings;
4. writes the merged composite block by block (ground rows read back from
   the ground composite, the sky rendered from its own layout: one
   resampling per pixel) and, beside it, ``<out>.sky.json`` (the sky layout,
   gains) and ``<out>.sky.npy`` (the proxy weights), so
   ``remerge_sky_rect`` re-applies exactly the same sky after a partial
   re-render of the ground.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..io.atomic import atomic_path
from ..io.errors import InputError, ProcessingError
from ..io.imageio import load_image
from .blend import Layer, SourceCache, render_rect
from .exposure import overlap_stats, proxy_warp, solve_gains, thumbnail
from .pipeline import Layout, _quantize, layers_meeting_rows, layout_from_json, layout_to_json
from .project import Camera, Canvas, footprint, ypr_from_rotation
from .registration import Features, Placement, detect, exif_focal_px, kabsch, proxy_gray, register
from .sky import feather_weight, merge_layers

Progress = Callable[[str, int, int], None]
SKY_VERSION = 1
CLIP = 0.97  # samples at or above this are treated as clipped (no exposure evidence)
WELL_EXPOSED = 0.9  # above this a JPEG's tone curve bends: no exposure evidence
WB_LIMIT = 0.05  # the sky's white balance follows the ground's by at most this much
KNEE = 0.5  # highlight roll-off of an exposure-matched sky starts here


def tone_map(rgb: np.ndarray, scale: float, white: float, knee: float = KNEE) -> np.ndarray:
    """RGB x SCALE with the highlights rolled off so WHITE (the brightest
    content of the matched sky) maps to white: identity below KNEE (slope 1
    there), an extended Reinhard curve above, applied to the largest channel
    so hues are kept. WHITE <= 1: no roll-off needed."""
    v = rgb * np.float32(scale) if scale != 1.0 else rgb
    if white <= 1.0:
        return v
    m = v.max(axis=2)
    wx = (white - knee) / (1 - knee)
    x = np.maximum(m - knee, 0) / (1 - knee)
    fm = np.where(m > knee, knee + (1 - knee) * x * (1 + x / (wx * wx)) / (1 + x), m)
    return (v * (np.minimum(fm, 1.0) / np.maximum(m, 1e-9))[:, :, None]).astype(np.float32)


@dataclass(frozen=True)
class SkyMergeParams:
    proxy_mp: float = 0.5  # feature proxies
    nfeatures: int = 2000
    exposure_mp: float = 2.0  # proxy canvas for exposure and weights
    feather_deg: float = 1.5  # width of the transition inside the sky
    erode_deg: float = 0.2  # keep the transition this far from the sky's edge (buildings)
    border_deg: float = 4.0  # the cut along the ground's top border may run this deep into the ground
    min_inliers: int = 15


@dataclass
class SkyMerge:
    """What is stored beside a merged composite."""

    layout: Layout  # the sky images on the ground canvas (gains included)
    weights: np.ndarray  # float32 sky weight on the proxy canvas
    info: dict[str, Any] = field(default_factory=dict)


def sky_paths_for(composite: str | Path) -> tuple[Path, Path]:
    p = Path(composite)
    return p.with_name(p.name + ".sky.json"), p.with_name(p.name + ".sky.npy")


def ground_path_for(composite: str | Path) -> Path:
    """Where the ground alone is rendered before the sky is merged into COMPOSITE."""
    p = Path(composite)
    return p.with_name(f".{p.stem}.ground{p.suffix}")


def remove_ground(ground: str | Path) -> None:
    """Delete a ground-only render and its layout files (after the merge)."""
    g = Path(ground)
    for q in (g, g.with_name(g.name + ".layout.json"), g.with_name(g.name + ".layout.json.seams.npy")):
        q.unlink(missing_ok=True)


def has_sky(composite: str | Path) -> bool:
    j, w = sky_paths_for(composite)
    return j.is_file() and w.is_file()


def save_sky(sm: SkyMerge, composite: str | Path) -> None:
    jp, wp = sky_paths_for(composite)
    with atomic_path(wp) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.round(np.clip(sm.weights, 0, 1) * 65535).astype(np.uint16))
    d = {"version": SKY_VERSION, "layout": sm.layout.to_json(), "weights_file": wp.name, "info": sm.info}
    with atomic_path(jp) as tmp:
        tmp.write_text(json.dumps(d, indent=1))


def load_sky(composite: str | Path) -> SkyMerge:
    jp, wp = sky_paths_for(composite)
    if not jp.is_file() or not wp.is_file():
        raise InputError(composite, "no sky merge stored beside this composite")
    d = json.loads(jp.read_text())
    if d.get("version") != SKY_VERSION:
        raise InputError(jp, "unsupported sky merge version")
    w = np.load(wp, allow_pickle=False).astype(np.float32) / 65535.0
    return SkyMerge(layout_from_json(d["layout"]), w, d.get("info", {}))


# ------------------------------------------------------------------ registration


def _load(path: Path, proxy_mp: float, nfeatures: int, thumb_px: float) -> tuple[Features, float, np.ndarray]:
    img, info = load_image(path)
    g, f = proxy_gray(img, proxy_mp)
    feats = detect(g, f, info.width, info.height, nfeatures)
    feats.exif_focal = exif_focal_px(path, info.width, info.height)
    return feats, f, thumbnail(img, thumb_px)


def register_sky(
    ground: Layout,
    sky_files: Sequence[Path],
    sky_placements: dict[str, Placement] | None = None,
    params: SkyMergeParams | None = None,
    progress: Progress | None = None,
) -> tuple[dict[int, Camera], dict[int, str], dict[int, np.ndarray], float]:
    """Cameras of the sky images in the ground layout's world.

    Returns (cameras by sky index, dropped {sky index: reason}, sky
    thumbnails by index, rms px of the joint registration)."""
    params = params or SkyMergeParams()
    # the sky meets the top row of the ground: only those images are matched again
    tops = np.array([L.footprint[1] for L in ground.layers], np.float64)
    hmed = float(np.median([L.footprint[3] - L.footprint[1] for L in ground.layers]))
    top_row = [L for L, t in zip(ground.layers, tops, strict=True) if t <= tops.min() + hmed]
    ground = Layout(ground.canvas, top_row, ground.bands, ground.block)
    gpaths = [Path(L.path) for L in ground.layers]
    names = [f"g{k:05d}_{p.name}" for k, p in enumerate(gpaths)] + [
        f"s{k:05d}_{p.name}" for k, p in enumerate(sky_files)
    ]
    pri: dict[str, Placement] = {}
    for nm, L in zip(names, ground.layers, strict=False):
        y, p, r = ypr_from_rotation(L.cam.rot)
        pri[nm] = Placement(y, p, r, L.cam.focal)
    for k, p in enumerate(sky_files):
        sp = (sky_placements or {}).get(p.name)
        if sp is not None:
            pri[names[len(gpaths) + k]] = sp
    feats: list[Features | None] = []
    factors: list[float] = []
    thumbs: dict[int, np.ndarray] = {}
    allp = gpaths + list(sky_files)
    for k, p in enumerate(allp):
        try:
            ft, f, th = _load(p, params.proxy_mp, params.nfeatures, 0.25e6)
        except InputError:
            if k < len(gpaths):
                raise
            feats.append(None)
            factors.append(1.0)
            continue
        feats.append(ft)
        factors.append(f)
        if k >= len(gpaths):
            thumbs[k - len(gpaths)] = th
        if progress:
            progress("sky features", k + 1, len(allp))
    reg = register(feats, names, pri, min_inliers=params.min_inliers, proxy_factors=factors, wave=False, progress=None)
    ng = len(gpaths)
    both = [k for k in range(ng) if k in reg.cameras]
    if len(both) < 1:
        raise ProcessingError("sky registration lost the ground images")
    A = np.concatenate([reg.cameras[k].rot for k in both], axis=1).T
    B = np.concatenate([ground.layers[k].cam.rot for k in both], axis=1).T
    Q = kabsch(A, B)  # joint world -> ground layout world
    fs = float(np.median([ground.layers[k].cam.focal / reg.cameras[k].focal for k in both]))
    cams: dict[int, Camera] = {}
    dropped: dict[int, str] = {}
    for j in range(len(sky_files)):
        k = ng + j
        if k in reg.cameras:
            c = reg.cameras[k]
            cams[j] = Camera.make(c.width, c.height, c.focal * fs, Q @ c.rot, c.k1, c.k2)
        else:
            dropped[j] = reg.dropped.get(k, "unreadable")
    return cams, dropped, thumbs, reg.rms_px


# ------------------------------------------------------------------ proxies


def read_proxy(path: str | Path, pc: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The composite at the proxy canvas's size: (rgb float32, alpha float32)."""
    import pyvips

    im = pyvips.Image.new_from_file(str(path))
    a = im.resize(pc.width / im.width, vscale=pc.height / im.height, kernel="linear")
    if (a.width, a.height) != (pc.width, pc.height):
        a = a.embed(0, 0, pc.width, pc.height, extend="copy")
    arr = np.asarray(a.numpy(), np.float32)
    mx = 255.0 if im.format == "uchar" else 65535.0
    arr = arr / mx
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 4:
        return arr[..., :3], arr[..., 3]
    return arr[..., :3], np.ones(arr.shape[:2], np.float32)


def _paste(warps: Sequence[Any], gains: np.ndarray, pc: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Proxy warps with gains on the proxy canvas, feathered (merge_layers)."""
    layers = []
    for w, g in zip(warps, gains, strict=True):
        if w is None:
            continue
        rgb = np.zeros((pc.height, pc.width, 3), np.float32)
        al = np.zeros((pc.height, pc.width), np.float32)
        x0, y0, x1, y1 = w.rect
        xs = np.arange(x0, x1) % pc.width if pc.wrap else np.arange(x0, x1)
        keep = (xs >= 0) & (xs < pc.width)
        ys = slice(max(0, y0), min(pc.height, y1))
        sub_img = w.img[ys.start - y0 : ys.stop - y0][:, keep] * np.asarray(g, np.float32)
        sub_val = w.valid[ys.start - y0 : ys.stop - y0][:, keep]
        rgb[ys, xs[keep]] = sub_img
        al[ys, xs[keep]] = sub_val
        layers.append((rgb, al))
    if not layers:
        return np.zeros((pc.height, pc.width, 3), np.float32), np.zeros((pc.height, pc.width), np.float32)
    return merge_layers(layers, feather=max(2.0, pc.width / 200), wrap=pc.wrap)


def ground_sky_mask(rgb: np.ndarray, alpha: np.ndarray, wrap: bool) -> np.ndarray:
    """Hard sky mask of the ground proxy: bright or blue, smooth, and connected
    to the top of the canvas or to the hole above the ground."""
    valid = alpha > 0.5
    # fill the holes from the covered neighbourhood first: the ground's own
    # border must not look like structure
    k = max(3, round(rgb.shape[0] / 60) | 1)
    vf = valid.astype(np.float32)
    den = cv2.blur(vf, (k, k))
    fill = cv2.blur(rgb * vf[:, :, None], (k, k)) / np.maximum(den, 1e-6)[:, :, None]
    img = np.clip(np.where(valid[:, :, None], rgb, fill), 0, 1).astype(np.float32)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    blue = np.clip((b - np.maximum(r, g)) * 6 + 0.5, 0, 1)
    # bright sky is white or grey (overcast, haze); a sunlit wall is tinted
    sat = (img.max(axis=2) - img.min(axis=2)) / np.maximum(img.max(axis=2), 1e-3)
    bright = np.clip((lum - 0.45) * 4, 0, 1) * np.clip((0.16 - sat) * 12, 0, 1)
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    ks = max(3, round(rgb.shape[0] / 150) | 1)
    grad = cv2.blur(np.hypot(gx, gy), (ks, ks))
    smooth = np.clip(1.0 - grad * 8, 0, 1)
    hard = ((np.maximum(blue, bright) * smooth > 0.5) & valid).astype(np.uint8)
    hard = cv2.morphologyEx(hard, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # cut thin leaks into walls
    # the hole above the ground: per column, the uncovered rows above the first covered one
    first = np.where(valid.any(0), valid.argmax(0), valid.shape[0])
    hole = np.arange(valid.shape[0])[:, None] < first[None, :]
    seeds = cv2.dilate(hole.astype(np.uint8), np.ones((2 * ks + 1, 2 * ks + 1), np.uint8)).astype(bool)
    seeds[0] = True
    n, lab = cv2.connectedComponents(hard, connectivity=4)
    top = set(np.unique(lab[seeds & (hard > 0)]).tolist()) - {0}
    if wrap and n > 1:  # components that meet across the 360-degree edge are one
        changed = True
        while changed:
            changed = False
            for a, bb in zip(lab[:, 0], lab[:, -1], strict=True):
                if a and bb and ((a in top) != (bb in top)):
                    top |= {int(a), int(bb)}
                    changed = True
    return np.isin(lab, list(top)) if top else np.zeros(hard.shape, bool)


def _inside_distance(mask: np.ndarray, wrap: bool, pad: int) -> np.ndarray:
    """Distance (px) of each mask pixel to the nearest non-mask pixel; the
    canvas's top and bottom edges are not borders, the 360-degree edge wraps."""
    m = mask.astype(np.uint8)
    p = min(pad, m.shape[1]) if wrap else 0
    if p:
        m = np.concatenate([m[:, -p:], m, m[:, :p]], axis=1)
    d = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    return d[:, p:-p] if p else d


def sky_weights(
    g_rgb: np.ndarray,
    g_alpha: np.ndarray,
    s_alpha: np.ndarray,
    pc: Canvas,
    params: SkyMergeParams,
    mask: np.ndarray | None = None,
    s_rgb: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(sky weight, ground sky mask) on the proxy canvas; MASK: the ground's
    sky (default: ground_sky_mask of the ground alone); S_RGB: the matched sky
    layer, to cut along the ground's top border where nothing differs."""
    feather = max(2.0, math.radians(params.feather_deg) * pc.sv)
    erode = max(1.5, math.radians(params.erode_deg) * pc.sv)
    pad = int(2 * feather + erode + 2)
    gval = g_alpha > 0.5
    sval = s_alpha > 0.5
    if mask is None:
        mask = ground_sky_mask(g_rgb, g_alpha, pc.wrap)
    inside = _inside_distance(mask, pc.wrap, pad)
    inner = np.clip((inside - erode) / feather, 0, 1)
    # where the ground's sky is clipped it holds nothing to keep: the sky
    # takes over right up to the eroded edge, by the local share of clipped
    # sky (so the switch is gradual where the clipping ends)
    k = int(feather) | 1
    m32 = mask.astype(np.float32)
    clipped = ((g_rgb.min(axis=2) >= CLIP) & mask).astype(np.float32)
    share = cv2.blur(clipped, (k, k)) / np.maximum(cv2.blur(m32, (k, k)), 1e-6)
    inner = np.maximum(inner, (inside > erode) * np.clip(share, 0, 1))
    # next to the ground's own border the sky takes over gradually
    border = 1.0 - np.clip(_inside_distance(gval, pc.wrap, pad) / feather, 0, 1)
    if s_rgb is not None:
        border = _border_cut(g_rgb, gval, s_rgb, sval, pc, params, border)
    w = np.maximum(inner, border)
    sky_edge = feather_weight(sval.astype(np.float32), feather / 2, pc.wrap)
    w = np.where(gval, w * sky_edge, sval.astype(np.float32))
    return w.astype(np.float32), mask


def _top_cut(cost: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per column, the row of a cut from left to right (moving at most one row
    between columns) of least summed cost inside ALLOWED; -1 where a column
    allows nothing (the path restarts after such a gap)."""
    h, w = cost.shape
    big = np.float32(1e9)
    c = np.where(allowed, cost, big).astype(np.float32)
    acc = c[:, 0].copy()
    back = np.zeros((h, w), np.int8)
    for x in range(1, w):
        if not allowed[:, x - 1].any():
            acc = np.zeros(h, np.float32)
        up = np.concatenate([[big], acc[:-1]])
        down = np.concatenate([acc[1:], [big]])
        stack = np.stack([up, acc, down])
        k = np.argmin(stack, axis=0)
        acc = c[:, x] + stack[k, np.arange(h)]
        back[:, x] = k.astype(np.int8) - 1
    cut = np.full(w, -1, np.int32)
    y = int(np.argmin(acc))
    for x in range(w - 1, -1, -1):
        if allowed[:, x].any():
            if not allowed[y, x]:
                y = int(np.argmin(np.where(allowed[:, x], c[:, x], big)))
            cut[x] = y
            y = int(np.clip(y + int(back[y, x]), 0, h - 1))
    return cut


def _border_cut(
    g_rgb: np.ndarray,
    gval: np.ndarray,
    s_rgb: np.ndarray,
    sval: np.ndarray,
    pc: Canvas,
    params: SkyMergeParams,
    fallback: np.ndarray,
) -> np.ndarray:
    """Sky weight near the ground's top border: where the sky capture also
    covers the first BORDER_DEG of the ground, the switch follows a cut of
    least structure and least difference (not straight through a wall);
    elsewhere FALLBACK (a ramp at the border)."""
    h, w = gval.shape
    depth = max(3, round(math.radians(params.border_deg) * pc.sv))
    first = np.where(gval.any(0), gval.argmax(0), h)
    rows = np.arange(h)[:, None]
    allowed = gval & sval & (rows >= first[None, :]) & (rows < first[None, :] + depth)
    if not allowed.any():
        return fallback
    lum_g = g_rgb @ np.float32([0.299, 0.587, 0.114])
    lum_s = np.clip(s_rgb, 0, 1) @ np.float32([0.299, 0.587, 0.114])

    def grad(a: np.ndarray) -> np.ndarray:
        return np.hypot(cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3))

    clipped = g_rgb.min(axis=2) >= CLIP  # nothing of the ground to keep there
    cost = grad(lum_g) + grad(lum_s) + 2.0 * np.abs(lum_g - lum_s)
    cost = np.where(clipped, 0.0, cost).astype(np.float32) + 1e-3
    cut = _top_cut(cost, allowed)
    # a wide, soft switch across the cut: exposure differences fade out
    f = max(2.0, math.radians(params.feather_deg) * pc.sv)
    ramp = np.clip((cut[None, :].astype(np.float32) - rows + 0.5) / f + 0.5, 0, 1)
    return np.where((cut >= 0)[None, :] & (rows < first[None, :] + depth + f), ramp, fallback).astype(np.float32)


def _match_gain(
    g: np.ndarray, ga: np.ndarray, s: np.ndarray, sa: np.ndarray, mask: np.ndarray
) -> tuple[list[float], int]:
    """Per-channel gain sky -> ground from the well-exposed pixels both show
    (preferably the ground's sky): log-ratio median, robust to misfits. Near
    white the camera's tone curve bends, so those pixels are left out; the
    white balance correction is limited to WB_LIMIT around the exposure gain
    (a tinted estimate must not tint the whole sky)."""
    ok = (g.max(2) < WELL_EXPOSED) & (s.max(2) < WELL_EXPOSED) & (g.min(2) > 0.02) & (s.min(2) > 0.02)
    both = (ga > 0.99) & (sa > 0.99) & ok
    sel = both & mask if (both & mask).sum() >= 200 else both
    n = int(sel.sum())
    if n < 50:
        return [1.0, 1.0, 1.0], n
    lr = np.median(np.log(g[sel]) - np.log(s[sel]), axis=0)
    ev = float(lr.mean())
    lr = np.clip(lr, ev - math.log1p(WB_LIMIT), ev + math.log1p(WB_LIMIT))
    return [float(np.exp(x)) for x in lr], n


def plan_sky_merge(
    composite: str | Path,
    sky_files: Sequence[str | Path],
    sky_placements: dict[str, Placement] | None = None,
    params: SkyMergeParams | None = None,
    progress: Progress | None = None,
) -> SkyMerge:
    """Register and exposure-match a sky capture to a ground composite and
    choose the merge weights (nothing is written)."""
    params = params or SkyMergeParams()
    composite = Path(composite)
    lp = composite.with_name(composite.name + ".layout.json")
    if not composite.is_file() or not lp.is_file():
        raise InputError(composite, "ground composite or its layout is missing")
    sky_files = [Path(p) for p in sky_files]
    if not sky_files:
        raise InputError("-", "no sky images")
    t0 = time.perf_counter()
    ground = layout_from_json(lp)
    cams, dropped, thumbs, rms = register_sky(ground, sky_files, sky_placements, params, progress)
    if not cams:
        raise InputError(sky_files[0].parent, "no sky image could be registered to the ground panorama")
    t1 = time.perf_counter()
    sm = plan_from_cameras(composite, ground, sky_files, cams, thumbs, params)
    sm.info.update(
        sky_images=len(sky_files),
        dropped=[{"file": sky_files[j].name, "reason": r} for j, r in sorted(dropped.items())],
        rms_px=round(rms, 3),
        seconds_register=round(t1 - t0, 2),
    )
    return sm


def plan_from_cameras(
    composite: Path,
    ground: Layout,
    sky_files: Sequence[Path],
    cams: dict[int, Camera],
    thumbs: dict[int, np.ndarray],
    params: SkyMergeParams,
) -> SkyMerge:
    """Exposure and weights for sky images already placed on the ground canvas."""
    cv = ground.canvas
    f = min(1.0, math.sqrt(params.exposure_mp * 1e6 / (cv.width * cv.height)))
    pc = cv.scaled(f)
    order = sorted(cams)
    warps = [proxy_warp(thumbs[j], cams[j], pc) if j in thumbs else None for j in order]
    if sum(w is not None for w in warps) > 1:
        N, Im = overlap_stats(warps, pc)
        rel = solve_gains(N, Im)
    else:
        rel = np.ones((len(order), 3))
    g_rgb, g_alpha = read_proxy(composite, pc)
    s_rgb, s_alpha = _paste(warps, rel, pc)
    g_mask = ground_sky_mask(g_rgb, g_alpha, pc.wrap)
    gain, n_px = _match_gain(g_rgb, g_alpha, s_rgb, s_alpha, g_mask)
    # gains above 1 would clip the sky the capture was made for: render at
    # gain / scale and roll the highlights off after (tone_map)
    full = np.asarray([[rel[i][c] * gain[c] for c in range(3)] for i in range(len(order))])
    scale = max(1.0, float(full.max()))
    sv = s_alpha > 0.99
    lit = (s_rgb * np.asarray(gain, np.float32)).max(axis=2)[sv]
    white = float(np.percentile(lit, 99.9)) if lit.size else 1.0
    knee = max(KNEE, 3.0 - 2.0 * white)  # a sky just above white is rolled off over a short span only
    # The ground's coverage often ends on a bright wall that touches the hole
    # above it; the sky capture sees the roof line there. Its own sky
    # (connected to the top) must agree wherever it looks.
    s_toned = tone_map(s_rgb * np.asarray(gain, np.float32), 1.0, white, knee)
    s_mask = ground_sky_mask(s_toned, s_alpha, pc.wrap)
    mask = g_mask & (s_mask | (s_alpha <= 0.5))
    w, _ = sky_weights(g_rgb, g_alpha, s_alpha, pc, params, mask, s_toned)
    layers = [
        Layer(str(sky_files[j]), cams[j], footprint(cams[j], cv), tuple(float(x / scale) for x in full[i]))  # type: ignore[arg-type]
        for i, j in enumerate(order)
    ]
    layout = Layout(cv, layers, ground.bands, ground.block, None)
    info = {
        "placed": len(cams),
        "exposure_gain": [round(x, 4) for x in gain],
        "exposure_pixels": n_px,
        "tone": {"scale": round(scale, 5), "white": round(white, 4), "knee": round(knee, 4)},
        "sky_fraction_replaced": round(float((w > 0.5).mean()), 4),
        "filled_fraction": round(float(((g_alpha <= 0.5) & (s_alpha > 0.5)).mean()), 4),
    }
    return SkyMerge(layout, w, info)


# ------------------------------------------------------------------ rendering


def proxy_to_block(weights: np.ndarray, cv: Canvas, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The proxy weights resampled onto output pixels ``rect`` (bilinear)."""
    x0, y0, x1, y1 = rect
    ph, pw = weights.shape
    fx, fy = pw / cv.width, ph / cv.height
    mx = ((np.arange(x0, x1, dtype=np.float32) + 0.5) * fx - 0.5)[None, :]
    my = ((np.arange(y0, y1, dtype=np.float32) + 0.5) * fy - 0.5)[:, None]
    mx, my = np.broadcast_to(mx, (y1 - y0, x1 - x0)), np.broadcast_to(my, (y1 - y0, x1 - x0))
    if cv.wrap:
        src = np.concatenate([weights[:, -1:], weights, weights[:, :1]], axis=1)
        return cv2.remap(src, np.mod(mx, pw) + 1, my.copy(), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(weights, mx.copy(), my.copy(), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def blend_block(
    g_rgb: np.ndarray, g_alpha: np.ndarray, sm: SkyMerge, rect: tuple[int, int, int, int], cache: SourceCache
) -> tuple[np.ndarray, np.ndarray]:
    """Ground block + the stored sky merge -> merged block (rgb, alpha)."""
    x0, y0, x1, y1 = rect
    only = [k for k in layers_meeting_rows(sm.layout, y0, y1)]
    w = proxy_to_block(sm.weights, sm.layout.canvas, rect)
    if not only or not (w > 1e-4).any():
        return g_rgb, g_alpha
    s_rgb, s_alpha = render_rect(sm.layout.layers, sm.layout.canvas, rect, cache, sm.layout.bands, None, only)
    tone = sm.info.get("tone") or {}
    s_rgb = tone_map(s_rgb, float(tone.get("scale", 1.0)), float(tone.get("white", 1.0)), float(tone.get("knee", KNEE)))
    w = np.where(g_alpha > 0, w, 1.0) * (s_alpha > 0)
    w3 = w[:, :, None]
    rgb = g_rgb * (1 - w3) + s_rgb * w3
    alpha = np.maximum(g_alpha * (1 - w) + s_alpha * w, g_alpha)
    return rgb.astype(np.float32), alpha.astype(np.float32)


def _read_rows(base: Any, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(base.crop(0, y0, base.width, y1 - y0).numpy())
    mx = 255.0 if a.dtype == np.uint8 else 65535.0
    a = a.astype(np.float32) / mx
    return a[..., :3], a[..., 3]


def write_merged(
    ground_path: str | Path,
    sm: SkyMerge,
    out_path: str | Path,
    bits: int = 8,
    progress: Progress | None = None,
    cache: SourceCache | None = None,
) -> Path:
    """OUT = the ground composite with the sky merged, block row by block row
    (.tif: tiled BigTIFF streamed; .png/.jpg: in memory)."""
    import pyvips

    ground_path, out_path = Path(ground_path), Path(out_path)
    base = pyvips.Image.new_from_file(str(ground_path), access="random")
    cv = sm.layout.canvas
    W, H, B = cv.width, cv.height, sm.layout.block
    if (base.width, base.height) != (W, H) or base.bands != 4:
        raise InputError(ground_path, "ground composite does not match the sky layout's canvas")
    cache = cache or SourceCache()
    dtype = np.uint8 if bits == 8 else np.uint16
    n_rows = math.ceil(H / B)

    def row(r: int) -> np.ndarray:
        y0, y1 = r * B, min(H, (r + 1) * B)
        g_rgb, g_alpha = _read_rows(base, y0, y1)
        out = np.empty((y1 - y0, W, 4), dtype)
        for bx in range(0, W, B):
            bx1 = min(W, bx + B)
            c, a = blend_block(g_rgb[:, bx:bx1], g_alpha[:, bx:bx1], sm, (bx, y0, bx1, y1), cache)
            out[:, bx:bx1] = _quantize(c, a, bits)
        if progress:
            progress("sky merge", r + 1, n_rows)
        return out

    ext = out_path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile

        tile = 256

        def tiles():  # noqa: ANN202
            for r in range(n_rows):
                rr = row(r)
                for ty in range(0, rr.shape[0], tile):
                    for tx in range(0, W, tile):
                        t = np.zeros((tile, tile, 4), dtype)
                        part = rr[ty : ty + tile, tx : tx + tile]
                        t[: part.shape[0], : part.shape[1]] = part
                        yield t

        with atomic_path(out_path) as tmp:
            tifffile.imwrite(
                tmp,
                tiles(),
                shape=(H, W, 4),
                dtype=dtype,
                tile=(tile, tile),
                photometric="rgb",
                extrasamples=["unassalpha"],
                compression="zlib",
                compressionargs={"level": 1},
                bigtiff=True,
            )
        return out_path
    full = np.concatenate([row(r) for r in range(n_rows)], axis=0)
    if ext == ".png":
        ok, buf = cv2.imencode(".png", full[..., [2, 1, 0, 3]])
    elif ext in (".jpg", ".jpeg"):
        mx = 255.0 if bits == 8 else 65535.0
        q = np.clip(full[..., :3].astype(np.float32) / mx * 255 + 0.5, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", q[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    else:
        raise InputError(out_path, f"unsupported output extension {ext}")
    if not ok:
        raise ProcessingError(f"{out_path}: encoding failed")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return out_path


def merge_sky_capture(
    composite: str | Path,
    sky_files: Sequence[str | Path],
    out_path: str | Path | None = None,
    sky_placements: dict[str, Placement] | None = None,
    params: SkyMergeParams | None = None,
    bits: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Merge a sky capture into the ground COMPOSITE; OUT (default: the
    composite itself, replaced atomically) gets the layout, the sky layout and
    the weights beside it. Returns a summary (placed, gains, seconds)."""
    import pyvips

    t0 = time.perf_counter()
    composite = Path(composite)
    out = Path(out_path) if out_path else composite
    sm = plan_sky_merge(composite, sky_files, sky_placements, params, progress)
    if bits is None:
        bits = 8 if pyvips.Image.new_from_file(str(composite)).format == "uchar" else 16
    src = composite
    if out == composite:  # read the ground from a copy while the output replaces it
        src = composite.with_name(f".{composite.name}.ground{composite.suffix}")
        shutil.copyfile(composite, src)
    # the files beside OUT first, OUT itself last: OUT there means all is there
    save_sky(sm, out)
    if out != composite:
        lp = composite.with_name(composite.name + ".layout.json")
        layout_to_json(layout_from_json(lp), out.with_name(out.name + ".layout.json"))
    try:
        write_merged(src, sm, out, bits, progress)
    finally:
        if src != composite:
            src.unlink(missing_ok=True)
    return {**sm.info, "seconds": round(time.perf_counter() - t0, 2)}


def remerge_sky_rect(
    base: str | Path,
    composite: str | Path,
    rect: tuple[int, int, int, int],
    bits: int = 8,
    replacements: dict[str, str] | None = None,
    out_path: str | Path | None = None,
) -> dict[str, Any]:
    """After a partial re-render of the ground (composite.patch_composite
    wrote COMPOSITE from BASE with RECT re-rendered), merge BASE's stored sky
    into RECT again, so the sky is exactly as it was. The result goes to
    OUT_PATH (default: COMPOSITE, replaced) with the layout and the sky files
    beside it, written before it; the sky files are copied
    beside COMPOSITE. A base without a sky merge: nothing to do.
    REPLACEMENTS: sky image paths swapped for re-rendered ones (same place)."""
    import pyvips

    if not has_sky(base):
        return {"sky": False}
    sm = load_sky(base)
    if replacements:
        sm.layout.layers = [replace(L, path=replacements.get(L.path, L.path)) for L in sm.layout.layers]
    composite = Path(composite)
    cv = sm.layout.canvas
    x, y, w, h = rect
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cv.width, x + w), min(cv.height, y + h)
    img = pyvips.Image.new_from_file(str(composite), access="random")
    a = np.asarray(img.crop(x0, y0, x1 - x0, y1 - y0).numpy())
    mx = 255.0 if a.dtype == np.uint8 else 65535.0
    a = a.astype(np.float32) / mx
    rgb, alpha = blend_block(a[..., :3], a[..., 3], sm, (x0, y0, x1, y1), SourceCache())
    patch = np.ascontiguousarray(_quantize(rgb, alpha, bits))
    fmt = "uchar" if bits == 8 else "ushort"
    vp = pyvips.Image.new_from_memory(patch.tobytes(), x1 - x0, y1 - y0, 4, fmt)
    merged = img.insert(vp.copy(interpretation=img.interpretation), x0, y0)
    out = Path(out_path) if out_path else composite
    save_sky(sm, out)
    if out != composite:
        lp = composite.with_name(composite.name + ".layout.json")
        layout_to_json(layout_from_json(lp), out.with_name(out.name + ".layout.json"))
    with atomic_path(out) as tmp:
        merged.tiffsave(str(tmp), tile=True, tile_width=256, tile_height=256, bigtiff=True, compression="deflate")
    return {"sky": True, "rect": [x0, y0, x1 - x0, y1 - y0]}


def merge_subpanoramas(layouts: Sequence[Layout], out_path: str | Path, feather: float = 64.0, bits: int = 8) -> Path:
    """Sub-panoramas rendered apart (one layout each, one canvas) merged into
    one image with feathered weights (sky.merge_layers); in memory: for
    proxies and moderate sizes."""
    if not layouts:
        raise InputError("-", "no sub-panoramas")
    cv = layouts[0].canvas
    for L in layouts[1:]:
        if L.canvas != cv:
            raise InputError(out_path, "sub-panoramas are not on one canvas")
    from .pipeline import render_region

    parts = [render_region(L, (0, 0, cv.width, cv.height)) for L in layouts]
    rgb, alpha = merge_layers(parts, feather, cv.wrap)
    q = _quantize(rgb, alpha, bits)
    ok, buf = cv2.imencode(".png", q[..., [2, 1, 0, 3]])
    if not ok:
        raise ProcessingError(f"{out_path}: encoding failed")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(out_path)
