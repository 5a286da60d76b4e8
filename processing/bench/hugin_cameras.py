"""Terapan's cameras against Hugin's, image by image, without rendering.

python -m processing.bench.hugin_cameras OURS.tif.layout.json PROJECT.pto
python -m processing.bench.hugin_cameras --fit PROJECT.pto [OTHER.pto ...]
python -m processing.bench.hugin_cameras A.pto B.pto     # Hugin against Hugin

Each image both placed: a 9 x 9 grid of its source pixels turned into world
rays by each tool's own camera (Terapan: Camera with its lens; Hugin: its
y, p, r, v, a, b, c, d, e, processing/bench/hugin.hugin_image_rays), one
sphere rotation fitted between the two frames (the tools choose different
yaw and horizon), residual angles (RMS, median, worst image). Unlike the
misalignment of the rendered results (stitch_measures.misalignment) it needs
no matching, so it separates geometry from rendering. Also: each tool's
"cone" (the elevation of the optical axes above the plane they best lie in:
a ring tilted differently by the two tools cannot be rotated onto the other)
and the lens of the first image (hugin.lens_agreement). One JSON line.

--fit: Terapan's bundle adjustment (rotations, focal, k1, k2, d, e; one
lens; least squares on the angles, as Hugin's optimiser: no Huber) on the
project's own control points, started at the project's focal; prints the
angular RMS on those points of our fit and of each project's own cameras,
and our lens against each project's (lens_agreement).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from processing.stitch.project import camera_rays

from .hugin import control_points, hugin_focal, hugin_image_rays, lens_agreement, read_pto
from .stitch_measures import _kabsch


def cone_elevation(axes: np.ndarray) -> float:
    """Mean elevation (degrees) of unit optical axes above the plane they best lie in."""
    c = axes.mean(0)
    u = np.linalg.svd(axes - c)[2][-1]
    if c @ u < 0:
        u = -u
    return float(np.degrees(np.arcsin(np.clip(axes @ u, -1, 1))).mean())


def _views(path: str | Path) -> dict[str, tuple[Any, Any, int, int, tuple[float, float]]]:
    """name -> (rays(xs, ys), lens for lens_agreement, width, height, principal point)
    of a Terapan layout (.json) or a Hugin project (.pto)."""
    path = Path(path)
    out: dict[str, tuple[Any, Any, int, int, tuple[float, float]]] = {}
    if path.suffix == ".pto":
        pto = read_pto(path)
        for k, im in enumerate(pto.images):
            w, h = int(im["w"]), int(im["h"])
            lens = pto.lens(k)

            def rays(xs, ys, k=k):
                return hugin_image_rays(pto, k, xs, ys)

            out[Path(im.get("n", "")).name] = (rays, lens, w, h, ((w - 1) / 2 + lens["d"], (h - 1) / 2 + lens["e"]))
        return out
    from processing.stitch.pipeline import layout_from_json

    for L in layout_from_json(path).layers:
        cam = L.cam

        def rays(xs, ys, cam=cam):
            return camera_rays(cam, xs, ys)

        out[Path(L.path).name] = (rays, cam, cam.width, cam.height, cam.center)
    return out


def compare_cameras(a_path: str | Path, pto_path: str | Path, grid: int = 9) -> dict[str, Any]:
    """A (Terapan's layout, or another Hugin project) against Hugin's project,
    image by image (module docstring)."""
    A, B = _views(a_path), _views(pto_path)
    ta, ha, axes_t, axes_h, per = [], [], [], [], []
    used: list[str] = []
    first = None
    for name, (ra, la, w, h, ca) in A.items():
        if name not in B:
            continue
        rb, lb, _w, _h, cb = B[name]
        used.append(name)
        xs, ys = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))
        ta.append(ra(xs.ravel(), ys.ravel()))
        ha.append(rb(xs.ravel(), ys.ravel()))
        axes_t.append(ra(np.array([ca[0]]), np.array([ca[1]]))[0])
        axes_h.append(rb(np.array([cb[0]]), np.array([cb[1]]))[0])
        if first is None and not isinstance(la, dict):
            first = lens_agreement(la, lb)
    if len(ta) < 2:
        return {"images": len(ta)}
    a, b = np.concatenate(ta), np.concatenate(ha)
    Q = _kabsch(b, a)
    ang = np.degrees(np.arccos(np.clip(((b @ Q.T) * a).sum(1), -1, 1)))
    per = [float(np.sqrt(np.mean(x**2))) for x in ang.reshape(len(ta), -1)]
    out: dict[str, Any] = {
        "images": len(ta),
        "rms_deg": round(float(np.sqrt(np.mean(ang**2))), 4),
        "median_deg": round(float(np.median(ang)), 4),
        "worst_image_deg": round(max(per), 4),
        "per_image_deg": {n: round(v, 3) for n, v in zip(used, per, strict=True)},
    }
    if len(ta) >= 3:
        out["cone_deg"] = {
            ("first" if Path(a_path).suffix == ".pto" else "terapan"): round(cone_elevation(np.array(axes_t)), 3),
            "hugin": round(cone_elevation(np.array(axes_h)), 3),
        }
    if first is not None:
        out["lens_first_image"] = first
        out["focal_rms_source_px"] = round(math.radians(out["rms_deg"]) * first["focal_terapan"], 2)
    return out


def _pairs(pto_path: Path) -> list[Any]:
    from processing.stitch.registration import PairMatch

    by: dict[tuple[int, int], list] = {}
    for a, x, y, b, X, Y in control_points(pto_path):
        pa, pb = ((x, y), (X, Y)) if a < b else ((X, Y), (x, y))
        by.setdefault((min(a, b), max(a, b)), []).append((pa, pb))
    return [
        PairMatch(i, j, np.array([p for p, _ in v]), np.array([q for _, q in v]), len(v), len(v), 1.0, np.eye(3))
        for (i, j), v in by.items()
    ]


def cp_rms_deg(pto_path: str | Path, rays: Any = None) -> float:
    """Angular RMS (degrees) of a project's control points through its own
    cameras (or through ``rays(k, pts)``)."""
    pto_path = Path(pto_path)
    pto = read_pto(pto_path)
    rays = rays or (lambda k, q: hugin_image_rays(pto, k, q[:, 0], q[:, 1]))
    a = np.concatenate(
        [np.arccos(np.clip((rays(p.i, p.pi) * rays(p.j, p.pj)).sum(1), -1, 1)) for p in _pairs(pto_path)]
    )
    return float(np.degrees(np.sqrt(np.mean(a * a))))


def fit_on_control_points(pto_path: str | Path) -> tuple[Any, float]:
    """Our lens fitted on a project's control points (module docstring):
    (the first image's Camera, angular RMS in degrees)."""
    from processing.stitch.project import Camera
    from processing.stitch.registration import Features, _spanning_tree_rotations, bundle_adjust

    pto_path = Path(pto_path)
    pto = read_pto(pto_path)
    W, H = int(pto.images[0]["w"]), int(pto.images[0]["h"])
    pairs = _pairs(pto_path)
    comp = list(range(len(pto.images)))
    feats = [Features(W, H, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))] * len(comp)
    focals = dict.fromkeys(comp, hugin_focal(pto.lens(0), W))
    rots = _spanning_tree_rotations(comp, pairs, feats, focals, 0)
    lens: dict[int, tuple[float, float, float, float]] = {}
    R, F, _pr, _k1 = bundle_adjust(
        comp,
        pairs,
        feats,
        rots,
        focals,
        0,
        max_points=100_000,
        focal_prior=dict(focals),
        groups=dict.fromkeys(comp, 0),
        estimate_k1=True,
        lens_full=True,
        huber_px=1e9,
        lens_out=lens,
    )
    cams = {k: Camera.make(W, H, F[k], R[k], *lens[k]) for k in comp}
    return cams[0], cp_rms_deg(pto_path, lambda k, q: camera_rays(cams[k], q[:, 0], q[:, 1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fit", action="store_true", help="fit our lens on the first project's control points")
    p.add_argument("files", nargs="+", help="LAYOUT PTO, A.pto B.pto, or with --fit: PTO [OTHER.pto ...]")
    args = p.parse_args(argv)
    if not args.fit:
        first, pto = args.files
        print(json.dumps({"first": first, "pto": pto, **compare_cameras(first, pto)}))
        return 0
    cam, rms = fit_on_control_points(args.files[0])
    rec: dict[str, Any] = {
        "control_points_of": args.files[0],
        "terapan": {
            "focal": round(cam.focal, 1),
            "k1": round(cam.k1, 4),
            "k2": round(cam.k2, 4),
            "d": round(cam.d, 2),
            "e": round(cam.e, 2),
            "cp_rms_deg": round(rms, 4),
        },
    }
    for f in args.files:
        lens = read_pto(Path(f)).lens(0)
        rec[f] = {
            "lens": {k: round(v, 5) for k, v in lens.items()},
            "cp_rms_deg_of_its_cameras_on_these_points": round(cp_rms_deg(args.files[0], _rays_of(Path(f))), 4),
            "against_terapan": lens_agreement(cam, lens),
        }
    print(json.dumps(rec))
    return 0


def _rays_of(pto_path: Path) -> Any:
    pto = read_pto(pto_path)
    return lambda k, q: hugin_image_rays(pto, k, q[:, 0], q[:, 1])


if __name__ == "__main__":
    sys.exit(main())
