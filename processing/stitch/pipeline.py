"""Stitching: registration -> layout -> exposure -> block-wise seams/blending.

``stitch_files(paths, out_path, params)`` writes the panorama and, beside it,
``<out>.layout.json`` (cameras, canvas, gains, footprints, blend settings):
``render_region(layout, rect)`` re-renders any output rectangle alone from
that file (partial re-render), and ``render_to_file`` streams blocks into a
tiled BigTIFF so memory never grows with the panorama's area.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..io.atomic import atomic_path
from ..io.errors import InputError, ProcessingError
from ..io.imageio import load_image, probe
from ..io.params import StageParams
from .blend import Layer, SourceCache, default_bands, margin_for, render_rect
from .exposure import (
    apply_vignetting_to_warps,
    brightest_unclipped,
    correct_warps,
    estimate_vignetting,
    lens_groups,
    overlap_stats,
    proxy_warp,
    solve_exposure,
    solve_gains,
    thumbnail,
)
from .features_store import load_features
from .fine_seams import fine_seams
from .project import (
    AZIMUTHAL,
    PROJECTIONS,
    Camera,
    Canvas,
    autocrop,
    covers_360,
    footprint,
    make_canvas,
    ypr_from_rotation,
)
from .registration import Features, Placement, detect, exif_focal_px, proxy_gray, register
from .response import mean_response
from .seam_patches import FineSeams
from .seams import refine_seams
from .tone import Tone, shoulder_for

Progress = Callable[[str, int, int], None]
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class StitchParams(StageParams):
    VERSION: ClassVar[int] = 5
    STAGE: ClassVar[str] = "stitch"

    projection: str = "cylindrical"
    wrap: bool = True
    proxy_mp: float = 0.5  # feature proxies
    nfeatures: int = 2000
    ratio: float = 0.8
    min_inliers: int = 15
    conf_thresh: float = 1.0
    wave_correct: bool = True
    # estimate radial distortion k1 per lens in the bundle adjustment (lenses
    # with at least 400 matched points and 3 images; Hugin fits its b by default too)
    lens_k1: bool = True
    # k1, k2 and the principal point shift d, e per lens (priors; only lenses
    # with enough matched points, see registration.bundle_adjust)
    lens_full: bool = False
    scale: float = 1.0  # output px/rad = scale * median focal
    max_output_mp: float = 0.0  # 0 = no limit; else shrink the canvas to fit
    bands: int = -1  # -1 = automatic
    gain_compensation: bool = True
    seams: str = "dp"  # "dp": Voronoi refined by dynamic programming on a proxy; "voronoi"
    # "dp" only: cut the seams again at full resolution along the proxy seams
    # (fine_seams.py), so thin structures keep one owner instead of proxy-sized steps
    fine_seams: bool = True
    vignetting: bool = False
    # "joint": EV + white balance (+ vignetting per lens) on unclipped overlap
    # pixel pairs (exposure.solve_exposure); "means": per-channel gains from
    # overlap means (OpenCV's equations, the first version)
    exposure: str = "joint"
    # "joint" only: a camera response per lens fitted with the exposure
    # (response.py; gains and vignetting in linear light); False: the gains
    # scale the encoded values (a power-law response)
    response: bool = True
    tone: str = "shoulder"  # "shoulder": never clip what the inputs did not (tone.py); "clip"
    exposure_mp: float = 2.0  # proxy canvas size for exposure
    block: int = 1024
    bits: int = 8  # 8 or 16 bits per sample in the output
    cache_mb: int = 1200
    # a failed panorama fails: fewer than this share of the images in the
    # main (matched) component raises IncompletePanorama, unless allow_partial
    min_share: float = 0.5
    allow_partial: bool = False
    # "auto": cut partial (not 360-degree) panoramas to the largest filled
    # rectangle; "on": always (a 360-degree one loses its wrap); "off": never
    crop: str = "auto"

    def validate(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}")
        if self.bits not in (8, 16):
            raise ValueError("bits must be 8 or 16")
        if self.seams not in ("dp", "voronoi"):
            raise ValueError("seams must be 'dp' or 'voronoi'")
        if self.exposure not in ("joint", "means"):
            raise ValueError("exposure must be 'joint' or 'means'")
        if self.crop not in ("auto", "on", "off"):
            raise ValueError("crop must be 'auto', 'on' or 'off'")
        if self.tone not in ("shoulder", "clip"):
            raise ValueError("tone must be 'shoulder' or 'clip'")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError("min_share must be between 0 and 1")
        if self.block < 64 or self.block % 64:
            raise ValueError("block must be a multiple of 64")


class IncompletePanorama(InputError):
    """Too few images joined the main component: nothing is written."""

    def __init__(self, folder: str | Path, joined: int, total: int, need: float, dropped: dict[str, str]) -> None:
        self.joined, self.total, self.dropped = joined, total, dropped
        names = ", ".join(f"{n} ({r})" for n, r in dropped.items())
        super().__init__(
            folder,
            f"only {joined} of {total} images joined the main component (at least {need:.0%} needed); "
            f"dropped: {names}; --allow-partial stitches what joined",
        )


@dataclass
class StitchResult:
    placed: int
    total: int
    dropped: list[dict[str, str]]
    width: int
    height: int
    seconds: float
    cameras: list[dict[str, Any]] = field(default_factory=list)
    layout_path: str = ""
    out_path: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    rms_px: float = 0.0
    clipped_output: float = 0.0  # share of covered output pixels with every channel >= 254/255
    clipped_inputs: float = 0.0  # the same share over all input pixels
    focal_source: str = ""  # where the focals came from (registration.register)

    def summary(self) -> dict[str, Any]:
        return {
            "placed": self.placed,
            "total": self.total,
            "dropped": self.dropped,
            "width": self.width,
            "height": self.height,
            "seconds": round(self.seconds, 2),
            "clipped_output": round(self.clipped_output, 5),
            "clipped_inputs": round(self.clipped_inputs, 5),
            "focal_source": self.focal_source,
        }


@dataclass
class Layout:
    canvas: Canvas
    layers: list[Layer]
    bands: int
    block: int = 1024
    labels: np.ndarray | None = None  # seam labels on a proxy canvas (stitch_seams.py)
    tone: Tone = field(default_factory=Tone)  # output highlight shoulder (tone.py)
    # how the exposure was solved (the response kept and why, residuals): for reports only
    exposure: dict[str, Any] = field(default_factory=dict)
    fine: FineSeams | None = None  # full-resolution overrides of the labels (fine_seams.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": LAYOUT_VERSION,
            "canvas": self.canvas.to_dict(),
            "bands": self.bands,
            "block": self.block,
            "tone": self.tone.to_dict(),
            "exposure": self.exposure,
            "images": [
                {
                    "path": L.path,
                    "camera": L.cam.to_dict(),
                    "footprint": list(L.footprint),
                    "gain": list(L.gain),
                    "vignetting": list(L.vignetting),
                    "white": L.white,
                    # only with the response model: older readers and layouts have none
                    **({"response": list(L.response), "output_response": list(L.output)} if L.response else {}),
                }
                for L in self.layers
            ],
        }


def layout_to_json(layout: Layout, path: str | Path) -> Path:
    """Write the layout (and its seam labels as ``<path>.seams.npy``)."""
    path = Path(path)
    d = layout.to_json()
    if layout.labels is not None:
        sp = path.with_name(path.name + ".seams.npy")
        with atomic_path(sp) as tmp, open(tmp, "wb") as fh:
            np.save(fh, layout.labels.astype(np.int16))
        d["seams_file"] = sp.name
    if layout.labels is not None and layout.fine is not None:
        fp = path.with_name(path.name + ".seams_fine.npz")
        layout.fine.save(fp)
        d["seams_fine_file"] = fp.name
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(d, indent=1))
    return path


def layout_from_json(src: str | Path | dict) -> Layout:
    d = src if isinstance(src, dict) else json.loads(Path(src).read_text())
    if d.get("version") != LAYOUT_VERSION:
        raise InputError(str(src) if not isinstance(src, dict) else "layout", "unsupported layout version")
    canvas = Canvas.from_dict(d["canvas"])
    layers = [
        Layer(
            im["path"],
            Camera.from_dict(im["camera"]),
            tuple(int(x) for x in im["footprint"]),  # type: ignore[arg-type]
            tuple(float(x) for x in im["gain"]),  # type: ignore[arg-type]
            tuple(float(x) for x in im.get("vignetting", (0.0, 0.0))),  # type: ignore[arg-type]
            float(im.get("white", 0.0)),
            # a layout without it was rendered with gains on the encoded values
            tuple(float(x) for x in im.get("response", ())),
            tuple(float(x) for x in im.get("output_response", ())),
        )
        for im in d["images"]
    ]
    labels = None
    if d.get("seams_file") and not isinstance(src, dict):
        sp = Path(src).with_name(Path(d["seams_file"]).name)
        if sp.is_file():
            labels = np.load(sp, allow_pickle=False)
    fine = None
    if labels is not None and d.get("seams_fine_file"):
        fp = Path(src).with_name(Path(d["seams_fine_file"]).name)  # type: ignore[arg-type]
        if fp.is_file():
            fine = FineSeams.load(fp)
    tone = Tone.from_dict(d.get("tone"))
    return Layout(
        canvas, layers, int(d["bands"]), int(d.get("block", 1024)), labels, tone, d.get("exposure") or {}, fine
    )


# ------------------------------------------------------------------ rendering


def layers_meeting_rows(layout: Layout, y0: int, y1: int) -> list[int]:
    """Indices of the layers that may meet output rows [y0, y1): footprint
    plus the blend margin (a cheap pre-selection for render_rect)."""
    m = margin_for(layout.bands) + (1 << max(layout.bands, 0))
    return [k for k, L in enumerate(layout.layers) if L.footprint[1] - m < y1 and L.footprint[3] + m > y0]


def render_region(
    layout: Layout | str | Path,
    rect: tuple[int, int, int, int],
    cache: SourceCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-render output rectangle (x0, y0, x1, y1) from a saved layout.

    Returns (rgb float32, alpha float32). Large rectangles are rendered in
    blocks of ``layout.block`` so memory stays bounded.
    """
    if not isinstance(layout, Layout):
        layout = layout_from_json(layout)
    cache = cache or SourceCache()
    tone = None if layout.tone.identity else layout.tone.apply
    x0, y0, x1, y1 = rect
    y0, y1 = max(0, y0), min(layout.canvas.height, y1)
    if not layout.canvas.wrap:
        x0, x1 = max(0, x0), min(layout.canvas.width, x1)
    rgb = np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.float32)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    B = layout.block
    for by in range(y0, y1, B):
        only = layers_meeting_rows(layout, by, min(by + B, y1))
        for bx in range(x0, x1, B):
            r = (bx, by, min(bx + B, x1), min(by + B, y1))
            c, a = render_rect(
                layout.layers, layout.canvas, r, cache, layout.bands, layout.labels, only, tone, layout.fine
            )
            rgb[by - y0 : r[3] - y0, bx - x0 : r[2] - x0] = c
            alpha[by - y0 : r[3] - y0, bx - x0 : r[2] - x0] = a
    return rgb, alpha


def _quantize(rgb: np.ndarray, alpha: np.ndarray, bits: int) -> np.ndarray:
    mx = 255.0 if bits == 8 else 65535.0
    dt = np.uint8 if bits == 8 else np.uint16
    out = np.empty((*rgb.shape[:2], 4), dt)
    out[..., :3] = np.clip(rgb * mx + 0.5, 0, mx).astype(dt)
    out[..., 3] = np.clip(alpha * mx + 0.5, 0, mx).astype(dt)
    return out


def render_to_file(
    layout: Layout,
    out_path: str | Path,
    bits: int = 8,
    cache: SourceCache | None = None,
    progress: Progress | None = None,
    tile: int = 256,
    threads: int | None = None,
    stats: dict[str, float] | None = None,
) -> Path:
    """Render the whole panorama block row by block row.

    .tif/.tiff: tiled BigTIFF RGBA (tiles streamed, rows of blocks in memory);
    .png: RGBA; .jpg: RGB on black (both need the whole image in memory).
    ``stats`` (if given) receives "clipped_fraction": the share of covered
    output pixels with every channel >= 254/255.
    """
    # long: the streamed TIFF writer's nested generators (render a row ahead,
    # count clipped pixels, cut tiles) share its state; the small-file path follows
    out_path = Path(out_path)
    cv = layout.canvas
    W, H, B = cv.width, cv.height, layout.block
    cache = cache or SourceCache()
    tone = None if layout.tone.identity else layout.tone.apply
    clipped = [0, 0]  # covered output pixels, and those clipped (every channel >= 254/255)
    n_rows = math.ceil(H / B)
    ext = out_path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile

        if B % tile:
            raise ValueError("block must be a multiple of the tile size")

        workers = max(1, min(threads or os.cpu_count() or 1, 8))

        dtype = np.uint8 if bits == 8 else np.uint16

        def render_block(row: np.ndarray, rc: tuple[int, int, int, int], only: list[int]) -> None:
            c, a = render_rect(layout.layers, cv, rc, cache, layout.bands, layout.labels, only, tone, layout.fine)
            row[:, rc[0] : rc[2]] = _quantize(c, a, bits)  # disjoint columns: no lock needed

        def render_row(pool: ThreadPoolExecutor, r: int) -> tuple[np.ndarray, list]:
            y0, y1 = r * B, min(H, (r + 1) * B)
            only = layers_meeting_rows(layout, y0, y1)
            row = np.zeros((y1 - y0, W, 4), dtype)
            futs = [pool.submit(render_block, row, (bx, y0, min(W, bx + B), y1), only) for bx in range(0, W, B)]
            return row, futs

        def count_clipped(q: np.ndarray) -> None:
            full = np.iinfo(q.dtype).max
            thr = 254 if bits == 8 else 254 * 257
            cov = q[..., 3] >= full - (1 if bits == 8 else 257)
            clip = cov & (q[..., 0] >= thr) & (q[..., 1] >= thr) & (q[..., 2] >= thr)
            clipped[0] += int(cov.sum())
            clipped[1] += int(clip.sum())

        def tiles():
            # block rows render on a thread pool one row ahead, so rendering
            # overlaps the compression of the previous row (memory: two rows)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                nxt = render_row(pool, 0) if n_rows else None
                for r in range(n_rows):
                    assert nxt is not None
                    row, futs = nxt
                    for fut in futs:
                        fut.result()
                    nxt = render_row(pool, r + 1) if r + 1 < n_rows else None
                    if progress:
                        progress("render", r + 1, n_rows)
                    count_clipped(row)
                    for ty in range(0, row.shape[0], tile):
                        for tx in range(0, W, tile):
                            t = np.zeros((tile, tile, 4), dtype)
                            part = row[ty : ty + tile, tx : tx + tile]
                            t[: part.shape[0], : part.shape[1]] = part
                            yield t
                    del row, futs

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
                maxworkers=workers,  # zlib releases the GIL
                buffersize=32 << 20,  # tiles compressed per batch: bounded memory
            )
        if stats is not None:
            stats["clipped_fraction"] = clipped[1] / max(clipped[0], 1)
        return out_path
    if W * H > 400e6:
        raise InputError(out_path, f"{W}x{H} is too large for {ext}: write a .tif (tiled BigTIFF)")
    rgb, alpha = render_region(layout, (0, 0, W, H), cache)
    if progress:
        progress("render", 1, 1)
    import cv2

    q = _quantize(rgb, alpha, bits)
    cov = alpha >= 254 / 255
    if stats is not None:
        clip = cov & (q[..., :3] >= (254 if bits == 8 else 254 * 257)).all(2)
        stats["clipped_fraction"] = float(clip.sum() / max(int(cov.sum()), 1))
    if ext == ".png":
        data = q[..., [2, 1, 0, 3]]
        ok, buf = cv2.imencode(".png", data)
    elif ext in (".jpg", ".jpeg"):
        q = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", q[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    else:
        raise InputError(out_path, f"unsupported output extension {ext}")
    if not ok:
        raise ProcessingError(f"{out_path}: encoding failed")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return out_path


# -------------------------------------------------------------------- pipeline


def fit_canvas(cam_list: list[Camera], params: StitchParams) -> Canvas:
    """The output canvas: a partial panorama is never padded to 360 degrees,
    and (crop "auto") is cut to its largest filled rectangle."""
    s = params.scale * float(np.median([c.focal for c in cam_list]))
    wrap = params.wrap and params.projection not in AZIMUTHAL and covers_360(cam_list)
    canvas = make_canvas(
        cam_list, params.projection, s, wrap, params.max_output_mp * 1e6 if params.max_output_mp else None
    )
    if params.crop == "on" or (params.crop == "auto" and not wrap):
        canvas = autocrop(cam_list, canvas)
    return canvas


def build_layout(
    cams: dict[int, Camera],
    paths: Sequence[Path],
    params: StitchParams,
    thumbs: dict[int, np.ndarray] | None = None,
) -> Layout:
    """Canvas, exposure, tone and seams of the cameras ``cams`` (indices into ``paths``)."""
    order = sorted(cams)
    cam_list = [cams[k] for k in order]
    canvas = fit_canvas(cam_list, params)
    gains = {k: (1.0, 1.0, 1.0) for k in order}
    vigs: dict[int, tuple[float, float]] = {k: (0.0, 0.0) for k in order}
    white = 0.0  # clipped inputs render at least this bright (blend.Layer.white)
    labels = None
    tone = Tone()
    resp: dict[int, tuple[float, ...]] = {k: () for k in order}
    output: tuple[float, ...] | None = None  # the output curve (response.py), with resp
    info: dict[str, Any] = {}
    if thumbs and (params.gain_compensation or params.vignetting or params.seams == "dp") and len(order) > 1:
        f = min(1.0, math.sqrt(params.exposure_mp * 1e6 / (canvas.width * canvas.height)))
        pc = canvas.scaled(f)
        warps = [proxy_warp(thumbs[k], cams[k], pc) if k in thumbs else None for k in order]
        if params.exposure == "joint" and (params.gain_compensation or params.vignetting):
            use_resp = params.response and params.gain_compensation
            ex = solve_exposure(warps, pc, lens_groups(cam_list), params.vignetting, response=use_resp)
            info = {
                "response": ex.response_note,
                "residuals": [round(x, 5) for x in ex.residuals],
                "exposure_spread": round(ex.spread, 4),
            }
            rs = ex.responses()
            g = ex.gains() if params.gain_compensation else np.ones((len(order), 3))
            gains = {k: tuple(float(x) for x in g[i]) for i, k in enumerate(order)}
            vigs = {k: tuple(float(x) for x in ex.vignetting[ex.lens[i]]) for i, k in enumerate(order)}  # type: ignore[misc]
            if rs is not None:
                resp = {k: tuple(rs[i].to_list()) for i, k in enumerate(order)}
                output = mean_response(list(resp.values()))
                info["output_response"] = [round(x, 5) for x in output]
            # before the warps are corrected in place below
            white = brightest_unclipped(warps, g, [vigs[k] for k in order], responses=rs, output=output)
            if params.tone == "shoulder":
                tone = shoulder_for(white)
            # the seam DP compares the proxies as the renderer outputs them
            correct_warps(warps, g, [vigs[k] for k in order], rs, output)
            seam_gains = None
        else:
            if params.vignetting:
                v = estimate_vignetting(warps, pc)
                apply_vignetting_to_warps(warps, v)
                vigs = {k: v for k in order}
            if params.gain_compensation:
                N, Im = overlap_stats(warps, pc)
                g = solve_gains(N, Im)
                gains = {k: tuple(float(x) for x in g[i]) for i, k in enumerate(order)}
            if params.tone == "shoulder":
                tone = shoulder_for(
                    brightest_unclipped(warps, np.array([gains[k] for k in order]), [(0, 0)] * len(order))
                )
            seam_gains = np.array([gains[k] for k in order])
        if params.seams == "dp":
            labels = refine_seams(warps, pc, seam_gains)
    bands = params.bands if params.bands >= 0 else default_bands(canvas, cam_list)
    white = max(white, 1.0) if params.gain_compensation else 0.0
    layers = [
        Layer(str(paths[k]), cams[k], footprint(cams[k], canvas), gains[k], vigs[k], white, resp[k], output or ())  # type: ignore[arg-type]
        for k in order
    ]
    fine = None
    if labels is not None and params.fine_seams:
        fine = fine_seams(layers, canvas, labels, SourceCache(params.cache_mb * (1 << 20)))
        if fine is not None:
            info["fine_seams"] = {
                "patches": len(fine.patches),
                "skipped": fine.skipped,
                "seconds": round(fine.seconds, 2),
            }
    return Layout(canvas, layers, bands, params.block, labels, tone, info, fine)


def stitch_files(
    paths: Sequence[str | Path],
    out_path: str | Path,
    params: StitchParams | None = None,
    placements: dict[str, Placement] | None = None,
    progress: Progress | None = None,
    render: bool = True,
) -> StitchResult:
    """Stitch images into a panorama at ``out_path`` (+ ``.layout.json``).

    ``render=False`` stops after the layout (the farm renders it in blocks):
    only ``<out_path>.layout.json`` is written.
    A separately shot sky is merged afterwards into the result by
    layers.merge_sky_capture (``stitch --sky``, the web app's composite job).

    Its stages run their own threads (features, matching, rendering rows), so
    OpenCV and BLAS run single-threaded inside unless TERAPAN_LIB_THREADS is
    "native" (backend.frame_parallel_libraries)."""
    from ..device.backend import frame_parallel_libraries, library_threads

    with frame_parallel_libraries() if library_threads() == "one" else contextlib.nullcontext():
        return _stitch_files(paths, out_path, params, placements, progress, render)


def _stitch_files(
    paths: Sequence[str | Path],
    out_path: str | Path,
    params: StitchParams | None,
    placements: dict[str, Placement] | None,
    progress: Progress | None,
    render: bool = True,
) -> StitchResult:
    # long: the stages in order (features, registration, the failure check,
    # layout, render, the result record), each a call
    params = params or StitchParams()
    params.validate()
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    timings: dict[str, float] = {}
    if not paths:
        raise InputError("-", "no input images")
    feats: list[Features | None] = [None] * len(paths)
    dropped: dict[int, str] = {}
    thumbs: dict[int, np.ndarray] = {}
    pf: list[float] = [1.0] * len(paths)
    clipped_in: dict[int, tuple[float, float]] = {}
    thumb_px = min(0.25e6, 8e6 / max(1, len(paths)))
    # many tiles: fewer features each, so descriptors stay within ~0.6 GB
    nfeat = params.nfeatures if len(paths) <= 300 else max(500, params.nfeatures * 300 // len(paths))

    stored: list[int] = []

    def one(k: int) -> None:
        if (got := load_features(paths[k], len(paths), params.proxy_mp, params.nfeatures)) is not None:
            feats[k], pf[k], thumbs[k] = got  # written by the stack job: no decoding here
            stored.append(k)
            return
        try:
            img, info = load_image(paths[k])
        except InputError as e:
            dropped[k] = f"unreadable: {e.reason}"
            return
        clipped_in[k] = (float((img >= 254 / 255).all(2).sum()), float(img.shape[0] * img.shape[1]))
        g, f = proxy_gray(img, params.proxy_mp)
        thumbs[k] = thumbnail(img, thumb_px)
        del img  # only the proxies are kept: never all tiles' full-resolution pixels
        ft = detect(g, f, info.width, info.height, nfeat)
        ft.exif_focal = exif_focal_px(paths[k], info.width, info.height)
        feats[k] = ft
        pf[k] = f

    # decoding and SIFT release the GIL: threads, as many as the memory of
    # one decoded image per thread allows (small tiles: all cores)
    try:
        first = probe(paths[0])
        px = first.width * first.height
    except InputError:
        px = 0
    workers = max(1, min(os.cpu_count() or 1, 4, int(600e6 / max(1, 16 * px)) or 1))
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for _ in ex.map(one, range(len(paths))):
            done += 1
            if progress:
                progress("features", done, len(paths))
    timings["features"] = time.perf_counter() - t0
    timings["features_stored"] = float(len(stored))
    if all(f is None for f in feats):
        raise InputError(paths[0].parent, "no readable images")
    t1 = time.perf_counter()
    reg = register(
        feats,
        [p.name for p in paths],
        placements,
        ratio=params.ratio,
        min_inliers=params.min_inliers,
        conf_thresh=params.conf_thresh,
        proxy_factors=pf,
        wave=params.wave_correct,
        progress=progress,
        estimate_k1=params.lens_k1,
        lens_full=params.lens_full,
    )
    timings["register"] = time.perf_counter() - t1
    feats.clear()  # descriptors are not needed for rendering
    dropped.update(reg.dropped)
    # Images placed from the caller's rig placements are placed on purpose (featureless
    # sky, water): they count as joined; without a rig, a prior is only a guess.
    joined = len(reg.cameras) - (0 if placements else len(reg.from_prior))
    if not params.allow_partial and joined < params.min_share * len(paths):
        # before anything is written: a previous result of the same name stays
        lost = {paths[k].name: r for k, r in sorted(dropped.items())}
        lost.update({paths[k].name: "placed from its prior only" for k in reg.from_prior})
        raise IncompletePanorama(paths[0].parent, joined, len(paths), params.min_share, lost)
    t2 = time.perf_counter()
    layout = build_layout(reg.cameras, paths, params, thumbs)
    timings["layout"] = time.perf_counter() - t2
    thumbs.clear()
    out_path = Path(out_path)
    lp = out_path.with_name(out_path.name + ".layout.json")
    layout_to_json(layout, lp)
    t3 = time.perf_counter()
    stats: dict[str, float] = {}
    if render:
        cache = SourceCache(params.cache_mb * (1 << 20))
        render_to_file(layout, out_path, params.bits, cache, progress, stats=stats)
        timings["render"] = time.perf_counter() - t3
    cams_out = []
    for L, k in zip(layout.layers, sorted(reg.cameras), strict=True):
        y, pch, r = ypr_from_rotation(L.cam.rot)
        fx0, fy0, fx1, fy1 = L.footprint
        cams_out.append(
            {
                "file": paths[k].name,
                "yaw": y,
                "pitch": pch,
                "roll": r,
                "focal": L.cam.focal,
                "from_prior": k in reg.from_prior,
                "gain": list(L.gain),
                "bbox": {"x": fx0, "y": fy0, "w": fx1 - fx0, "h": fy1 - fy0, "wraps": fx1 > layout.canvas.width},
            }
        )
    return StitchResult(
        placed=len(reg.cameras),
        total=len(paths),
        dropped=[{"file": paths[k].name, "reason": r} for k, r in sorted(dropped.items())],
        width=layout.canvas.width,
        height=layout.canvas.height,
        seconds=time.perf_counter() - t0,
        cameras=cams_out,
        layout_path=str(lp),
        out_path=str(out_path) if render else "",
        timings=timings,
        rms_px=reg.rms_px,
        focal_source=reg.focal_source,
        clipped_output=stats.get("clipped_fraction", 0.0),
        clipped_inputs=sum(c for c, _ in clipped_in.values()) / max(1.0, sum(t for _, t in clipped_in.values())),
    )


def list_images(directory: str | Path, pattern: str = "*") -> list[Path]:
    from ..io.imageio import is_image_path

    d = Path(directory)
    if not d.is_dir():
        raise InputError(d, "not a directory")
    files = sorted(p for p in d.glob(pattern) if p.is_file() and is_image_path(p))
    if not files:
        raise InputError(d, "no images found")
    return files
