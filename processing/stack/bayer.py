"""Fusion straight from the Bayer mosaic (RAW bursts).

Develop-then-fuse demosaics every frame (an interpolation: blur and colour
artefacts) and then resamples it again onto the output grid. Here each raw
sample lands once, with its own colour, on the output grid, as handheld
multi-frame super-resolution does (Wronski et al. 2019): for every output
pixel and frame, the frame position q = T(p) is found as in the RGB fusion
(fuse.frame_maps), and each of the four CFA sub-lattices (R, G1, G2, B) adds
its samples with a Gaussian weight of their distance from q to its colour's
accumulator. The Gaussian-weighted 2x2 gather on a sub-lattice is one
bilinear read (fuse._kernel_maps). One resampling per pixel; the only
demosaicked image is the reference's, used as the fallback where no sample
is near (weight 1e-3) and never mixed into covered pixels.

Alignment and robustness work on a grey proxy at full mosaic resolution (the
2x2 box sum of the white-balanced mosaic: every 2x2 block holds one R, two G
and one B sample; it sits half a pixel off, accounted for exactly), with the
project's aligner (features + RANSAC, ECC). Robustness is the RGB path's:
each frame's local-mean difference to the median of the aligned proxies,
against that frame's noise measured the same way; the reference wins where it
disagrees with the median (fuse.anchor_to_reference's rule).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from ..io.errors import InputError
from ..io.params import StageParams
from . import align as al
from .develop import encode
from .fuse import FrameInput, FuseParams, _kernel_maps, _strips, deblur, frame_maps, robust_weights

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
_CH = {"R": 0, "G": 1, "B": 2}
# OpenCV names a Bayer layout by the second row's second and third pixels.
_CV_CODE = {
    "RGGB": cv2.COLOR_BayerBG2RGB_EA,
    "BGGR": cv2.COLOR_BayerRG2RGB_EA,
    "GRBG": cv2.COLOR_BayerGB2RGB_EA,
    "GBRG": cv2.COLOR_BayerGR2RGB_EA,
}


@dataclasses.dataclass(frozen=True)
class BayerParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "bayer"

    kernel_sigma: float = 0.1  # Gaussian sigma on a CFA sub-lattice (its own px: 2 mosaic px)
    density_k: float = 0.35  # few frames: at least density_k / sqrt(frames) sub-lattice px
    robust_k: float = 3.0
    robust_window: int = 5
    strip_rows: int = 128
    deblur_optics: float = 0.75  # output px, as FuseParams
    deblur_nsr_frames: float = 1.0  # NSR x frames (fuse.matched_deblur's rule; tuned at 12 frames: 0.08)
    deblur_nsr_k: float = 300.0


@dataclass
class RawFrame:
    """One RAW frame as the sensor gave it: the mosaic, its levels, the CFA
    pattern (the 2x2 colours from the top-left, e.g. RGGB) and the white
    balance multipliers (R, G, B; G = 1)."""

    mosaic: np.ndarray  # H x W, any real dtype
    pattern: str
    black: float
    white: float
    wb: np.ndarray
    cam_to_rgb: np.ndarray | None = None  # 3x3, applied after fusion
    name: str = ""

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"bayer: pattern must be one of {PATTERNS}, not {self.pattern!r}")
        if self.mosaic.ndim != 2:
            raise ValueError("bayer: the mosaic must be 2-D")

    def sites(self) -> list[tuple[int, int, int]]:
        """(row offset, column offset, channel) of the four CFA positions."""
        return [(k // 2, k % 2, _CH[c]) for k, c in enumerate(self.pattern)]

    def balanced(self) -> np.ndarray:
        """Linear, black-subtracted, white-normalised and white-balanced mosaic."""
        m = (self.mosaic.astype(np.float32) - np.float32(self.black)) * np.float32(1.0 / (self.white - self.black))
        out = np.empty_like(m)
        for dy, dx, c in self.sites():
            out[dy::2, dx::2] = m[dy::2, dx::2] * np.float32(self.wb[c])
        return out


def read_raw(path: str | Path) -> RawFrame:
    """The mosaic, levels, pattern and camera white balance through rawpy."""
    import rawpy

    path = Path(path)
    try:
        with rawpy.imread(str(path)) as raw:
            if raw.raw_type != rawpy.RawType.Flat or raw.num_colors != 3:
                raise InputError(path, f"not a Bayer RAW (raw type {raw.raw_type.name}, {raw.num_colors} colours)")
            desc = raw.color_desc.decode()
            pat = "".join(desc[i] for i in raw.raw_pattern.ravel()[:4])
            if pat not in PATTERNS:
                raise InputError(path, f"unsupported CFA pattern {pat!r}")
            mosaic = raw.raw_image_visible.astype(np.uint16, copy=True)
            black = float(np.mean(raw.black_level_per_channel))
            white = float(raw.white_level)
            wb_raw = np.array(raw.camera_whitebalance[:3], np.float64)
            if not np.all(wb_raw > 0):
                wb_raw = np.array(raw.daylight_whitebalance[:3], np.float64)
            if not np.all(wb_raw > 0):
                wb_raw = np.ones(3)
            wb = (wb_raw / wb_raw[1]).astype(np.float32)
            cm = np.array(raw.color_matrix, np.float64)[:3, :3]
            cam = cm if np.all(np.isfinite(cm)) and abs(np.linalg.det(cm)) > 1e-6 else None
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot read the RAW mosaic: {type(e).__name__}: {e}") from e
    if white <= black:
        raise InputError(path, f"white level {white} not above black level {black}")
    return RawFrame(mosaic, pat, black, white, wb, cam, path.name)


def demosaic(frame: RawFrame, encode: bool = False) -> np.ndarray:
    """OpenCV's edge-aware demosaicking of the balanced mosaic (the develop
    step of develop-then-fuse); sRGB-encoded when ENCODE."""
    from .develop import linear_to_srgb

    m = np.clip(frame.balanced(), 0.0, 1.0)
    u16 = (m * 65535 + 0.5).astype(np.uint16)
    rgb = cv2.cvtColor(u16, _CV_CODE[frame.pattern]).astype(np.float32) * np.float32(1 / 65535)
    if frame.cam_to_rgb is not None:
        rgb = np.clip(cv2.transform(rgb, frame.cam_to_rgb.astype(np.float32)), 0.0, 1.0)
    return linear_to_srgb(rgb) if encode else rgb


def grey_proxy(balanced: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block at every position (one R, two G, one B): a full
    resolution grey whose pixel (x, y) sits at mosaic (x + .5, y + .5)."""
    g = cv2.boxFilter(balanced, -1, (2, 2), normalize=True, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(g)


_HALF = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])


def align_raw(greys: list[np.ndarray], params: al.AlignParams | None = None) -> list[np.ndarray | str]:
    """Transforms (reference mosaic px -> frame mosaic px) of every frame to
    greys[0], or the aligner's reason where it fails."""
    p = params or al.AlignParams()
    proxies = [al.align_proxy(g, True) for g in greys]
    ref_feats = al.detect(proxies[0], p)
    ref_pyr = al.ReferencePyramid(proxies[0], p) if p.ecc else None
    out: list[np.ndarray | str] = [np.eye(3)]
    for g in proxies[1:]:
        res = al.coarse_align(ref_feats, al.detect(g, p), p)
        if not res.ok:
            out.append(res.reason)
            continue
        t = res.transform
        if ref_pyr is not None:
            t = al.fine_align(ref_pyr, g, t, p)[0]
        # Proxy pixel (x, y) is mosaic (x + .5, y + .5) in both frames.
        tm = _HALF @ t @ np.linalg.inv(_HALF)
        out.append(tm / tm[2, 2])
    return out


def _robustness(
    greys: list[np.ndarray], transforms: list[np.ndarray], p: BayerParams
) -> tuple[list[np.ndarray], list[float]]:
    """uint8 robustness maps on the reference grid and per-frame noise, from
    the aligned grey proxies (the RGB path's rule, on the grey alone)."""
    h, w = greys[0].shape
    win = max(1, p.robust_window)
    reads, valid = [], []
    for g, t in zip(greys, transforms, strict=True):
        # Both proxies sit half a pixel off the mosaic grid.
        mx, my = frame_maps(FrameInput(g, np.linalg.inv(_HALF) @ t @ _HALF), 1.0, w, 0, h)
        mx = np.ascontiguousarray(np.broadcast_to(mx, (h, w)))
        my = np.ascontiguousarray(np.broadcast_to(my, (h, w)))
        reads.append(cv2.remap(g, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        valid.append((mx >= 0) & (my >= 0) & (mx <= g.shape[1] - 1) & (my <= g.shape[0] - 1))
    stack = np.stack(reads)
    vs = np.stack(valid)
    med = np.median(np.where(vs, stack, np.nan), axis=0)
    med = np.where(np.isfinite(med), med, stack[0]).astype(np.float32)
    gm = cv2.blur(np.sqrt(np.maximum(med, 0)), (win, win))
    maps, sigmas = [], []
    for r, v in zip(reads, valid, strict=True):
        d = cv2.blur(np.sqrt(np.maximum(np.where(v, r, med), 0)), (win, win)) - gm
        sel = d[v]
        sel = sel if sel.size else np.zeros(1, np.float32)
        sigma = float(1.4826 * np.median(np.abs(sel - np.median(sel)))) + 1e-4
        diff = np.clip(d * 1e4, -32000, 32000).astype(np.int16)
        maps.append(robust_weights(diff, sigma, p.robust_k))
        sigmas.append(sigma)
    # The reference wins where it disagrees with the median (moving things).
    trust = maps[0]
    maps[0] = np.full_like(trust, 255)
    for i in range(1, len(maps)):
        maps[i] = cv2.multiply(maps[i], trust, scale=1 / 255)
    return maps, sigmas


def fuse_mosaics(
    frames: list[RawFrame],
    transforms: list[np.ndarray],
    scale: float,
    params: BayerParams | None = None,
) -> tuple[np.ndarray, dict]:
    """Linear RGB at round(S x reference size) from the mosaics (see module
    doc); also returns figures (kernel size, noise) for the deconvolution."""
    p = params or BayerParams()
    bal = [f.balanced() for f in frames]
    greys = [grey_proxy(b) for b in bal]
    robust, sigmas = _robustness(greys, transforms, p)
    h, w = bal[0].shape
    ow, oh = round(scale * w), round(scale * h)
    n = len(frames)
    ks = max(p.kernel_sigma, p.density_k / math.sqrt(n))
    # Fallback where no sample is near: the demosaicked reference.
    fallback = demosaic(dataclasses.replace(frames[0], cam_to_rgb=None))
    out = np.empty((oh, ow, 3), np.float32)
    eps = np.float32(1e-3)
    planes = [
        [(np.ascontiguousarray(b[dy::2, dx::2]), dy, dx, c) for dy, dx, c in f.sites()]
        for b, f in zip(bal, frames, strict=True)
    ]
    for y0, r in _strips(oh, p.strip_rows):
        xs = ((np.arange(ow, dtype=np.float32) + 0.5) / scale - 0.5)[None, :]
        ys = ((np.arange(y0, y0 + r, dtype=np.float32) + 0.5) / scale - 0.5)[:, None]
        rx = np.ascontiguousarray(np.broadcast_to(xs, (r, ow)))
        ry = np.ascontiguousarray(np.broadcast_to(ys, (r, ow)))
        m = cv2.remap(fallback, rx, ry, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        nums = [m[..., c] * eps for c in range(3)]
        dens = [np.full((r, ow), eps, np.float32) for _ in range(3)]
        for i in range(n):
            mx, my = frame_maps(FrameInput(bal[i], transforms[i]), scale, ow, y0, r)
            mx = np.broadcast_to(mx, (r, ow))
            my = np.broadcast_to(my, (r, ow))
            rw = cv2.remap(robust[i], rx, ry, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            rw = rw.astype(np.float32) * np.float32(1 / 255)
            for plane, dy, dx, c in planes[i]:
                ph, pw = plane.shape
                u = ((mx - dx) * 0.5).astype(np.float32)
                v = ((my - dy) * 0.5).astype(np.float32)
                kx, ky, wk = _kernel_maps(u, v, ks)
                val = cv2.remap(plane, kx, ky, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                inside = (kx >= -0.5) & (ky >= -0.5) & (kx <= pw - 0.5) & (ky <= ph - 0.5)
                wk = wk * rw * inside
                nums[c] += val * wk
                dens[c] += wk
        out[y0 : y0 + r] = np.stack([nums[c] / dens[c] for c in range(3)], axis=2)
    cam = frames[0].cam_to_rgb
    if cam is not None:
        out = cv2.transform(out, cam.astype(np.float32))
    info = {"kernel_sigma_mosaic_px": 2 * ks, "noise": float(np.median(sigmas)) * max(1, p.robust_window)}
    return np.clip(out, 0.0, 1.0), info


def finish(
    lin: np.ndarray, info: dict, frames: int, scale: float, p: BayerParams | None = None, encoding: str = "srgb"
) -> np.ndarray:
    """ENCODING (srgb, or linear: the stack's convention for RAW bursts) and
    the deconvolution matched to the kernel and noise (fuse.matched_deblur's rule)."""
    p = p or BayerParams()
    sigma = math.sqrt((scale * info["kernel_sigma_mosaic_px"]) ** 2 + p.deblur_optics**2)
    nsr = (p.deblur_nsr_frames + p.deblur_nsr_k * info["noise"] ** 2) / max(1, frames)
    fp = FuseParams(deblur_sigma=sigma, deblur_nsr=nsr, deblur_taps=7)
    return deblur(encode(lin, encoding), scale, fp)


def fuse_raw_burst(
    frames: list[RawFrame],
    scale: float,
    params: BayerParams | None = None,
    align: al.AlignParams | None = None,
    encoding: str = "srgb",
    reasons: dict[int, str] | None = None,
) -> np.ndarray:
    """A RAW burst (frames[0] the reference) to float32 at S x its size:
    align on the grey proxies, fuse from the mosaics, encode, deconvolve.
    Frames that do not align are left out (their reasons go to REASONS by
    index); fewer than 2 is an InputError."""
    p = params or BayerParams()
    greys = [grey_proxy(f.balanced()) for f in frames]
    found = align_raw(greys, align)
    del greys
    keep = [i for i, t in enumerate(found) if not isinstance(t, str)]
    if reasons is not None:
        reasons.update({i: f"alignment failed: {t}" for i, t in enumerate(found) if isinstance(t, str)})
    if len(keep) < 2:
        why = "; ".join(f"{frames[i].name or i}: {t}" for i, t in enumerate(found) if isinstance(t, str))
        raise InputError(frames[0].name or None, f"need at least 2 RAW frames that align ({why})")
    ts = [found[i] for i in keep]
    lin, info = fuse_mosaics([frames[i] for i in keep], ts, scale, p)  # type: ignore[misc]
    return finish(lin, info, len(keep), scale, p, encoding)


def process_raw_stack(
    paths: list[Path], scale: float, reference: str | None = None, params: BayerParams | None = None
) -> tuple[np.ndarray, list[dict]]:
    """`stack --bayer`: the RAW files of a burst fused from their mosaics, in
    linear light (the stack's convention for RAW). The reference is the first
    file in name order unless REFERENCE names another; unreadable files and
    frames of another size are skipped with a reason (a named reference that
    cannot be read is an InputError). Returns the image and one record per file."""
    paths = sorted((Path(x) for x in paths), key=lambda x: x.name)
    records = [{"file": q.name, "kept": False, "reason": ""} for q in paths]
    ref_i = 0
    if reference is not None:
        names = [q.name for q in paths]
        if Path(reference).name not in names:
            raise InputError(reference, "the reference is not among the frames")
        ref_i = names.index(Path(reference).name)
    order = [ref_i] + [i for i in range(len(paths)) if i != ref_i]
    frames: list[RawFrame] = []
    idx: list[int] = []
    for i in order:
        try:
            fr = read_raw(paths[i])
        except InputError as e:
            if i == ref_i and reference is not None:
                raise
            records[i]["reason"] = f"unreadable: {e.reason}"
            continue
        if frames and fr.mosaic.shape != frames[0].mosaic.shape:
            records[i]["reason"] = f"mosaic {fr.mosaic.shape[1]}x{fr.mosaic.shape[0]} differs from the reference's"
            continue
        if frames and fr.pattern != frames[0].pattern:
            records[i]["reason"] = f"CFA pattern {fr.pattern} differs from the reference's {frames[0].pattern}"
            continue
        frames.append(fr)
        idx.append(i)
    folder = paths[0].parent if paths else Path(".")
    if len(frames) < 2:
        bad = "; ".join(f"{r['file']}: {r['reason']}" for r in records if r["reason"])
        raise InputError(
            folder, f"need at least 2 readable Bayer RAW frames (found {len(frames)})" + (f" ({bad})" if bad else "")
        )
    reasons: dict[int, str] = {}
    out = fuse_raw_burst(frames, scale, params, encoding="linear", reasons=reasons)
    for k, i in enumerate(idx):
        if k in reasons:
            records[i]["reason"] = reasons[k]
        else:
            records[i]["kept"] = True
    return out, records
