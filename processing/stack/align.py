"""Stages 4-5: coarse alignment (features + RANSAC) and fine alignment (ECC).

Every frame is aligned to ONE reference, never to its neighbour (chains of
pairwise estimates drift). A transform T (3x3) maps reference pixel
coordinates to the frame's pixel coordinates, so frame(T p) ~ reference(p).
A frame that cannot be aligned is reported with a reason and never fused.

Inputs are grey "proxies" in a display-like encoding (see `align_proxy`):
features and ECC behave better on perceptually spaced values than on linear
light, where shadows hold almost no contrast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from ..io.params import StageParams
from .warp import apply_h, grey, proxy, rescale_transform, scale_matrix


@dataclasses.dataclass(frozen=True)
class AlignParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "align"

    detector: str = "sift"  # sift | orb
    model: str = "homography"  # homography | affine
    feature_max_pixels: int = 1_000_000  # features on a proxy of at most this size
    max_features: int = 2500
    ratio: float = 0.8  # Lowe's ratio test
    ransac_px: float = 2.0  # RANSAC threshold, in proxy pixels
    min_inliers: int = 15
    min_inlier_ratio: float = 0.15
    # Sanity bounds on the transform (handheld telephoto: small motions).
    max_shift: float = 0.3  # of the larger frame side
    max_rotation_deg: float = 10.0
    max_scale_change: float = 0.15
    max_perspective: float = 0.05  # |h20| w + |h21| h
    min_overlap: float = 0.4
    max_size_change: float = 0.10  # frames differing more from the reference are dropped
    # Fine alignment.
    ecc: bool = True
    ecc_levels: int = 3
    ecc_max_pixels: int = 1_500_000  # finest ECC level is at most this size
    ecc_iterations: int = 60
    ecc_eps: float = 1e-6
    ecc_gauss: int = 3
    ecc_max_correction_px: float = 4.0  # ECC may move corners at most this far

    def __post_init__(self) -> None:
        if self.detector not in ("sift", "orb"):
            raise ValueError("align: detector must be sift or orb")
        if self.model not in ("homography", "affine"):
            raise ValueError("align: model must be homography or affine")


@dataclass
class Features:
    points: np.ndarray  # N x 2 in full-resolution pixel coordinates
    descriptors: np.ndarray | None
    size: tuple[int, int]  # (width, height) of the full image


@dataclass
class AlignResult:
    ok: bool
    transform: np.ndarray  # 3x3 reference -> frame
    reason: str = ""
    inliers: int = 0
    reg_error: float = float("nan")  # RMS inlier residual, full-res px
    ecc: float | None = None
    notes: list[str] = field(default_factory=list)


def align_proxy(img: np.ndarray, linear: bool = True) -> np.ndarray:
    """Grey float32 proxy for registration; linear input gets a gamma of 1/2.2."""
    g = grey(img)
    if linear:
        g = np.power(np.clip(g, 0, 1), 1 / 2.2)
    return g.astype(np.float32)


def _detector(p: AlignParams):
    if p.detector == "sift":
        return cv2.SIFT_create(nfeatures=p.max_features)
    return cv2.ORB_create(nfeatures=p.max_features, fastThreshold=5)


def detect(g: np.ndarray, params: AlignParams | None = None) -> Features:
    """Keypoints and descriptors on a proxy, positions in full-res coordinates."""
    p = params or AlignParams()
    h, w = g.shape[:2]
    small, (fx, fy) = proxy(g, p.feature_max_pixels)
    u8 = (np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)
    kps, desc = _detector(p).detectAndCompute(u8, None)
    if not kps:
        return Features(np.zeros((0, 2), np.float64), None, (w, h))
    pts = np.array([k.pt for k in kps], np.float64)
    pts[:, 0] = (pts[:, 0] + 0.5) / fx - 0.5
    pts[:, 1] = (pts[:, 1] + 0.5) / fy - 0.5
    return Features(pts, desc, (w, h))


def _match(a: Features, b: Features, p: AlignParams) -> tuple[np.ndarray, np.ndarray]:
    if a.descriptors is None or b.descriptors is None or len(a.points) < 2 or len(b.points) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    norm = cv2.NORM_L2 if p.detector == "sift" else cv2.NORM_HAMMING
    knn = cv2.BFMatcher(norm).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < p.ratio * m[1].distance]
    if not good:
        return np.zeros((0, 2)), np.zeros((0, 2))
    ia = np.array([m.queryIdx for m in good])
    ib = np.array([m.trainIdx for m in good])
    return a.points[ia], b.points[ib]


def check_transform(t: np.ndarray, ref_size: tuple[int, int], frame_size: tuple[int, int], p: AlignParams) -> str:
    """Empty string when T is plausible for a handheld burst, else the reason."""
    w, h = ref_size
    fw, fh = frame_size
    if not np.all(np.isfinite(t)) or abs(t[2, 2]) < 1e-12:
        return "degenerate transform (not finite)"
    t = t / t[2, 2]
    a = t[:2, :2]
    det = float(np.linalg.det(a))
    if det <= 0:
        return "degenerate transform (mirrored or singular)"
    # Scale relative to the size ratio between frame and reference.
    rel = np.sqrt(det / ((fw / w) * (fh / h)))
    if abs(rel - 1) > p.max_scale_change:
        return f"degenerate transform (scale change {rel:.3f})"
    rot = np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
    if abs(rot) > p.max_rotation_deg:
        return f"rotation {rot:.1f} deg beyond {p.max_rotation_deg}"
    persp = abs(t[2, 0]) * w + abs(t[2, 1]) * h
    if persp > p.max_perspective:
        return f"degenerate transform (perspective {persp:.3f})"
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    cx, cy = apply_h(t, corners[:, 0], corners[:, 1])
    quad = np.stack([cx, cy], axis=1).astype(np.float32)
    if not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
        return "degenerate transform (corners fold over)"
    mx, my = apply_h(t, np.array([(w - 1) / 2]), np.array([(h - 1) / 2]))
    shift = float(np.hypot(mx[0] - (fw - 1) / 2, my[0] - (fh - 1) / 2))
    if shift > p.max_shift * max(w, h):
        return f"shift {shift:.0f} px beyond {p.max_shift:.0%} of the frame"
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 32), np.linspace(0, h - 1, 32))
    ux, uy = apply_h(t, gx, gy)
    overlap = float(np.mean((ux >= 0) & (uy >= 0) & (ux <= fw - 1) & (uy <= fh - 1)))
    if overlap < p.min_overlap:
        return f"overlap with the reference {overlap:.0%} below {p.min_overlap:.0%}"
    return ""


def coarse_align(ref: Features, frame: Features, params: AlignParams | None = None) -> AlignResult:
    """Features + RANSAC: a transform from reference to frame, or a reason."""
    p = params or AlignParams()
    src, dst = _match(ref, frame, p)
    if len(src) < max(4, p.min_inliers):
        return AlignResult(False, np.eye(3), f"too few feature matches ({len(src)})")
    # RANSAC threshold in full-res pixels of the frame.
    f = np.sqrt(min(1.0, p.feature_max_pixels / (frame.size[0] * frame.size[1])))
    thr = p.ransac_px / f
    if p.model == "homography":
        t, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, thr, maxIters=5000, confidence=0.999)
    else:
        a, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thr, maxIters=5000)
        t = None if a is None else np.vstack([a, [0, 0, 1]])
    if t is None or mask is None:
        return AlignResult(False, np.eye(3), "RANSAC found no consistent transform")
    inl = mask.ravel().astype(bool)
    n_in = int(inl.sum())
    if n_in < p.min_inliers or n_in < p.min_inlier_ratio * len(src):
        return AlignResult(False, np.eye(3), f"too few RANSAC inliers ({n_in} of {len(src)} matches)", n_in)
    t = t / t[2, 2]
    reason = check_transform(t, ref.size, frame.size, p)
    if reason:
        return AlignResult(False, t, reason, n_in)
    res = AlignResult(True, t, "", n_in)
    res.reg_error = _residual(t, src[inl], dst[inl])
    res._src, res._dst = src[inl], dst[inl]  # type: ignore[attr-defined]
    return res


def _residual(t: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    u, v = apply_h(t, src[:, 0], src[:, 1])
    return float(np.sqrt(np.mean((u - dst[:, 0]) ** 2 + (v - dst[:, 1]) ** 2)))


def _corner_shift(a: np.ndarray, b: np.ndarray, w: int, h: int) -> float:
    xs = np.array([0, w - 1, w - 1, 0], np.float64)
    ys = np.array([0, 0, h - 1, h - 1], np.float64)
    ua, va = apply_h(a, xs, ys)
    ub, vb = apply_h(b, xs, ys)
    return float(np.max(np.hypot(ua - ub, va - vb)))


def _pyramid(g: np.ndarray, levels: int) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """[(image, (fx, fy))] from finest to coarsest, factors relative to g."""
    out = [(g, (1.0, 1.0))]
    h, w = g.shape
    for lvl in range(1, levels):
        nw, nh = round(w / 2**lvl), round(h / 2**lvl)
        if min(nw, nh) < 48:
            break
        out.append((cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA), (nw / w, nh / h)))
    return out


class ReferencePyramid:
    """The reference's ECC pyramid, built once per stack."""

    def __init__(self, ref_grey: np.ndarray, params: AlignParams, mask: np.ndarray | None = None) -> None:
        self.size = (ref_grey.shape[1], ref_grey.shape[0])
        small, self.f = proxy(ref_grey, params.ecc_max_pixels)
        self.levels = _pyramid(small, params.ecc_levels)
        self.masks: list[np.ndarray | None] = []
        for img, _ in self.levels:
            if mask is None:
                self.masks.append(None)
            else:
                m = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
                self.masks.append(m)


def fine_align(
    ref: ReferencePyramid,
    frame_grey: np.ndarray,
    t0: np.ndarray,
    params: AlignParams | None = None,
) -> tuple[np.ndarray, float | None, str]:
    """ECC refinement of T, coarse to fine. Returns (T, correlation, note).

    The reference mask (optional, 0 = moving thing) keeps pixels out of the
    criterion. If ECC fails or wanders off, the coarse transform is kept.
    """
    p = params or AlignParams()
    fh, fw = frame_grey.shape
    small, ff = proxy(frame_grey, p.ecc_max_pixels)
    # The frame's pyramid uses the same number of levels as the reference's.
    fpyr = _pyramid(small, len(ref.levels))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, p.ecc_iterations, p.ecc_eps)
    motion = cv2.MOTION_HOMOGRAPHY if p.model == "homography" else cv2.MOTION_AFFINE
    t = t0.copy()
    cc: float | None = None
    note = ""
    for lvl in range(min(len(ref.levels), len(fpyr)) - 1, -1, -1):
        rimg, rf = ref.levels[lvl]
        fimg, fl = fpyr[lvl]
        f_src = (ref.f[0] * rf[0], ref.f[1] * rf[1])
        f_dst = (ff[0] * fl[0], ff[1] * fl[1])
        tl = rescale_transform(t, f_src, f_dst).astype(np.float32)
        if motion == cv2.MOTION_AFFINE:
            tl = tl[:2].copy()
        tmask = ref.masks[lvl]
        if tmask is None:
            tmask = np.full(rimg.shape, 255, np.uint8)
        imask = np.full(fimg.shape, 255, np.uint8)
        try:
            cc, tl = cv2.findTransformECCWithMask(rimg, fimg, tmask, imask, tl, motion, criteria, p.ecc_gauss)
            if tl.shape[0] == 2:
                tl = np.vstack([tl, [0, 0, 1]])
        except cv2.error as e:
            note = f"ECC failed at level {lvl}: {str(e).strip().splitlines()[-1][:80]}"
            continue
        tn = np.linalg.inv(scale_matrix(*f_dst)) @ tl.astype(np.float64) @ scale_matrix(*f_src)
        tn /= tn[2, 2]
        if not np.all(np.isfinite(tn)):
            note = f"ECC diverged at level {lvl}"
            continue
        t = tn
    if _corner_shift(t, t0, *ref.size) > p.ecc_max_correction_px:
        return t0, cc, "ECC moved too far from the feature estimate; kept the coarse transform"
    return t, (None if cc is None else float(cc)), note
