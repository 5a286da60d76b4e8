"""Registration of a rotating-rig panorama.

SIFT features on downscaled proxies, pairwise matching (RootSIFT, ratio
test) with geometric verification (RANSAC homography, inlier count and
OpenCV-style confidence), initial rotations from priors or a maximum spanning
tree of pairwise rotations, then a global bundle adjustment of rotation
(3 params) and focal length per image over ray-direction residuals
(scipy.optimize.least_squares) and wave correction (level horizon).
Images that match nothing are placed from their priors when given, otherwise
they are dropped with a reason.
"""

from __future__ import annotations

import csv
import heapq
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ..io.errors import InputError
from ..io.imageio import load_image
from .project import Camera, camera_rays, rotation_from_ypr

NO_MATCH = "no matches to the main component"
#: a pair that puts an image's pixels farther than this many times the
#: residual threshold (px) from the consensus of its other pairs is pruned
#: (image_consensus)
CONSENSUS_X = 3.0


@dataclass(frozen=True)
class Placement:
    """Approximate pointing of one image (degrees; focal in pixels of the original)."""

    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = 0.0
    focal: float | None = None

    @property
    def has_angles(self) -> bool:
        return self.yaw is not None and self.pitch is not None


@dataclass
class Features:
    width: int
    height: int
    pts: np.ndarray  # (N, 2) float64, original-pixel coordinates
    desc: np.ndarray  # (N, 128) uint8 RootSIFT x 255 (a quarter of float32's memory)
    exif_focal: float | None = None


@dataclass
class PairMatch:
    i: int
    j: int
    pi: np.ndarray  # inlier points in image i (original pixels)
    pj: np.ndarray
    n_matches: int
    n_inliers: int
    confidence: float
    H: np.ndarray = field(repr=False)


@dataclass
class Registration:
    cameras: dict[int, Camera]
    dropped: dict[int, str]
    from_prior: list[int]
    pairs: list[PairMatch]
    rms_px: float
    focal_source: str = ""  # how the focal was found (register)


# ------------------------------------------------------------------ placements


def _num(v: str | None) -> float | None:
    if v is None or str(v).strip() in ("", "-", "nan", "None"):
        return None
    return float(v)


def load_placements(path: str | Path) -> dict[str, Placement]:
    """Read approximate placements: a CSV with a header (file/filename/name and
    any of yaw, pitch, roll, focal) or Parrington-style ``name focal`` lines."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "placements file not found")
    text = path.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out: dict[str, Placement] = {}
    if lines and "," in lines[0] and any(k in lines[0].lower() for k in ("yaw", "focal", "pitch")):
        reader = csv.DictReader(lines)
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            name = row.get("file") or row.get("filename") or row.get("name") or row.get("image")
            if not name:
                continue
            try:
                out[Path(name).name] = Placement(
                    _num(row.get("yaw")), _num(row.get("pitch")), _num(row.get("roll")) or 0.0, _num(row.get("focal"))
                )
            except ValueError as e:
                raise InputError(path, f"bad number in row for {name}: {e}") from e
        return out
    for ln in lines:
        parts = ln.replace(",", " ").split()
        try:
            vals = [float(x) for x in parts[1:]]
        except ValueError as e:
            raise InputError(path, f"bad line {ln!r}") from e
        if len(vals) == 1:
            out[Path(parts[0]).name] = Placement(focal=vals[0])
        elif len(vals) >= 3:
            out[Path(parts[0]).name] = Placement(
                vals[0], vals[1], vals[2] if len(vals) > 3 else 0.0, vals[3] if len(vals) > 3 else vals[2]
            )
    return out


def find_placements_file(directory: Path) -> Path | None:
    for name in ("angles.csv", "placements.csv", "rig.csv", "image_list.txt"):
        p = directory / name
        if p.is_file():
            return p
    return None


# -------------------------------------------------------------------- features


def exif_focal_px(path: Path, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF FocalLengthIn35mmFilm (diagonal rule)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            ex = im.getexif().get_ifd(0x8769)
        f35 = float(ex.get(0xA405) or 0)
    except Exception:
        return None
    if f35 <= 0:
        return None
    return f35 * math.hypot(width, height) / math.hypot(36.0, 24.0)


def proxy_gray(img: np.ndarray, proxy_mp: float) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    f = min(1.0, math.sqrt(proxy_mp * 1e6 / (w * h)))
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    if f < 1.0:
        g = cv2.resize(g, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    g8 = np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8) if g.dtype != np.uint8 else g
    return g8, g8.shape[1] / w


def detect(gray8: np.ndarray, factor: float, width: int, height: int, nfeatures: int = 2000) -> Features:
    sift = cv2.SIFT_create(nfeatures=nfeatures)
    kps, desc = sift.detectAndCompute(gray8, None)
    if len(kps) < nfeatures // 4:
        # low-contrast content (sky, haze, water): lower the contrast threshold
        sift = cv2.SIFT_create(nfeatures=nfeatures, contrastThreshold=0.01)
        kps, desc = sift.detectAndCompute(gray8, None)
    if desc is None or len(kps) == 0:
        return Features(width, height, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    pts = np.array([k.pt for k in kps], np.float64)
    # proxy pixel centre -> original pixel centre
    pts = (pts + 0.5) / factor - 0.5
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(1, keepdims=True), 1e-7)  # RootSIFT
    d = np.sqrt(d)
    return Features(width, height, pts.astype(np.float32), np.round(d * 255.0).astype(np.uint8))


def features_for_file(path: Path, proxy_mp: float, nfeatures: int = 2000) -> Features:
    img, info = load_image(path)
    g, f = proxy_gray(img, proxy_mp)
    feats = detect(g, f, info.width, info.height, nfeatures)
    feats.exif_focal = exif_focal_px(path, info.width, info.height)
    return feats


# -------------------------------------------------------------------- matching


def _unit(d: np.ndarray) -> np.ndarray:
    d = d.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-7)


def _ratio_matches(a: np.ndarray, b: np.ndarray, ratio: float) -> np.ndarray:
    """Mutual nearest neighbours passing Lowe's ratio test (dot products of
    unit RootSIFT vectors: distance^2 = 2 - 2 dot)."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    a = _unit(a)
    b = _unit(b)
    s = a @ b.T
    back = np.argmax(s, axis=0)
    rows = np.arange(len(a))
    i1 = np.argmax(s, axis=1)
    v1 = s[rows, i1].copy()
    s[rows, i1] = -2.0
    v2 = s.max(axis=1)
    d1 = np.sqrt(np.maximum(2 - 2 * v1, 0))
    d2 = np.sqrt(np.maximum(2 - 2 * v2, 0))
    ia = np.nonzero(d1 < ratio * d2)[0]
    ib = i1[ia]
    mutual = back[ib] == ia
    return np.stack([ia[mutual], ib[mutual]], 1)


def match_pair(
    fa: Features,
    fb: Features,
    i: int,
    j: int,
    ratio: float = 0.8,
    ransac_px: float = 3.0,
    proxy_factor: float = 1.0,
    min_inliers: int = 15,
    conf_thresh: float = 1.0,
) -> PairMatch | None:
    """Match two images and verify with a RANSAC homography.

    Accepted when there are at least ``min_inliers`` inliers and the
    confidence inliers / (8 + 0.3 matches) (OpenCV's) reaches ``conf_thresh``.
    """
    m = _ratio_matches(fa.desc, fb.desc, ratio)
    if len(m) < min_inliers:
        return None
    pa, pb = fa.pts[m[:, 0]].astype(np.float64), fb.pts[m[:, 1]].astype(np.float64)
    thr = ransac_px / max(proxy_factor, 1e-6)
    H, mask = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, thr, maxIters=5000, confidence=0.999)
    if H is None or mask is None:
        return None
    inl = mask.ravel().astype(bool)
    n_in = int(inl.sum())
    conf = n_in / (8.0 + 0.3 * len(m))
    if n_in < min_inliers or conf < conf_thresh:
        return None
    if abs(np.linalg.det(H[:2, :2] / H[2, 2])) < 0.05:  # degenerate fit
        return None
    return PairMatch(i, j, pa[inl], pb[inl], len(m), n_in, conf, H)


def _half_diag_deg(c: Camera) -> float:
    return math.degrees(math.atan(math.hypot(c.width, c.height) / 2 / c.focal))


def predicted_overlap(a: Camera, b: Camera, tol_deg: float = 0.0) -> float:
    """Fraction of the smaller image that the prior cameras say overlaps
    (b's outline projected into a's image plane, a's frame grown by
    ``tol_deg`` for the priors' uncertainty). 1.0 when b's outline is partly
    behind a (very wide views): such pairs are kept."""
    n = 6
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    w, h = b.width - 1, b.height - 1
    px = np.concatenate([t * w, np.full(n, w), (1 - t) * w, np.zeros(n)])
    py = np.concatenate([np.zeros(n), t * h, np.full(n, h), (1 - t) * h])
    cx, cy = b.center
    v = np.stack([(px - cx) / b.focal, (py - cy) / b.focal, np.ones_like(px)], 1)
    c = v @ (a.rot.T @ b.rot).T  # b's camera rays in a's camera frame
    if (c[:, 2] <= 1e-3).any():
        return 1.0
    ax, ay = a.center
    poly = np.stack([c[:, 0] / c[:, 2] * a.focal + ax, c[:, 1] / c[:, 2] * a.focal + ay], 1).astype(np.float32)
    g = math.tan(math.radians(tol_deg)) * a.focal
    rect = np.array([[-g, -g], [a.width + g, -g], [a.width + g, a.height + g], [-g, a.height + g]], np.float32)
    inter, _ = cv2.intersectConvexConvex(cv2.convexHull(poly), rect)
    area_b = float(cv2.contourArea(cv2.convexHull(poly)))
    return float(inter) / max(1.0, min(area_b, float(a.width * a.height)))


def candidate_pairs(
    n: int,
    cams0: dict[int, Camera] | None,
    fov_margin: float = 1.3,
    tol_deg: float = 2.0,
    max_neighbours: int = 16,
) -> list[tuple[int, int]]:
    """Pairs worth matching: all pairs, or where both images have prior
    angles only those whose prior footprints overlap (neighbour pairs).

    Images with priors are found with a k-d tree on their optical axes
    (angle within ``fov_margin`` x the sum of half diagonals), then kept
    when b's prior outline meets a's frame grown by ``tol_deg``; each image
    keeps its ``max_neighbours`` largest predicted overlaps (a pair stays
    when either image keeps it), so the number of pairs is O(n) even where
    views crowd together (near a cylinder's poles). Images without priors
    are paired with every other image."""
    from scipy.spatial import cKDTree

    cams0 = cams0 or {}
    have = sorted(k for k in cams0 if 0 <= k < n)
    free = [k for k in range(n) if k not in cams0]
    pairs: set[tuple[int, int]] = set()
    for a_ in free:
        for b_ in range(n):
            if b_ != a_:
                pairs.add((min(a_, b_), max(a_, b_)))
    if len(have) >= 2:
        axes = np.stack([cams0[k].rot[:, 2] for k in have])
        half = np.array([_half_diag_deg(cams0[k]) for k in have])
        r_ang = min(180.0, fov_margin * 2 * float(half.max()))
        chord = 2 * math.sin(math.radians(r_ang) / 2)
        near = cKDTree(axes).query_pairs(chord, output_type="ndarray")
        scored: dict[tuple[int, int], float] = {}
        for p, q in near.tolist():
            a, b = cams0[have[p]], cams0[have[q]]
            ang = math.degrees(math.acos(float(np.clip(a.rot[:, 2] @ b.rot[:, 2], -1, 1))))
            if ang > fov_margin * (half[p] + half[q]):
                continue
            if predicted_overlap(a, b, tol_deg) <= 0 and predicted_overlap(b, a, tol_deg) <= 0:
                continue
            scored[(have[p], have[q])] = max(predicted_overlap(a, b), predicted_overlap(b, a))
        by_img: dict[int, list[tuple[float, tuple[int, int]]]] = {}
        for pr, sc in scored.items():
            by_img.setdefault(pr[0], []).append((sc, pr))
            by_img.setdefault(pr[1], []).append((sc, pr))
        for lst in by_img.values():
            lst.sort(key=lambda t: (-t[0], t[1]))
            pairs.update(pr for _sc, pr in lst[:max_neighbours])
    return sorted(pairs)


def match_pairs(
    feats: Sequence[Features | None],
    cand: Sequence[tuple[int, int]],
    proxy_factors: Sequence[float],
    ratio: float = 0.8,
    min_inliers: int = 15,
    conf_thresh: float = 1.0,
    progress: Callable[[str, int, int], None] | None = None,
    workers: int | None = None,
) -> list[PairMatch]:
    """match_pair over candidate pairs, on threads (BLAS and OpenCV's RANSAC
    release the GIL); results in the order of ``cand``."""
    from concurrent.futures import ThreadPoolExecutor

    def one(ij: tuple[int, int]) -> PairMatch | None:
        i, j = ij
        fi, fj = feats[i], feats[j]
        if fi is None or fj is None:
            return None
        return match_pair(fi, fj, i, j, ratio, 3.0, min(proxy_factors[i], proxy_factors[j]), min_inliers, conf_thresh)

    workers = workers or min(4, os.cpu_count() or 1)
    out: list[PairMatch] = []
    chunk = 64
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for c0 in range(0, len(cand), chunk):
            for pm in ex.map(one, cand[c0 : c0 + chunk]):
                if pm is not None:
                    out.append(pm)
            if progress:
                progress("match", min(len(cand), c0 + chunk), len(cand))
    return out


# ---------------------------------------------------------------- geometry


def focals_from_homography(H: np.ndarray) -> tuple[float, float, bool, bool]:
    """OpenCV's focalsFromHomography (centred coordinates)."""
    h = H.ravel()

    def pick(d1: float, d2: float, v1: float, v2: float) -> tuple[float, bool]:
        if v1 < v2:
            v1, v2 = v2, v1
        if v1 > 0 and v2 > 0:
            return math.sqrt(v1 if abs(d1) > abs(d2) else v2), True
        if v1 > 0:
            return math.sqrt(v1), True
        return 0.0, False

    with np.errstate(divide="ignore", invalid="ignore"):
        d1, d2 = h[6] * h[7], (h[7] - h[6]) * (h[7] + h[6])
        f1, ok1 = pick(d1, d2, -(h[0] * h[1] + h[3] * h[4]) / d1, (h[0] ** 2 + h[3] ** 2 - h[1] ** 2 - h[4] ** 2) / d2)
        d1, d2 = h[0] * h[3] + h[1] * h[4], h[0] ** 2 + h[1] ** 2 - h[3] ** 2 - h[4] ** 2
        f0, ok0 = pick(d1, d2, -h[2] * h[5] / d1, (h[5] ** 2 - h[2] ** 2) / d2)
    return f0, f1, ok0 and math.isfinite(f0), ok1 and math.isfinite(f1)


def cam_rays(pts: np.ndarray, cam_w: int, cam_h: int, f: float) -> np.ndarray:
    cx, cy = (cam_w - 1) / 2.0, (cam_h - 1) / 2.0
    v = np.stack([(pts[:, 0] - cx) / f, (pts[:, 1] - cy) / f, np.ones(len(pts))], 1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation Q minimising sum |Q a_k - b_k|^2 (rows are vectors)."""
    M = b.T @ a
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _components(n_nodes: list[int], pairs: list[PairMatch]) -> list[list[int]]:
    parent = {i: i for i in n_nodes}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        parent[find(p.i)] = find(p.j)
    comps: dict[int, list[int]] = {}
    for i in n_nodes:
        comps.setdefault(find(i), []).append(i)
    return sorted(comps.values(), key=lambda c: (-len(c), c[0]))


def _spanning_tree_rotations(
    comp: list[int], pairs: list[PairMatch], feats: Sequence[Features], focals: dict[int, float], root: int
) -> dict[int, np.ndarray]:
    """Chain pairwise rotations along a maximum spanning tree (by inliers;
    Prim's algorithm with a heap, O(E log E))."""
    inc = set(comp)
    adj: dict[int, list[PairMatch]] = {}
    for p in pairs:
        if p.i in inc and p.j in inc:
            adj.setdefault(p.i, []).append(p)
            adj.setdefault(p.j, []).append(p)
    rot = {root: np.eye(3)}
    heap: list[tuple[int, int, int, PairMatch]] = []
    tick = 0

    def push(k: int) -> None:
        nonlocal tick
        for p in adj.get(k, []):
            heapq.heappush(heap, (-p.n_inliers, tick, k, p))
            tick += 1

    push(root)
    while heap and len(rot) < len(comp):
        _w, _t, _src, p = heapq.heappop(heap)
        if (p.i in rot) == (p.j in rot):
            continue
        ri = cam_rays(p.pi, feats[p.i].width, feats[p.i].height, focals[p.i])
        rj = cam_rays(p.pj, feats[p.j].width, feats[p.j].height, focals[p.j])
        Q = kabsch(ri, rj)  # Q ~ R_j^T R_i
        if p.i in rot:
            rot[p.j] = rot[p.i] @ Q.T
            push(p.j)
        else:
            rot[p.i] = rot[p.j] @ Q
            push(p.i)
    return rot


def _skew(v: np.ndarray) -> np.ndarray:
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [
            np.stack([z, -v[..., 2], v[..., 1]], -1),
            np.stack([v[..., 2], z, -v[..., 0]], -1),
            np.stack([-v[..., 1], v[..., 0], z], -1),
        ],
        -2,
    )


@dataclass
class _RayProblem:
    """What bundle adjustment keeps fixed: the sampled matches (centred pixel
    coordinates of both ends, image and pair of each), the focal groups, the
    parameter layout (3 rotation parameters per free image, then a log focal
    and a k1 per group when adjusted) and the robust weights."""

    ai: np.ndarray  # image (index into comp) of each match's first end
    aj: np.ndarray
    qi0: np.ndarray  # centred pixel coordinates of the first end
    qj0: np.ndarray
    pid: np.ndarray  # pair of each match (index into the used pairs)
    gidx: np.ndarray  # focal group of each image
    logf_prior: np.ndarray  # per group
    fs: float  # mean focal: residuals in pixels
    rot_col: np.ndarray  # first Jacobian column of each image's rotation (-1: the fixed one)
    n_free: int  # images whose rotation is adjusted
    nf: int  # log-focal parameters (0 or one per group)
    nk: int  # lens parameters (0, or nl per group)
    estimate_k1: bool  # a lens model is adjusted (k1; with lens_full also k2, d, e)
    optimize_focal: bool
    huber_px: float
    focal_weight: float
    k1_weight: float
    lens_full: bool = False
    lens_w: np.ndarray | None = None  # prior weight of every lens parameter (ng * nl)

    @property
    def nl(self) -> int:
        """Lens parameters per group: k1; or k1, k2 and the principal point shift d, e."""
        return 4 if self.lens_full else 1

    @property
    def m(self) -> int:
        return len(self.ai)

    @property
    def ng(self) -> int:
        return len(self.logf_prior)

    def cam_v(self, a: np.ndarray, q0: np.ndarray, logf: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Unit camera rays of the points Q0 of images A."""
        g = self.gidx[a]
        f = np.exp(logf[g])
        L = lens.reshape(-1, self.nl) if self.estimate_k1 else None
        if L is not None and self.lens_full:
            q0 = q0 - L[g, 2:4]  # principal point shift
        xd, yd = q0[:, 0] / f, q0[:, 1] / f
        xn, yn = xd, yd
        if L is not None:
            k = L[g, 0]
            k2 = L[g, 1] if self.lens_full else 0.0
            for _ in range(6):  # invert pixel = f xn (1 + k1 r^2 + k2 r^4)
                r2 = xn * xn + yn * yn
                d = 1.0 + r2 * (k + k2 * r2)
                xn, yn = xd / d, yd / d
        q = np.stack([xn, yn, np.ones(self.m)], 1)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    def state(self, R: np.ndarray, logf: np.ndarray, lens: np.ndarray) -> list:
        """Per end of the matches: world rays and their derivatives by log focal and k1."""
        out = []
        h = 1e-6
        for a, q0 in ((self.ai, self.qi0), (self.aj, self.qj0)):
            v = self.cam_v(a, q0, logf, lens)
            w = np.einsum("nij,nj->ni", R[a], v)
            # derivatives of the camera ray by log focal and each lens parameter
            # (forward differences; a point depends on its own group's only)
            dvf = (self.cam_v(a, q0, logf + h, lens) - v) / h
            dks = None
            if self.estimate_k1:
                dks = []
                for p in range(self.nl):
                    hp = h if p < 2 else 1e-3  # d, e are in pixels
                    step = np.zeros(self.nl)
                    step[p] = hp
                    dv = (self.cam_v(a, q0, logf, lens + np.tile(step, self.ng)) - v) / hp
                    dks.append(np.einsum("nij,nj->ni", R[a], dv))
            out.append((w, np.einsum("nij,nj->ni", R[a], dvf), dks))
        return out

    def residuals(self, R: np.ndarray, logf: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, list]:
        st = self.state(R, logf, lens)
        e = (st[0][0] - st[1][0]) * self.fs
        return e, st

    def cost(self, e: np.ndarray, logf: np.ndarray, lens: np.ndarray) -> float:
        huber_px = self.huber_px
        r = np.linalg.norm(e, axis=1)
        c = np.where(r <= huber_px, 0.5 * r**2, huber_px * (r - 0.5 * huber_px)).sum()
        if self.optimize_focal:
            c += 0.5 * ((self.focal_weight * (logf - self.logf_prior)) ** 2).sum()
        if self.estimate_k1:
            c += 0.5 * ((self._lens_weights() * lens) ** 2).sum()
        return float(c)

    def _lens_weights(self) -> np.ndarray:
        return self.lens_w if self.lens_w is not None else np.full(self.ng * self.nl, self.k1_weight)

    def normal_equations(self, st: list, e: np.ndarray, logf: np.ndarray, lens: np.ndarray) -> tuple[Any, np.ndarray]:
        """J^T W J (sparse, CSC) and J^T W r at the current state: the analytic
        sparse Jacobian, Huber weights, and the priors' rows."""
        from scipy.sparse import coo_matrix, diags

        m, ng, fs, n_rot = self.m, self.ng, self.fs, 3 * self.n_free
        nf, nk, focal_weight = self.nf, self.nk, self.focal_weight
        rows3 = (3 * np.arange(m))[:, None] + np.arange(3)[None, :]
        (wi, dwi, dki), (wj, dwj, dkj) = st
        rr = np.linalg.norm(e, axis=1)
        wt = np.where(rr <= self.huber_px, 1.0, self.huber_px / np.maximum(rr, 1e-12))
        data, rr_, cc_ = [], [], []
        # d(R_i v) / d delta_i = -[R_i v]x ; for j the sign flips
        for a, w, sign in ((self.ai, wi, 1.0), (self.aj, wj, -1.0)):
            Jr = -sign * fs * _skew(w)  # (m,3,3)
            ok = self.rot_col[a] >= 0
            cols = self.rot_col[a][:, None] + np.arange(3)[None, :]
            for r_ in range(3):
                data.append(Jr[ok, r_, :].ravel())
                rr_.append(np.repeat(rows3[ok, r_], 3))
                cc_.append(cols[ok].ravel())
        if self.optimize_focal:
            for a, dw, sign in ((self.ai, dwi, 1.0), (self.aj, dwj, -1.0)):
                for r_ in range(3):
                    data.append(sign * fs * dw[:, r_])
                    rr_.append(rows3[:, r_])
                    cc_.append(n_rot + self.gidx[a])
            data.append(np.full(ng, focal_weight))
            rr_.append(3 * m + np.arange(ng))
            cc_.append(n_rot + np.arange(ng))
        if self.estimate_k1:
            nl = self.nl
            for a, dks, sign in ((self.ai, dki, 1.0), (self.aj, dkj, -1.0)):
                for p, dk in enumerate(dks):
                    for r_ in range(3):
                        data.append(sign * fs * dk[:, r_])
                        rr_.append(rows3[:, r_])
                        cc_.append(n_rot + nf + self.gidx[a] * nl + p)
            data.append(self._lens_weights())
            rr_.append(3 * m + nf + np.arange(nk))
            cc_.append(n_rot + nf + np.arange(nk))
        J = coo_matrix(
            (np.concatenate(data), (np.concatenate(rr_), np.concatenate(cc_))), shape=(3 * m + nf + nk, n_rot + nf + nk)
        ).tocsr()
        res = e.ravel()
        wvec = np.repeat(wt, 3)
        if self.optimize_focal:
            res = np.concatenate([res, focal_weight * (logf - self.logf_prior)])
            wvec = np.concatenate([wvec, np.ones(ng)])
        if self.estimate_k1:
            res = np.concatenate([res, self._lens_weights() * lens])
            wvec = np.concatenate([wvec, np.ones(nk)])
        JtW = J.T @ diags(wvec)
        return (JtW @ J).tocsc(), JtW @ res

    def apply(
        self, R: np.ndarray, logf: np.ndarray, lens: np.ndarray, step: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parameters moved by STEP (rotations composed on the left)."""
        n_rot, nf = 3 * self.n_free, self.nf
        d = np.zeros((len(R), 3))
        d[self.rot_col >= 0] = step[:n_rot].reshape(-1, 3)
        Rn = Rotation.from_rotvec(d).as_matrix() @ R
        ln = logf + step[n_rot : n_rot + nf] if self.optimize_focal else logf
        kn = lens + step[n_rot + nf :] if self.estimate_k1 else lens
        return Rn, ln, kn


def _ray_problem(
    comp: list[int],
    use: list[PairMatch],
    feats: Sequence[Features],
    focals: dict[int, float],
    fixed: int,
    max_points: int,
    max_total_points: int,
    focal_prior: dict[int, float] | None,
    groups: dict[int, int] | None,
    weights: dict[str, Any],
) -> tuple[_RayProblem, np.ndarray]:
    """The fixed data of bundle_adjust and the initial log focal per group."""
    idx = {c: k for k, c in enumerate(comp)}
    rng = np.random.default_rng(0)
    # thousands of pairs: fewer points per pair, so the sparse Jacobian stays
    # within a few hundred MB (rotations are well determined by ~30 points)
    max_points = int(np.clip(max_total_points // len(use), 30, max_points))
    A_i, A_j, P_i, P_j, pair_id = [], [], [], [], []
    for k, p in enumerate(use):
        sel = np.arange(p.n_inliers)
        if len(sel) > max_points:
            sel = rng.choice(sel, max_points, replace=False)
        A_i.append(np.full(len(sel), idx[p.i]))
        A_j.append(np.full(len(sel), idx[p.j]))
        P_i.append(p.pi[sel])
        P_j.append(p.pj[sel])
        pair_id.append(np.full(len(sel), k))
    ai, aj = np.concatenate(A_i), np.concatenate(A_j)
    pi, pj = np.concatenate(P_i), np.concatenate(P_j)
    n = len(comp)
    wh = np.array([[feats[c].width, feats[c].height] for c in comp], np.float64)
    gl = [groups.get(c, -1 - c) if groups else c for c in comp]
    gids = {g: q for q, g in enumerate(dict.fromkeys(gl))}
    gidx = np.array([gids[g] for g in gl])
    ng = len(gids)
    lf0 = np.log(np.array([focals[c] for c in comp]))
    lfp = np.log(np.array([(focal_prior or focals).get(c, focals[c]) for c in comp]))
    logf = np.array([lf0[gidx == q].mean() for q in range(ng)])
    logf_prior = np.array([lfp[gidx == q].mean() for q in range(ng)])
    k_fix = idx[fixed]
    rot_col = np.full(n, -1)
    free = [k for k in range(n) if k != k_fix]
    rot_col[free] = 3 * np.arange(len(free))
    problem = _RayProblem(
        ai=ai,
        aj=aj,
        qi0=pi - (wh[ai] - 1) / 2.0,
        qj0=pj - (wh[aj] - 1) / 2.0,
        pid=np.concatenate(pair_id),
        gidx=gidx,
        logf_prior=logf_prior,
        fs=float(np.exp(lf0).mean()),
        rot_col=rot_col,
        n_free=len(free),
        nf=ng if weights["optimize_focal"] else 0,
        nk=ng * (4 if weights.get("lens_full") else 1) if weights["estimate_k1"] else 0,
        **weights,
    )
    return problem, logf


def bundle_adjust(
    comp: list[int],
    pairs: list[PairMatch],
    feats: Sequence[Features],
    rots: dict[int, np.ndarray],
    focals: dict[int, float],
    fixed: int,
    max_points: int = 150,
    max_total_points: int = 300_000,
    focal_prior: dict[int, float] | None = None,
    optimize_focal: bool = True,
    iterations: int = 40,
    huber_px: float = 2.0,
    focal_weight: float = 30.0,
    groups: dict[int, int] | None = None,
    estimate_k1: bool = False,
    k1_weight: float = 200.0,
    lens_full: bool = False,
    lens_min_matches: int = 400,
    lens_out: dict[int, tuple[float, float, float, float]] | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, float], dict[tuple[int, int], float], dict[int, float]]:
    """Ray-direction bundle adjustment (rotation per image + log focal per
    focal group: images of one lens share a focal when ``groups`` says so,
    otherwise one focal per image).

    Residual: difference of the two unit world rays of a match, in pixels
    (times the mean focal), Huber-weighted; Levenberg-Marquardt with an
    analytic sparse Jacobian (_RayProblem.normal_equations), re-linearised
    around the current rotations. A weak prior keeps focals near their
    initial values. With ``estimate_k1`` a radial distortion k1 per focal
    group is adjusted too (pixel = f * xn * (1 + k1 r^2), weak prior towards
    0; held at 0, as every lens term, for a group with fewer than
    ``lens_min_matches`` matched points or 3 images). With ``lens_full`` (and ``estimate_k1``) the lens model per group is
    k1, k2 (pixel = f xn (1 + k1 r^2 + k2 r^4)) and the principal point shift
    d, e (px), each with a prior towards 0 (d, e: sigma 2 % of the width
    against a tenth of a px^2 per match), and only for groups with at least
    ``lens_min_matches`` matched points and 3 images (otherwise held at 0):
    a few control points cannot run it away. ``lens_out`` (if given)
    receives each image's lens (k1, k2, d, e). Returns rotations, focals,
    the per-pair RMS residual (px) and k1 per image.
    """
    from scipy.sparse import diags
    from scipy.sparse.linalg import spsolve

    members = set(comp)
    use = [p for p in pairs if p.i in members and p.j in members]
    if not use:
        return rots, focals, {}, {c: 0.0 for c in comp}
    weights = dict(
        estimate_k1=estimate_k1,
        optimize_focal=optimize_focal,
        huber_px=huber_px,
        focal_weight=focal_weight,
        k1_weight=k1_weight,
        lens_full=lens_full and estimate_k1,
    )
    prob, logf = _ray_problem(
        comp, use, feats, focals, fixed, max_points, max_total_points, focal_prior, groups, weights
    )
    if prob.estimate_k1:
        # priors and the safeguard: groups with few points keep a pinhole
        ng, nl = prob.ng, prob.nl
        pts = np.bincount(prob.gidx[prob.ai], minlength=ng) + np.bincount(prob.gidx[prob.aj], minlength=ng)
        imgs = np.bincount(prob.gidx, minlength=ng)
        width = float(np.mean([feats[c].width for c in comp]))
        w = np.zeros((ng, nl))
        w[:, :2] = k1_weight
        if nl > 2:
            w[:, 2:] = (np.sqrt(0.1 * np.maximum(pts, 1)) / (0.02 * width))[:, None]
        w[(pts < lens_min_matches) | (imgs < 3)] = 1e6
        prob.lens_w = w.ravel()
    R = np.stack([rots[c] for c in comp])
    lens = np.zeros(prob.ng * prob.nl) if prob.estimate_k1 else np.zeros(prob.ng)
    lam = 1e-3
    e, st = prob.residuals(R, logf, lens)
    c0 = prob.cost(e, logf, lens)
    for _it in range(iterations):
        A, g = prob.normal_equations(st, e, logf, lens)
        dA = A.diagonal()
        improved = False
        for _try in range(8):
            step = spsolve(A + diags(lam * np.maximum(dA, 1e-9)), -g)
            Rn, ln, kn = prob.apply(R, logf, lens, step)
            en, stn = prob.residuals(Rn, ln, kn)
            c1 = prob.cost(en, ln, kn)
            if c1 < c0:
                R, logf, lens, e, st = Rn, ln, kn, en, stn
                lam = max(lam / 3, 1e-9)
                improved = True
                break
            lam *= 5
        if not improved or (c0 - c1) < 1e-7 * c0:
            c0 = min(c0, c1)
            break
        c0 = c1
    # in pixels at the adjusted focals: the residuals are scaled by the
    # initial mean focal (weir's 3.7 px at a focal that had run 6.5 x from
    # its start were 24 px)
    f_end = np.exp(0.5 * (logf[prob.gidx[prob.ai]] + logf[prob.gidx[prob.aj]]))
    err = np.linalg.norm(e, axis=1) * f_end / prob.fs
    pair_rms = {}
    order = np.argsort(prob.pid, kind="stable")
    bounds = np.searchsorted(prob.pid[order], np.arange(len(use) + 1))
    for k, p in enumerate(use):
        ek = err[order[bounds[k] : bounds[k + 1]]]
        pair_rms[(p.i, p.j)] = float(np.sqrt(np.median(ek**2))) if len(ek) else 0.0
    f = np.exp(logf[prob.gidx])
    L = lens.reshape(prob.ng, -1) if prob.estimate_k1 else np.zeros((prob.ng, 1))
    k1 = L[prob.gidx, 0]
    full = np.zeros((prob.ng, 4))
    full[:, : L.shape[1]] = L
    if lens_out is not None:
        lens_out.update({c: tuple(float(x) for x in full[prob.gidx[k]]) for k, c in enumerate(comp)})  # type: ignore[misc]
    return (
        {c: R[k] for k, c in enumerate(comp)},
        {c: float(f[k]) for k, c in enumerate(comp)},
        pair_rms,
        {c: float(k1[k]) for k, c in enumerate(comp)},
    )


def wave_correct(rots: dict[int, np.ndarray], ref: int | None = None) -> dict[int, np.ndarray]:
    """Level the horizon: find the world 'up' to which the cameras' x axes are
    perpendicular (OpenCV's horizontal wave correction), put it at -y and the
    reference camera's heading at longitude 0."""
    keys = list(rots)
    if not keys:
        return rots
    X = np.stack([rots[k][:, 0] for k in keys])
    Y = np.stack([rots[k][:, 1] for k in keys])
    Z = np.stack([rots[k][:, 2] for k in keys])
    vals, vecs = np.linalg.eigh(X.T @ X / len(keys))
    down = vecs[:, 0]
    if vals[1] < 0.05:  # x axes nearly parallel: fall back to mean camera 'down'
        yd = Y.mean(0)
        xm = X.mean(0)
        xm /= np.linalg.norm(xm)
        down = yd - (yd @ xm) * xm
    down /= np.linalg.norm(down)
    if (Y @ down).sum() < 0:
        down = -down
    ref = keys[0] if ref is None else ref
    fwd = rots[ref][:, 2] - (rots[ref][:, 2] @ down) * down
    if np.linalg.norm(fwd) < 1e-3:
        fwd = Z.sum(0) - (Z.sum(0) @ down) * down
    if np.linalg.norm(fwd) < 1e-3:
        fwd = np.cross(down, [1.0, 0, 0]) if abs(down[0]) < 0.9 else np.cross(down, [0, 0, 1.0])
    fwd /= np.linalg.norm(fwd)
    x = np.cross(down, fwd)
    W = np.stack([x, down, fwd])
    return {k: W @ r for k, r in rots.items()}


# ------------------------------------------------------------------ pipeline


def _known_focals(
    feats: Sequence[Features | None], ok: list[int], pri: dict[int, Placement | None]
) -> dict[int, float]:
    """Initial focals where a prior or EXIF gives one."""
    focals: dict[int, float] = {}
    for k in ok:
        f = feats[k]
        assert f is not None
        p = pri[k]
        if p is not None and p.focal:
            focals[k] = float(p.focal)
        elif f.exif_focal:
            focals[k] = float(f.exif_focal)
    return focals


def _prior_cameras(
    feats: Sequence[Features | None],
    ok: list[int],
    pri: dict[int, Placement | None],
    focals: dict[int, float],
    default_hfov: float,
) -> dict[int, Camera]:
    """Cameras of the images whose placement gives angles."""
    prior_cams: dict[int, Camera] = {}
    for k in ok:
        p = pri[k]
        if p is not None and p.has_angles:
            f = feats[k]
            fk = focals.get(k) or f.width / 2 / math.tan(math.radians(default_hfov / 2))  # type: ignore[union-attr]
            prior_cams[k] = Camera.make(f.width, f.height, fk, rotation_from_ypr(p.yaw, p.pitch, p.roll or 0.0))  # type: ignore[union-attr]
    return prior_cams


@dataclass(frozen=True)
class FocalEstimate:
    """The focal of images with neither prior nor EXIF, over the long image side."""

    rel: float
    source: str  # "others" (the median of the known ones), "homographies" or "default"
    pairs: int = 0  # pair estimates used
    spread: float = 0.0  # their median absolute deviation in log focal


def focal_from_homography_pairs(
    feats: Sequence[Features | None],
    pairs: list[PairMatch],
    default_hfov: float,
    agree: float = 0.3,
    max_spread: float = 0.25,
) -> FocalEstimate:
    """Focal over the long image side from the pairs' homographies
    (focals_from_homography), or the default field of view where they do
    not tell it.

    A homography close to an affine map (little perspective: small angles,
    long lenses) gives a ratio of small numbers: budapest's pairs give the
    two images 423 and 9827 px. A pair counts only when its two images'
    estimates agree within ``agree`` (an unknown lens: one focal), and the
    pairs only when they agree with each other (median absolute deviation
    of the log focal within log(1 + ``max_spread``)); otherwise the default
    field of view (pto_gen's 50 degrees)."""
    est = []
    for p in pairs:
        fi, fj = feats[p.i], feats[p.j]
        assert fi is not None and fj is not None
        T_i = np.array([[1, 0, -(fi.width - 1) / 2], [0, 1, -(fi.height - 1) / 2], [0, 0, 1.0]])
        T_j = np.array([[1, 0, -(fj.width - 1) / 2], [0, 1, -(fj.height - 1) / 2], [0, 0, 1.0]])
        Hc = T_j @ p.H @ np.linalg.inv(T_i)
        f0, f1, ok0, ok1 = focals_from_homography(Hc / Hc[2, 2])
        if ok0 and ok1 and f0 > 0 and f1 > 0 and max(f0, f1) / min(f0, f1) <= 1 + agree:
            est.append(math.log(math.sqrt(f0 * f1) / max(fi.width, fi.height)))
    if est:
        med = float(np.median(est))
        spread = float(np.median(np.abs(np.array(est) - med)))
        if spread <= math.log(1 + max_spread):
            return FocalEstimate(math.exp(med), "homographies", len(est), spread)
    return FocalEstimate(1 / (2 * math.tan(math.radians(default_hfov / 2))), "default", len(est))


def _guess_missing_focals(
    feats: Sequence[Features | None],
    ok: list[int],
    pairs: list[PairMatch],
    focals: dict[int, float],
    default_hfov: float,
) -> FocalEstimate | None:
    """Focals (in place) for images with neither prior nor EXIF: the median
    relative focal of the others, else of the pairs' homographies, else the
    default field of view (focal_from_homography_pairs); None where every
    image has its own."""
    if len(focals) >= len(ok):
        return None

    def side(k: int) -> int:
        f = feats[k]
        assert f is not None
        return max(f.width, f.height)

    if focals:
        fe = FocalEstimate(float(np.median([focals[k] / side(k) for k in focals])), "others")
    else:
        fe = focal_from_homography_pairs(feats, pairs, default_hfov)
    for k in ok:
        focals.setdefault(k, fe.rel * side(k))
    return fe


def _lens_groups(
    feats: Sequence[Features | None],
    ok: list[int],
    pri: dict[int, Placement | None],
    focal_prior: dict[int, float],
    tolerance: float = 0.01,
) -> dict[int, int]:
    """One lens: images of the same size whose prior / EXIF focals agree
    within ``tolerance`` (relative) share it (focal and distortion).

    Parrington's list gives each image its own estimated focal (703.8 to
    706.8 px: one lens); split into one group per image, each group's lens
    terms had to pay their own prior and the distortion stayed unmodelled,
    which tilted the whole ring by a degree against Hugin's (docs/stitch.md)."""
    keyed: dict[tuple, list[int]] = {}
    for k in ok:
        f = feats[k]
        p = pri[k]
        src = "prior" if p is not None and p.focal else ("exif" if f.exif_focal else "est")  # type: ignore[union-attr]
        keyed.setdefault((f.width, f.height, src), []).append(k)  # type: ignore[union-attr]
    groups: dict[int, int] = {}
    n = 0
    for (_w, _h, src), ks in keyed.items():
        if src == "est":
            groups.update({k: n for k in ks})
            n += 1
            continue
        # focals sorted; a new lens where the next one is more than the tolerance above the lens's first
        ks = sorted(ks, key=lambda k: focal_prior[k])
        first = focal_prior[ks[0]]
        for k in ks:
            if focal_prior[k] > first * (1 + tolerance):
                n += 1
                first = focal_prior[k]
            groups[k] = n
        n += 1
    return groups


def rotation_shift_px(a: np.ndarray, b: np.ndarray, width: int, height: int, focal: float) -> np.ndarray:
    """How far (RMS px over a 3 x 3 grid of the image) two rotations of one
    camera put its pixels apart: a roll of a telephoto image moves its
    pixels far less than a pan by the same angle. A, B: (3, 3) or stacks
    (..., 3, 3) that broadcast."""
    xs, ys = np.meshgrid([-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5])
    v = np.stack([xs.ravel() * width / focal, ys.ravel() * height / focal, np.ones(9)], 1)
    rel = np.swapaxes(b, -1, -2) @ a
    w = np.einsum("...ij,pj->...pi", rel, v)
    w = w[..., :2] / np.maximum(w[..., 2:], 1e-6)
    return np.sqrt(np.mean(np.sum((w - v[:, :2]) ** 2, -1), -1)) * focal


def _pair_rotation(
    p: PairMatch, feats: Sequence[Features], focals: dict[int, float], k1: dict[int, float]
) -> tuple[np.ndarray, float]:
    """Q ~ R_j^T R_i, the rotation the pair's matches alone give (Kabsch on
    rays), and their RMS residual to it (px): near ground seen from a moving
    hand-held camera fits a homography (a plane) but no rotation."""
    fi, fj = feats[p.i], feats[p.j]
    ci = Camera.make(fi.width, fi.height, focals[p.i], np.eye(3), k1.get(p.i, 0.0))
    cj = Camera.make(fj.width, fj.height, focals[p.j], np.eye(3), k1.get(p.j, 0.0))
    ri, rj = camera_rays(ci, p.pi[:, 0], p.pi[:, 1]), camera_rays(cj, p.pj[:, 0], p.pj[:, 1])
    Q = kabsch(ri, rj)
    e = np.linalg.norm(ri @ Q.T - rj, axis=1) * 0.5 * (focals[p.i] + focals[p.j])
    return Q, float(np.sqrt(np.mean(e * e)))


@dataclass
class Consensus:
    """One image's verdict on its pairs (image_consensus)."""

    image: int
    kept: list[PairMatch]  # the pairs that agree with the image's consensus rotation
    rejected: list[tuple[PairMatch, float]]  # the others, with their distance to the consensus (px)
    support: float  # the consensus's support (sum of the kept pairs' weights)
    rotation: np.ndarray | None = None  # the consensus rotation (None: fewer than two pairs)


def image_consensus(
    k: int,
    pairs_k: list[PairMatch],
    rots: dict[int, np.ndarray],
    pair_rot: dict[tuple[int, int], np.ndarray],
    tol_px: float,
    size: tuple[int, int, float],
    weight: dict[tuple[int, int], float] | None = None,
) -> Consensus:
    """The pairs of image K that agree on where K points.

    Each pair puts K where its matches say relative to the neighbour's
    current rotation (R_k = R_j Q); like RANSAC over the pairs, every pair's
    rotation is a hypothesis, supported by the pairs within ``tol_px`` of
    it (rotation_shift_px; ``size``: K's width, height and focal), each
    with its ``weight`` (default sqrt(inliers): neighbours are independent
    evidence, the inliers of one pair are not - one parallax, one repeated
    facade - so two agreeing neighbours outweigh one pair with more inliers
    than both). The best cluster's rotation (chordal mean) is
    refined once and the pairs farther than ``tol_px`` from it are
    rejected, but only where their own hypothesis has less support than the
    consensus (a tie rejects nothing)."""
    weight = weight or {(p.i, p.j): math.sqrt(p.n_inliers) for p in pairs_k}
    w = np.array([weight[(p.i, p.j)] for p in pairs_k])
    if len(pairs_k) < 2:
        return Consensus(k, list(pairs_k), [], float(w.sum()))
    imp = []
    for p in pairs_k:
        Q = pair_rot[(p.i, p.j)]
        imp.append(rots[p.j] @ Q if p.i == k else rots[p.i] @ Q.T)
    n = len(pairs_k)
    stack = np.stack(imp)
    ang = rotation_shift_px(stack[:, None], stack[None, :], *size)
    sup = ((ang < tol_px) * w[None, :]).sum(1)
    best = int(np.argmax(sup))
    inl = ang[best] < tol_px
    # chordal mean of the cluster, then the pairs near it
    M = sum(w[q] * imp[q] for q in range(n) if inl[q])
    U, _s, Vt = np.linalg.svd(M)
    Rc = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    d = rotation_shift_px(Rc, stack, *size)
    inl = d < tol_px
    support = float(w[inl].sum())
    kept, rejected = [], []
    for q, p in enumerate(pairs_k):
        if inl[q] or sup[q] >= support:
            kept.append(p)
        else:
            rejected.append((p, float(d[q])))
    return Consensus(k, kept, rejected, support, Rc)


def consensus_rejections(
    comp: list[int],
    pairs: list[PairMatch],
    feats: Sequence[Features],
    rots: dict[int, np.ndarray],
    focals: dict[int, float],
    k1: dict[int, float],
    tol_px: float,
) -> list[tuple[PairMatch, float]]:
    """Pairs that disagree with the consensus of one of their images
    (image_consensus, tolerance ``tol_px``), largest disagreement first;
    each pair once.

    A pair's weight is sqrt(inliers), divided by its residual to its own
    best rotation over the median of the pairs' (when above it): a pair of
    near ground seen with parallax (a plane: a good homography, no good
    rotation) has many inliers but says little about the rotation."""
    members = set(comp)
    use = [p for p in pairs if p.i in members and p.j in members]
    fit = {(p.i, p.j): _pair_rotation(p, feats, focals, k1) for p in use}
    pair_rot = {ij: q for ij, (q, _r) in fit.items()}
    ref = max(1.0, float(np.median([r for _q, r in fit.values()]))) if fit else 1.0
    weight = {(p.i, p.j): math.sqrt(p.n_inliers) / max(1.0, fit[(p.i, p.j)][1] / ref) for p in use}
    by: dict[int, list[PairMatch]] = {}
    for p in use:
        by.setdefault(p.i, []).append(p)
        by.setdefault(p.j, []).append(p)
    size = {k: (feats[k].width, feats[k].height, focals[k]) for k in comp}
    # A contested image sits between its clusters after the adjustment, so
    # its good pairs look wrong from the neighbours' side too: judge again
    # with every image at its own consensus.
    first = {k: image_consensus(k, by.get(k, []), rots, pair_rot, tol_px, size[k], weight) for k in comp}
    rc = {k: c.rotation if c.rotation is not None else rots[k] for k, c in first.items()}
    worst: dict[int, tuple[PairMatch, float]] = {}
    for k in comp:
        for p, d in image_consensus(k, by.get(k, []), rc, pair_rot, tol_px, size[k], weight).rejected:
            if id(p) not in worst or d > worst[id(p)][1]:
                worst[id(p)] = (p, d)
    return sorted(worst.values(), key=lambda t: -t[1])


@dataclass
class _Adjusted:
    """The main component's adjustment after pruning inconsistent pairs."""

    pairs: list[PairMatch]  # the pairs kept
    rots: dict[int, np.ndarray]
    focals: dict[int, float]
    k1: dict[int, float]
    rms: float  # RMS of the per-pair residuals (px)
    lens: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)  # k1, k2, d, e
    removed: list[tuple[int, int, str]] = field(default_factory=list)  # pairs pruned, and why


def _remove_keeping_connected(main: list[int], pairs: list[PairMatch], bad: list[PairMatch]) -> list[PairMatch]:
    """PAIRS without those of BAD (in order) whose removal keeps MAIN connected."""
    for p in bad:
        rest = [q for q in pairs if q is not p]
        if len(_components(main, [q for q in rest if q.i in main and q.j in main])) == 1:
            pairs = rest
    return pairs


def _adjust_main_component(
    feats: Sequence[Features | None],
    ok: list[int],
    pairs: list[PairMatch],
    focals: dict[int, float],
    focal_prior: dict[int, float],
    groups: dict[int, int] | None,
    prior_cams: dict[int, Camera],
    max_pair_rms: float,
    progress: Callable[[str, int, int], None] | None,
    debug: bool,
    estimate_k1: bool,
    lens_full: bool = False,
    consensus: float = CONSENSUS_X,
    focal_weight: float = 30.0,
) -> _Adjusted:
    """Initial rotations (priors or a spanning tree), bundle adjustment, then
    pruning and adjusting again (five rounds at most). A round prunes the
    pairs that disagree with an image's consensus (image_consensus: the
    pairs of one image that agree on its rotation outvote a pair that does
    not, however its residual compares); where no image has such a pair,
    the pairs that stay inconsistent (residual above ``max_pair_rms`` and
    3 x the median) go, largest first. Either way only while the graph
    stays connected. The consensus's tolerance is ``consensus`` x that
    residual threshold (0: residuals only, as before issue 17)."""
    rms = 0.0
    removed: list[tuple[int, int, str]] = []
    rounds = 5
    for attempt in range(rounds + 1):
        comps = _components(ok, pairs)
        main = comps[0]
        strength: dict[int, int] = {}
        for p in pairs:
            strength[p.i] = strength.get(p.i, 0) + p.n_inliers
            strength[p.j] = strength.get(p.j, 0) + p.n_inliers
        root = max(main, key=lambda k: strength.get(k, 0))
        if all(k in prior_cams for k in main):
            rots = {k: prior_cams[k].rot for k in main}
        else:
            rots = _spanning_tree_rotations(main, pairs, feats, focals, root)  # type: ignore[arg-type]
        sub = [p for p in pairs if p.i in main and p.j in main]
        if progress:
            progress("adjust", 0, 1)
        lens_b: dict[int, tuple[float, float, float, float]] = {}
        rots_b, foc_b, pair_rms, k1_b = bundle_adjust(
            main,
            sub,
            feats,  # type: ignore[arg-type]
            rots,
            focals,
            root,
            focal_prior=focal_prior,
            groups=groups,
            estimate_k1=estimate_k1 or lens_full,
            lens_full=lens_full,
            lens_out=lens_b,
            focal_weight=focal_weight,
        )
        vals = sorted(pair_rms.values())
        if debug:
            print("pair rms", [round(v, 1) for v in vals[-10:]])
        rms = float(np.sqrt(np.mean(np.square(vals)))) if vals else 0.0
        if attempt == rounds:
            break  # the adjustment after the last pruning
        thr = max(max_pair_rms, 3.0 * float(np.median(vals))) if vals else max_pair_rms
        n_before = len(pairs)
        why = "consensus"
        if consensus > 0:
            rej = consensus_rejections(main, sub, feats, rots_b, foc_b, k1_b, consensus * thr)  # type: ignore[arg-type]
            pairs = _remove_keeping_connected(main, pairs, [p for p, _d in rej])
        if len(pairs) == n_before:
            why = "residual"
            bad = sorted([p for p in sub if pair_rms.get((p.i, p.j), 0) > thr], key=lambda p: -pair_rms[(p.i, p.j)])
            pairs = _remove_keeping_connected(main, pairs, bad)
        kept = {id(p) for p in pairs}
        removed += [(p.i, p.j, why) for p in sub if id(p) not in kept]
        if debug:
            print("removed", removed)
        if len(pairs) == n_before:
            break
    return _Adjusted(pairs, rots_b, foc_b, k1_b, rms, lens_b, removed)


#: an estimated focal (no prior, no EXIF) that the adjustment moves by more
#: than this factor is not pinned down by the matches (_guard_estimated_focals)
FOCAL_RUNAWAY = 3.0


def _guard_estimated_focals(
    adjust: Callable[[dict[int, int] | None, float], _Adjusted],
    adj: _Adjusted,
    est: list[int],
    focal_prior: dict[int, float],
    groups: dict[int, int] | None,
) -> tuple[_Adjusted, str]:
    """The adjustment again where it ran away with an estimated focal.

    The ray residual shrinks as the focal grows, and a longer focal is
    closer to an affine camera, which fits what no rotation does: on weir
    (no EXIF) weir_1 is at 1.15 x the scale of weir_2 (a zoom or a step
    between the shots), and the shared focal ran from the homographies'
    2668 px to 17241 px (a 4.4-degree field of view for 1333 px). First one
    focal per estimated image (the images of an unknown lens may differ in
    zoom); if one still runs away, every focal held at its estimate.
    ``adjust(groups, focal_weight)`` re-runs the adjustment."""

    def moved(a: _Adjusted) -> float:
        return max((abs(math.log(a.focals[k] / focal_prior[k])) for k in est if k in a.focals), default=0.0)

    limit = math.log(FOCAL_RUNAWAY)
    if moved(adj) <= limit:
        return adj, ""
    if groups is not None:
        split = {k: g for k, g in groups.items() if k not in est}  # the others keep their lens
        a2 = adjust(split, 30.0)
        if moved(a2) <= limit:
            return a2, "one focal per image"
    return adjust(groups, 1e4), "held"


def _focal_source(pri: dict[int, Placement | None], feats: Sequence[Features | None], fe: FocalEstimate | None) -> str:
    """Where the focals came from, for the logs and metrics."""
    src = set()
    for k, p in pri.items():
        f = feats[k]
        if p is not None and p.focal:
            src.add("prior")
        elif f is not None and f.exif_focal:
            src.add("exif")
        elif fe is not None and fe.source == "others":
            src.add("the others' median")
        elif fe is not None:
            # e.g. "homographies (3 pairs, 28 deg)", "default (50 deg)": the field of view on the long side
            hfov = f"{2 * math.degrees(math.atan(0.5 / fe.rel)):.0f} deg"
            n = f"{fe.pairs} pair{'s' if fe.pairs != 1 else ''}, " if fe.source == "homographies" else ""
            src.add(f"{fe.source} ({n}{hfov})")
    return " + ".join(sorted(src))


def register(
    feats: Sequence[Features | None],
    names: Sequence[str],
    placements: dict[str, Placement] | None = None,
    ratio: float = 0.8,
    min_inliers: int = 15,
    conf_thresh: float = 1.0,
    proxy_factors: Sequence[float] | None = None,
    wave: bool = True,
    max_pair_rms: float = 12.0,
    progress: Callable[[str, int, int], None] | None = None,
    default_hfov: float = 50.0,
    debug: bool = False,
    shared_focal: bool = True,
    estimate_k1: bool = False,
    lens_full: bool = False,
) -> Registration:
    """Register images (``feats[k]`` None for unreadable ones)."""
    placements = placements or {}
    n = len(feats)
    dropped: dict[int, str] = {}
    ok = [k for k in range(n) if feats[k] is not None]
    pri = {k: placements.get(Path(names[k]).name) for k in ok}
    # initial focals: prior, EXIF, then homography estimates, then a guess
    focals = _known_focals(feats, ok, pri)
    prior_cams = _prior_cameras(feats, ok, pri, focals, default_hfov)
    cand = [(i, j) for i, j in candidate_pairs(n, prior_cams) if feats[i] is not None and feats[j] is not None]
    pf = proxy_factors or [1.0] * n
    pairs = match_pairs(feats, cand, pf, ratio, min_inliers, conf_thresh, progress)
    known = set(focals)
    fe = _guess_missing_focals(feats, ok, pairs, focals, default_hfov)
    focal_prior = dict(focals)
    groups = _lens_groups(feats, ok, pri, focal_prior) if shared_focal else None

    def adjust(g: dict[int, int] | None, focal_weight: float) -> _Adjusted:
        return _adjust_main_component(
            feats, ok, pairs, focals, focal_prior, g, prior_cams, max_pair_rms, progress, debug, estimate_k1, lens_full,
            focal_weight=focal_weight,
        )  # fmt: skip

    adj = adjust(groups, 30.0)
    source = _focal_source(pri, feats, fe)
    if fe is not None and fe.source != "others":
        adj, how = _guard_estimated_focals(adjust, adj, [k for k in ok if k not in known], focal_prior, groups)
        source += f", {how}" if how else ""
    pairs = adj.pairs
    cams: dict[int, Camera] = {}
    from_prior: list[int] = []
    comps = _components(ok, pairs)
    main = comps[0]
    final_rots = {k: adj.rots[k] for k in main}
    final_foc = {k: adj.focals[k] for k in main}
    final_k1 = {k: adj.k1.get(k, 0.0) for k in main}
    k1_med = float(np.median(list(final_k1.values())))
    # images outside the main component: place from priors when possible
    pk = [k for k in main if k in prior_cams]
    Q = None
    if pk:
        A = np.concatenate([prior_cams[k].rot for k in pk], axis=1).T
        B = np.concatenate([final_rots[k] for k in pk], axis=1).T
        Q = kabsch(A, B)  # maps prior world -> solved world
    med_rel = float(np.median([final_foc[k] / feats[k].width for k in main]))  # type: ignore[union-attr]
    for comp in comps[1:]:
        for k in comp:
            if k in prior_cams and Q is not None:
                final_rots[k] = Q @ prior_cams[k].rot
                p = pri[k]
                final_foc[k] = float(p.focal) if p is not None and p.focal else med_rel * feats[k].width  # type: ignore[union-attr]
                from_prior.append(k)
            else:
                dropped[k] = NO_MATCH
    if wave:
        final_rots = wave_correct(final_rots, ref=min(main))
    for k in final_rots:
        f = feats[k]
        assert f is not None
        lk = adj.lens.get(k)
        if lens_full and lk is not None:
            cams[k] = Camera.make(f.width, f.height, final_foc[k], final_rots[k], lk[0], lk[1], lk[2], lk[3])
        else:
            cams[k] = Camera.make(f.width, f.height, final_foc[k], final_rots[k], k1=final_k1.get(k, k1_med))
    return Registration(cams, dropped, sorted(from_prior), pairs, adj.rms, source)
