"""python -m processing bench stitch [--set parrington|durlach|meadow|big|budapest|weir|exposure_error|shared[,...]]
[--compare-openstitching] [--compare-hugin]

Each run stitches in a child process (fair peak-memory measurement with
psutil) and prints one JSON object: images placed, seconds, peak RSS and,
where there is a reference, quality:
- meadow: synthetic views cut from the real 360-degree cube map (ground
  truth); PSNR on covered pixels after aligning the stitched frame to the
  true one (rotation from the cameras), and residual misalignment (RMS, px)
  of the solved cameras against the true ones.
- durlach: agreement with Hugin's hugin_result_equirect.jpg (scaled to the
  same size, yaw aligned by circular cross-correlation): PSNR and SSIM on
  pixels both cover.
- big: procedurally generated tiles (several GP), peak memory.
- --compare-hugin: Hugin's chain (processing/bench/hugin.py) on the same
  photos in the same run, and for both results: images placed, seconds, peak
  memory, clipped fraction (against the inputs'), ghost measure, holes, and
  their misalignment against each other (processing/bench/stitch_measures.py).
  ``--set shared`` runs durlach and the other shared sets one after the other,
  one JSON line each; also Terapan's cameras against Hugin's image by image
  (processing/bench/hugin_cameras.py). ``--hugin-from DIR`` reuses the Hugin
  results of an earlier run's ``--work DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import emit

SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


#: photo sets in shared/data/panoramas and how Terapan stitches them (Hugin gets the same projection)
PHOTO_SETS = {
    "durlach": {"projection": "equirectangular", "wrap": True},
    "parrington": {"projection": "cylindrical", "wrap": True},
    "budapest": {"projection": "cylindrical", "wrap": False},
    "weir": {"projection": "cylindrical", "wrap": False},
    "exposure_error": {"projection": "cylindrical", "wrap": False},
}
SETS = (*PHOTO_SETS, "meadow", "big")
SHARED_SETS = tuple(PHOTO_SETS)


def _set_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    out: list[str] = []
    for n in names:
        if n == "shared":
            out += SHARED_SETS
        elif n in SETS:
            out.append(n)
        else:
            raise argparse.ArgumentTypeError(f"unknown set {n!r} (one of {', '.join(SETS)} or 'shared')")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        default="parrington",
        type=_set_list,
        help=f"one of {', '.join(SETS)}, 'shared' ({', '.join(SHARED_SETS)}) or a comma-separated list",
    )
    p.add_argument("--compare-hugin", action="store_true", help="also run Hugin's chain (Debian's hugin-tools)")
    p.add_argument("--no-install", action="store_true", help="--compare-hugin: never apt-get install Hugin")
    p.add_argument(
        "--hugin-from",
        help="--compare-hugin: reuse Hugin's results of an earlier run's --work folder (DIR/<set>/hugin) "
        "instead of running its chain again (Hugin's seconds and peak then come from that run's JSON)",
    )
    p.add_argument("--compare-openstitching", action="store_true", help="also run OpenStitching (pip 'stitching')")
    p.add_argument(
        "--openstitching-python",
        default=os.environ.get("TERAPAN_OPENSTITCHING_PYTHON"),
        help="Python of a virtualenv with 'stitching' installed (it needs OpenCV 4)",
    )
    p.add_argument("--work", help="work folder (default: a temporary one)")
    p.add_argument("--face", type=int, default=1024, help="meadow: cube face size")
    p.add_argument("--big-gp", type=float, default=3.0, help="big: output gigapixels")
    p.add_argument("--max-mp", type=float, default=0.0, help="limit output megapixels")
    p.add_argument("--no-response", action="store_true", help="no camera response model (gains on the encoded values)")
    p.add_argument("--no-fine-seams", action="store_true", help="proxy seam labels only (no full-resolution seams)")


# ----------------------------------------------------------- child processes


def _child_stitch(files: list[str], out: str, params: dict, placements: str | None) -> None:
    from processing.stitch.pipeline import StitchParams, stitch_files
    from processing.stitch.registration import load_placements

    pl = load_placements(placements) if placements else None
    res = stitch_files(files, out, StitchParams.from_dict(params), pl)
    print(
        "RESULT "
        + json.dumps(
            {
                **res.summary(),
                "timings": res.timings,
                "cameras": res.cameras,
                "rms_px": res.rms_px,
                "layout": res.layout_path,
            }
        )
    )


def _child_openstitching(files: list[str], out: str, settings: dict) -> None:
    import cv2
    from stitching import Stitcher

    t = time.perf_counter()
    st = Stitcher(**settings)
    pano = st.stitch(files)
    cv2.imwrite(out, pano)
    placed = len(list(st.images.names)) if hasattr(st.images, "names") else None
    print(
        "RESULT "
        + json.dumps(
            {
                "placed": placed,
                "total": len(files),
                "width": pano.shape[1],
                "height": pano.shape[0],
                "seconds": time.perf_counter() - t,
            }
        )
    )


def run_child(code: str, python: str | None = None) -> tuple[dict, float, float]:
    """Run python code in a child, sample its RSS with psutil; (result, seconds, peak MB)."""
    import psutil

    t0 = time.perf_counter()
    peak = 0
    cpu = 0.0
    # output goes to files, not pipes: a long RESULT line must not block the child
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        # The code goes through stdin: with thousands of file names it is
        # longer than one command-line argument may be (128 KiB on Linux).
        proc = subprocess.Popen(
            [python or sys.executable, "-"],
            stdin=subprocess.PIPE,
            stdout=fout,
            stderr=ferr,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert proc.stdin is not None
        proc.stdin.write(code)
        proc.stdin.close()
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, ps.memory_info().rss)
                t = ps.cpu_times()
                cpu = t.user + t.system
            time.sleep(0.05)
        proc.wait()
        secs = time.perf_counter() - t0
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    run_child.last_cpu_s = cpu  # type: ignore[attr-defined]
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (err.strip().splitlines() or ["failed"])[-1]}, secs, peak / 2**20
    return json.loads(lines[-1][7:]), secs, peak / 2**20


def stitch_in_child(
    files: list[Path], out: Path, params: dict, placements: Path | None = None
) -> tuple[dict, float, float]:
    code = (
        "from processing.bench.stitch import _child_stitch\n"
        f"_child_stitch({json.dumps([str(f) for f in files])}, {str(out)!r}, {params!r}, "
        f"{(str(placements) if placements else None)!r})\n"
    )
    return run_child(code)


def openstitching_in_child(
    files: list[Path], out: Path, settings: dict, python: str | None = None
) -> tuple[dict, float, float]:
    code = (
        "from processing.bench.stitch import _child_openstitching\n"
        f"_child_openstitching({json.dumps([str(f) for f in files])}, {str(out)!r}, {settings!r})\n"
    )
    return run_child(code, python)


# --------------------------------------------------------------- measures


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    d = (a[mask] - b[mask]) ** 2
    mse = float(d.mean()) if d.size else float("nan")
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def read_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the stitched output (tiled TIFF / PNG) as float RGB + alpha."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
    else:
        import cv2

        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        a = a[..., [2, 1, 0, 3]] if a.shape[2] == 4 else a[..., ::-1]
    mx = 255.0 if a.dtype == np.uint8 else 65535.0
    rgb = a[..., :3].astype(np.float32) / mx
    alpha = a[..., 3].astype(np.float32) / mx if a.shape[2] == 4 else np.ones(a.shape[:2], np.float32)
    return rgb, alpha


def meadow_quality(
    out_dir: Path, pano: Path, layout_path: Path, cube: np.ndarray, from_prior: set[str] | None = None
) -> dict:
    """PSNR vs the truth after aligning frames, and camera misalignment (px)."""
    from processing.stitch.pipeline import layout_from_json
    from processing.stitch.project import Camera, canvas_lonlat, rotation_from_ypr
    from processing.stitch.registration import kabsch
    from processing.synth.synth_pano import sample_cube

    truth = json.loads((out_dir / "truth.json").read_text())
    lay = layout_from_json(layout_path)
    by_name = {Path(L.path).name: L for L in lay.layers}
    est, tru, names = [], [], []
    for t in truth:
        if t["file"] in by_name:
            est.append(by_name[t["file"]].cam.rot)
            tru.append(rotation_from_ypr(t["yaw"], t["pitch"], t["roll"]))
            names.append(t["file"])
    A = np.concatenate(est, axis=1).T
    B = np.concatenate(tru, axis=1).T
    Q = kabsch(A, B)  # est world -> true world
    yaw_deg = math.degrees(math.atan2(Q[0, 2], Q[2, 2]))
    tilt_deg = math.degrees(math.acos(np.clip(Q[1, 1], -1, 1)))
    # residual misalignment: pixel grid of each view through est vs true cameras
    errs = []
    for t, Re, Rt in zip([t for t in truth if t["file"] in by_name], est, tru, strict=True):
        L = by_name[t["file"]]
        c: Camera = L.cam
        gx, gy = np.meshgrid(np.linspace(0, c.width - 1, 9), np.linspace(0, c.height - 1, 9))
        ve = np.stack([(gx - (c.width - 1) / 2) / c.focal, (gy - (c.height - 1) / 2) / c.focal, np.ones_like(gx)], -1)
        vt = np.stack(
            [(gx - (c.width - 1) / 2) / t["focal"], (gy - (c.height - 1) / 2) / t["focal"], np.ones_like(gx)], -1
        )
        ve = ve.reshape(-1, 3) / np.linalg.norm(ve.reshape(-1, 3), axis=1, keepdims=True)
        vt = vt.reshape(-1, 3) / np.linalg.norm(vt.reshape(-1, 3), axis=1, keepdims=True)
        we = (Q @ Re @ ve.T).T
        wt = (Rt @ vt.T).T
        ang = np.arccos(np.clip((we * wt).sum(1), -1, 1))
        errs.append(ang * lay.canvas.su)
    mis = float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))
    fp = from_prior or set()
    matched = [e for e, nm in zip(errs, names, strict=True) if nm not in fp]
    mis_m = float(np.sqrt(np.mean(np.concatenate(matched) ** 2))) if matched else float("nan")
    rgb, alpha = read_rgba(pano)
    H, W = alpha.shape
    lon, lat = canvas_lonlat(np.arange(W), np.arange(H), lay.canvas)
    cl = np.cos(lat)[:, None]
    rays = np.stack([cl * np.sin(lon)[None, :], -np.sin(lat)[:, None] * np.ones((1, W)), cl * np.cos(lon)[None, :]], -1)
    gt = sample_cube(cube, rays @ Q.T)
    mask = alpha > 0.999
    # the overall exposure level is a free choice of the stitcher (gains are
    # relative): report PSNR also after one global per-channel gain
    g = np.array([(gt[mask][:, c] * rgb[mask][:, c]).sum() / max((rgb[mask][:, c] ** 2).sum(), 1e-9) for c in range(3)])
    band = mask & (np.abs(lat)[:, None] < math.radians(60))
    return {
        "psnr_db": round(psnr(rgb, gt, mask), 2),
        "psnr_db_global_gain": round(psnr(np.clip(rgb * g, 0, 1), gt, mask), 2),
        "psnr_db_lat60": round(psnr(rgb, gt, band), 2),
        # views with gain > 1 clip the bright sky; compensation cannot restore it
        "psnr_db_truth_below_0.9": round(psnr(rgb, gt, mask & (gt.max(2) < 0.9)), 2),
        "global_gain": [round(float(x), 4) for x in g],
        "covered": round(float(mask.mean()), 4),
        "misalignment_rms_px": round(mis, 3),
        "misalignment_matched_rms_px": round(mis_m, 3),
        "placed_from_prior": sorted(fp),
        "align_yaw_deg": round(yaw_deg, 3),
        "align_tilt_deg": round(tilt_deg, 3),
    }


def _eq_rays(xy: np.ndarray, W: int) -> np.ndarray:
    H = W // 2
    lon = ((xy[:, 0] + 0.5) / W - 0.5) * 2 * math.pi
    lat = (0.5 - (xy[:, 1] + 0.5) / H) * math.pi
    return np.stack([np.cos(lat) * np.sin(lon), -np.sin(lat), np.cos(lat) * np.cos(lon)], 1)


def hugin_agreement(pano: Path, hugin: Path, W2: int = 4096) -> dict:
    """Agreement with Hugin's equirectangular result: SIFT matches between the
    two (both scaled to W2 x W2/2), a sphere rotation fitted to them (the two
    tools choose different yaw and horizon), the residual misalignment (RMS,
    in pixels of Hugin's 8432-px-wide canvas), then PSNR / SSIM of ours
    against Hugin's resampled into our frame, on pixels both cover, after a
    per-channel gain (the tools compensate exposure differently)."""
    import cv2
    from skimage.metrics import structural_similarity

    from processing.stitch.registration import _ratio_matches, kabsch

    rgb, alpha = read_rgba(pano)
    ref = cv2.imread(str(hugin))[..., ::-1].astype(np.float32) / 255.0
    Wh = ref.shape[1]
    H2 = W2 // 2
    ours = cv2.resize(rgb, (W2, H2), interpolation=cv2.INTER_AREA)
    oa = cv2.resize(alpha, (W2, H2), interpolation=cv2.INTER_AREA)
    full = np.zeros((H2, W2, 3), np.float32)
    refs = cv2.resize(ref, (W2, round(ref.shape[0] * W2 / Wh)), interpolation=cv2.INTER_AREA)
    full[: refs.shape[0]] = refs[:H2]
    sift = cv2.SIFT_create(nfeatures=8000)

    def feats(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) * 255).astype(np.uint8)
        k, d = sift.detectAndCompute(g, None)
        d = d / np.maximum(d.sum(1, keepdims=True), 1e-7)
        return np.array([p.pt for p in k]), np.sqrt(d).astype(np.float32)

    p1, d1 = feats(ours)
    p2, d2 = feats(full)
    m = _ratio_matches(d1, d2, 0.75)
    r1, r2 = _eq_rays(p1[m[:, 0]], W2), _eq_rays(p2[m[:, 1]], W2)
    keep = np.ones(len(m), bool)
    for _ in range(5):
        Q = kabsch(r2[keep], r1[keep])  # hugin ray -> our ray
        ang = np.arccos(np.clip(((r2 @ Q.T) * r1).sum(1), -1, 1))
        keep = ang < max(3 * np.median(ang[keep]), 2 * math.pi / W2)
    ang_px = ang[keep] * Wh / (2 * math.pi)
    # resample Hugin's image into our frame
    lon = ((np.arange(W2) + 0.5) / W2 - 0.5) * 2 * math.pi
    lat = (0.5 - (np.arange(H2) + 0.5) / H2) * math.pi
    cl = np.cos(lat)[:, None]
    rays = np.stack(
        [cl * np.sin(lon)[None, :], -np.sin(lat)[:, None] * np.ones((1, W2)), cl * np.cos(lon)[None, :]], -1
    )
    hr = rays @ Q  # our ray -> hugin ray (Q^T applied to rows)
    hl = np.arctan2(hr[..., 0], hr[..., 2])
    ht = np.arctan2(-hr[..., 1], np.hypot(hr[..., 0], hr[..., 2]))
    mx = ((hl / (2 * math.pi) + 0.5) * W2 - 0.5).astype(np.float32)
    my = ((0.5 - ht / math.pi) * H2 - 0.5).astype(np.float32)
    warped = cv2.remap(full, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    cover = warped.sum(2) > 0.01
    mk = (oa > 0.99) & cv2.erode(cover.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    gain = np.array([np.median(warped[mk][:, c]) / max(np.median(ours[mk][:, c]), 1e-6) for c in range(3)])
    o2 = np.clip(ours * gain, 0, 1)
    ssim = structural_similarity(
        cv2.cvtColor(o2, cv2.COLOR_RGB2GRAY) * mk, cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY) * mk, data_range=1.0
    )
    rot_deg = math.degrees(math.acos(np.clip((np.trace(Q) - 1) / 2, -1, 1)))
    return {
        "hugin_matches": int(keep.sum()),
        "hugin_misalignment_rms_px": round(float(np.sqrt(np.mean(ang_px**2))), 2),
        "hugin_misalignment_median_px": round(float(np.median(ang_px)), 2),
        "hugin_frame_rotation_deg": round(rot_deg, 2),
        "hugin_psnr_db": round(psnr(o2, warped, mk), 2),
        "hugin_ssim_masked": round(float(ssim), 4),
        "hugin_compare_px": [W2, H2],
        "both_cover": round(float(mk.mean()), 4),
    }


# --------------------------------------------------------------------- sets


def _files(d: Path, skip: str = "hugin") -> list[Path]:
    from processing.io.imageio import is_image_path

    return sorted(p for p in d.iterdir() if is_image_path(p) and skip not in p.name)


#: Vertical half extent of the big set, in tan(latitude) (+-63.4 degrees).
BIG_MAX_TAN = 2.0


def big_geometry(gp: float, tile: int = 1024, hfov: float = 8.0, overlap: float = 0.3) -> tuple[float, float, int, int]:
    """Focal length (px), horizontal FOV (degrees), yaw and pitch counts of the
    big set's rig for a ~GP gigapixel cylinder (area = 2 pi f x 2 t f, with t
    the vertical half extent in tan(latitude))."""
    f = tile / 2 / math.tan(math.radians(hfov / 2))
    t_half = gp * 1e9 / (2 * math.pi * f) / f / 2
    if t_half > BIG_MAX_TAN:
        # Past +-63 degrees a cylinder stretches too much (and the canvas stops
        # at tan = 4): a longer focal length (more, narrower tiles) gives the
        # requested area instead.
        t_half = BIG_MAX_TAN
        f = math.sqrt(gp * 1e9 / (4 * math.pi * t_half))
        hfov = math.degrees(2 * math.atan(tile / 2 / f))
    step = hfov * (1 - overlap)
    n_yaw = math.ceil(360 / step)
    max_pitch = math.degrees(math.atan(t_half)) - hfov / 2
    n_pitch = max(1, 2 * math.ceil(max_pitch / step) + 1)
    return f, hfov, n_yaw, n_pitch


def make_big_tiles(
    out: Path, gp: float, tile: int = 1024, hfov: float = 8.0, overlap: float = 0.3
) -> tuple[list[Path], Path]:
    """Procedural tiles of a ~``gp`` gigapixel 360-degree cylinder: perspective
    views of a multi-octave noise texture defined on the cylinder (random
    lattices, periodic in longitude, interpolated per tile with cv2.remap, so
    overlapping tiles agree), JPEG, plus angles.csv with the exact placements."""
    import cv2

    from processing.stitch.project import Camera, rotation_from_ypr

    out.mkdir(parents=True, exist_ok=True)
    f, hfov, n_yaw, n_pitch = big_geometry(gp, tile, hfov, overlap)
    W = 2 * math.pi * f
    step = hfov * (1 - overlap)
    top = math.tan(math.radians(max(0.0, (n_pitch - 1) / 2 * step) + hfov)) * f
    rng = np.random.default_rng(0)
    lattices = []
    for cell in (5.0, 20.0, 80.0):
        lw = max(4, round(W / cell))
        lh = int(2 * top / cell) + 4
        lattices.append((W / lw, lh, rng.random((lh, lw, 3), dtype=np.float32)))
    files, rows = [], ["file,yaw,pitch,roll,focal"]
    c = (tile - 1) / 2
    xx, yy = np.meshgrid((np.arange(tile) - c) / f, (np.arange(tile) - c) / f)
    for i in range(n_pitch):
        pitch = (i - (n_pitch - 1) / 2) * step
        for j in range(n_yaw):
            yaw = j * 360 / n_yaw - 180
            name = f"tile_{i:02d}_{j:03d}.jpg"
            files.append(out / name)
            rows.append(f"{name},{yaw:.4f},{pitch:.4f},0,{f:.3f}")
            if (out / name).is_file():
                continue
            cam = Camera.make(tile, tile, f, rotation_from_ypr(yaw, pitch, 0))
            v = np.stack([xx, yy, np.ones_like(xx)], -1) @ cam.rot.T
            X = np.mod(np.arctan2(v[..., 0], v[..., 2]), 2 * math.pi) * f
            Y = v[..., 1] / np.hypot(v[..., 0], v[..., 2]) * f + top
            img = np.zeros((tile, tile, 3), np.float32)
            for k, (cell, lh, lat) in enumerate(lattices):
                mx = (X / cell).astype(np.float32)
                my = np.clip(Y / cell, 0, lh - 1).astype(np.float32)
                # only the lattice rows this tile needs: cv2.remap refuses
                # sources taller than 32767 (a 3-gigapixel cylinder's lattice)
                r0 = max(0, int(my.min()) - 3)
                r1 = min(lh, int(my.max()) + 4)
                img += 0.5**k * cv2.remap(
                    lat[r0:r1], mx, my - np.float32(r0), cv2.INTER_CUBIC, borderMode=cv2.BORDER_WRAP
                )
            img = np.clip(img / 1.75 * 255, 0, 255).astype(np.uint8)
            cv2.imwrite(str(out / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    (out / "angles.csv").write_text("\n".join(rows) + "\n")
    return files, out / "angles.csv"


def run(args: argparse.Namespace) -> int:
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_stitch_"))
    work.mkdir(parents=True, exist_ok=True)
    hugin_skip = None
    if args.compare_hugin:
        from .hugin import ensure_hugin

        hugin_skip = ensure_hugin(install=not args.no_install)
    for name in args.set:
        run_set(args, name, work / name if len(args.set) > 1 else work, hugin_skip)
    return 0


def _hfov_from_list(path: Path) -> float | None:
    """Horizontal field of view (degrees) from Parrington's 'name focal' list
    and the first image's width (its JPEGs carry no EXIF focal length)."""
    from processing.io.imageio import probe

    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            w = probe(path.parent / parts[0]).width
            return math.degrees(2 * math.atan(w / 2 / float(parts[1])))
    return None


def run_set(args: argparse.Namespace, name: str, work: Path, hugin_skip: str | None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    rec: dict = {"bench": "stitch", "set": name}
    placements = None
    params: dict = {"max_output_mp": args.max_mp}
    if getattr(args, "no_response", False):
        params["response"] = False
    if getattr(args, "no_fine_seams", False):
        params["fine_seams"] = False
    if name in PHOTO_SETS:
        d = SHARED / "panoramas" / name
        if not d.is_dir():
            emit({**rec, "skipped": f"{d} not found"})
            return
        files = _files(d)
        # report what was placed rather than stop (a partial set fails the CLI)
        params.update(PHOTO_SETS[name], allow_partial=True)
        if name == "parrington":
            placements = d / "image_list.txt"
        out = work / f"{name}.tif"
    elif name == "meadow":
        from processing.synth.synth_pano import cube_to_equirect, cube_views, load_cube, write_views

        src = SHARED / "photos" / "meadow_cubemap_2048x12288.jpg"
        if not src.is_file():
            emit({**rec, "skipped": f"{src} not found"})
            return
        cube = load_cube(src, args.face)
        views = cube_views(cube, (640, 480), 65.0, 40.0, pitches=(-40.0, 0.0, 40.0))
        vdir = write_views(views, work / "meadow_views", cube_to_equirect(cube, 1024))
        files = sorted(vdir.glob("view_*.png"))
        params.update(projection="equirectangular", wrap=True, vignetting=True, bits=16)
        placements = vdir / "rig.csv"  # nominal rig angles (the truth has +-2 deg jitter)
        out = work / "meadow.tif"
    else:
        files, placements = make_big_tiles(work / "big_tiles", args.big_gp)
        params.update(projection="cylindrical", wrap=True, cache_mb=1200)
        out = work / "big.tif"
    res, secs, peak = stitch_in_child(files, out, params, placements)
    rec.update(
        {
            "placed": res.get("placed"),
            "total": len(files),
            "dropped": res.get("dropped"),
            "width": res.get("width"),
            "height": res.get("height"),
            "seconds": round(secs, 2),
            "peak_mb": round(peak, 1),
            "cpu_seconds": round(getattr(run_child, "last_cpu_s", 0.0), 1),
            "timings": res.get("timings"),
            "pair_rms_px": res.get("rms_px"),
            "focal_source": res.get("focal_source"),
            "clipped_output": res.get("clipped_output"),
            "clipped_inputs": res.get("clipped_inputs"),
            "error": res.get("error"),
        }
    )
    if "error" not in res:
        lay = json.loads(Path(res["layout"]).read_text())
        rec["exposure_model"] = lay.get("exposure")
        if name == "meadow":
            fp = {c["file"] for c in res.get("cameras", []) if c.get("from_prior")}
            rec.update(meadow_quality(work / "meadow_views", out, Path(res["layout"]), cube, fp))
        if name == "durlach":
            rec.update(hugin_agreement(out, SHARED / "panoramas" / "durlach" / "hugin_result_equirect.jpg"))
    if args.compare_hugin:
        if hugin_skip:
            rec["hugin"] = {"skipped": hugin_skip}
        elif name not in PHOTO_SETS:
            rec["hugin"] = {"skipped": f"set {name} has no photos for Hugin"}
        else:
            from .hugin_compare import compare_with_hugin

            hfov = _hfov_from_list(placements) if placements else None
            reuse = Path(args.hugin_from) / name / "hugin" if args.hugin_from else None
            rec.update(compare_with_hugin(files, out, res, work / "hugin", params["projection"], hfov, reuse))
    if args.compare_openstitching:
        # OpenStitching needs OpenCV 4: it runs in its own virtualenv's Python.
        py = args.openstitching_python
        try:
            if py is None:
                import stitching  # noqa: F401
            o, s2, p2 = openstitching_in_child(
                files,
                work / f"{name}_openstitching.jpg",
                {"detector": "sift", "confidence_threshold": 0.5, "crop": False},
                python=py,
            )
            rec["openstitching"] = {**o, "seconds": round(s2, 2), "peak_mb": round(p2, 1)}
        except ImportError:
            rec["openstitching"] = {"error": "package 'stitching' not installed (see requirements-bench.txt)"}
    rec = {k: v for k, v in rec.items() if v is not None}
    emit(rec)
