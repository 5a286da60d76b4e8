"""One stack, end to end: develop -> colour -> sharpness -> align -> master
-> flow -> fuse [-> upscale] -> sharpen.

Output geometry: exactly round(S x reference size), in the reference frame's
coordinates: output pixel (x, y) sits at reference pixel
((x + 0.5) / S - 0.5, (y + 0.5) / S - 0.5). The reference is the first file in
name order unless `reference` names another; the sharpness ranking never
changes (or drops) the reference.

Bad input policy:
- no images / fewer than 2 readable frames: InputError naming the folder;
- a corrupt or unreadable file: reported in `frames` (kept False, reason)
  and skipped while >= 2 frames remain; a corrupt reference that was named
  explicitly is an InputError, an implicit one passes to the next file;
- a frame whose size differs from the reference's by more than 10 % (either
  side): dropped with a reason; smaller differences are absorbed by the
  alignment (each transform maps into that frame's own pixel grid);
- a frame that cannot be aligned: dropped with the aligner's reason.

Working space is linear light (see develop.py); the result is returned in
the reference file's encoding (sRGB for JPEG/PNG/integer TIFF bursts, linear
for RAW), float32 HxWx3 in [0, 1].
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from ..device import backend
from ..io.errors import InputError, ProcessingError
from ..io.imageio import is_image_path, quantize16_consuming
from . import align as al
from .color import ColorParams, dehaze, estimate_tca, match_to_reference
from .develop import DevelopParams, develop_uint16, encode
from .flow import FlowParams, compute_flow
from .fuse import FrameInput, FuseParams, anchor_to_reference, deblur, fuse, make_master, matched_deblur
from .fusion_check import choose_fusion
from .sharpen import SharpenParams, unsharp_mask
from .sharpness import SharpnessParams, central_crop, rank_frames, sharpness_score
from .warp import proxy, rescale_transform, scale_matrix

Progress = Callable[[float, str], None]
MODEL_ROUTE_SCALE = 2.0  # fusion recovers real detail up to ~2x; the model does the rest


@dataclass(frozen=True)
class StackParams:
    """All stage parameters of a stack (the recipe)."""

    VERSION = 1
    develop: DevelopParams = field(default_factory=DevelopParams)
    color: ColorParams = field(default_factory=ColorParams)
    sharpness: SharpnessParams = field(default_factory=SharpnessParams)
    align: al.AlignParams = field(default_factory=al.AlignParams)
    flow: FlowParams = field(default_factory=FlowParams)
    fuse: FuseParams = field(default_factory=FuseParams)
    sharpen: SharpenParams = field(default_factory=SharpenParams)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name).to_dict() for f in dataclasses.fields(self)}
        d["_version"] = self.VERSION
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StackParams:
        data = dict(data or {})
        data.pop("_version", None)
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # type: ignore[misc]
        unknown = set(data) - set(kinds)
        if unknown:
            raise ValueError(f"stack: unknown stage(s) {sorted(unknown)}")
        return cls(**{k: kinds[k]().from_dict(v) for k, v in data.items()})  # type: ignore[operator]

    def replace(self, **stages: Any) -> StackParams:
        return dataclasses.replace(self, **stages)


@dataclass
class StackResult:
    image: np.ndarray  # H x W x 3, reference encoding: float32 in [0, 1], or uint16 codes (result_dtype)
    frames: list[dict[str, Any]]
    metrics: dict[str, Any]
    recipe: dict[str, Any]


@dataclass
class _Frame:
    path: Path
    record: dict[str, Any]
    image: np.ndarray | None = None  # uint16 linear, full size
    on_device: Any = None  # its device copy (GPU path), made in the decode thread
    grey: np.ndarray | None = None  # registration proxy (encoded grey)
    grey_f: tuple[float, float] = (1.0, 1.0)
    col: np.ndarray | None = None  # small linear colour proxy
    col_f: tuple[float, float] = (1.0, 1.0)
    encoding: str = "srgb"
    transform: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))

    @property
    def size(self) -> tuple[int, int]:
        assert self.image is not None
        return self.image.shape[1], self.image.shape[0]


@dataclass
class _Developed:
    image: np.ndarray  # uint16 linear
    encoding: str
    score: float
    grey: np.ndarray
    grey_f: tuple[float, float]
    col: np.ndarray
    col_f: tuple[float, float]
    tca: tuple[float, float] | None
    on_device: Any = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def _pick_device() -> tuple[str, ModuleType]:
    """The device of the master/fusion stages (TERAPAN_DEVICE, see backend).

    Not part of the recipe: both paths give the same image within 1/1000 of
    full scale (tests/processing/stack/test_gpu.py)."""
    try:
        dev = backend.device()
    except (RuntimeError, ValueError) as e:  # TERAPAN_DEVICE=gpu without a GPU, or a typo
        raise ProcessingError(str(e)) from e
    return dev, backend.xp_for(dev)


def _workers(p: StackParams) -> int:
    return backend.host_threads(p.fuse.workers)


def _to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) * np.float32(1 / 65535)


def _develop_one(
    path: Path, p: StackParams, reg_px: float, want_tca: bool, upload: Callable[[np.ndarray], Any] | None = None
) -> _Developed | InputError:
    """Decode one frame and make its small proxies (runs in a worker thread).

    UPLOAD (GPU path): copy the frame to the device here, while other threads
    still decode, instead of all frames at once before the master (a pageable
    host-to-device copy ran at about 3 GB/s on the H100 host: ~2 s for 20
    frames of 45 MP)."""
    try:
        img16, enc = develop_uint16(path, p.develop)
    except InputError as e:
        return e
    lin = enc != "as-is"
    # Sharpness on a full-resolution central crop; registration and colour
    # on area-averaged (linear) proxies, encoded afterwards: all cheap, and
    # made from the 16-bit frame (no full-size float copy).
    crop = _to_float(central_crop(img16, p.sharpness.max_pixels))
    score = sharpness_score(al.align_proxy(crop, lin), p.sharpness)
    small, grey_f = proxy(img16, reg_px)
    if p.color.match_max_pixels <= reg_px:
        # The colour proxy is an area average of the registration proxy: one
        # pass over the full frame instead of two (0.2 s of a 45 MP frame).
        col, cf = proxy(small, p.color.match_max_pixels)
        col_f = (cf[0] * grey_f[0], cf[1] * grey_f[1])
    else:
        col, col_f = proxy(img16, p.color.match_max_pixels)
    tca = estimate_tca(img16, p.color) if want_tca else None
    dev = upload(img16) if upload is not None else None
    return _Developed(img16, enc, score, al.align_proxy(_to_float(small), lin), grey_f, _to_float(col), col_f, tca, dev)


def _fused_kernel_used() -> bool:
    """Whether the GPU fusion ran the fused CUDA kernel (fuse_cuda)."""
    from .fuse_cuda import FusedFrames
    from .fuse_gpu import fused_kernel_enabled

    return fused_kernel_enabled() and FusedFrames.in_use()


def list_frames(folder: str | Path) -> list[Path]:
    """Image files directly in FOLDER, in name order (hidden files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise InputError(folder, f"cannot read the folder: {e.strerror or e}") from e
    root = folder.resolve()
    paths = []
    for p in entries:
        if not (p.is_file() and not p.name.startswith(".") and is_image_path(p)):
            continue
        # A symlink may point at another file of the stack, never outside it.
        if p.is_symlink() and root not in p.resolve().parents:
            raise InputError(p, "symlink points outside the stack folder")
        paths.append(p)
    paths.sort(key=lambda p: p.name)
    if not paths:
        raise InputError(folder, "no images (jpg/png/tif/dng/raw) in the folder")
    return paths


def _record(path: Path) -> dict[str, Any]:
    return {
        "file": path.name,
        "sharpness": None,
        "kept": False,
        "reason": "",
        "transform": None,  # 3x3 list once aligned (reference -> frame)
        "reg_error": None,
    }


def _pick_reference(paths: list[Path], reference: str | None) -> int:
    if reference is None:
        return 0
    for i, p in enumerate(paths):
        if reference in (p.name, str(p)) or Path(reference).name == p.name:
            return i
    raise InputError(reference, "the reference is not among the frames")


def process_stack(
    paths: list[Path],
    scale: float,
    params: StackParams | None = None,
    reference: str | None = None,
    progress: Progress | None = None,
    upscale_model: bool = True,
    result_dtype: str = "float32",
) -> StackResult:
    """Fuse a burst into one image of round(S x reference size) (see module doc).

    RESULT_DTYPE "uint16" returns the 16-bit codes that `write_tiff16` would
    write (the same file, bit for bit), quantised where the image is: on the
    GPU path before the copy back (half the bytes of float32), on either path
    without full-size float temporaries.
    """
    with contextlib.ExitStack() as frame_stages:
        # The frame-parallel stages run with single-threaded OpenCV and BLAS;
        # the big single calls after fusion get the libraries' threads back.
        try:
            lib_threads = backend.library_threads()
        except ValueError as e:  # a typo in TERAPAN_LIB_THREADS: one line, like TERAPAN_DEVICE's
            raise ProcessingError(str(e)) from e
        if lib_threads == "one":
            frame_stages.enter_context(backend.frame_parallel_libraries())
        return _process_stack(paths, scale, params, reference, progress, upscale_model, result_dtype, frame_stages)


def _process_stack(
    paths: list[Path],
    scale: float,
    params: StackParams | None,
    reference: str | None,
    progress: Progress | None,
    upscale_model: bool,
    result_dtype: str,
    frame_stages: contextlib.ExitStack,
) -> StackResult:
    p = params or StackParams()
    if result_dtype not in ("float32", "uint16"):
        raise ValueError(f"result_dtype must be float32 or uint16, not {result_dtype!r}")
    if not (0.1 <= scale <= 32):
        raise InputError(None, f"scale {scale} out of range (0.1 .. 32)")
    paths = sorted((Path(x) for x in paths), key=lambda x: x.name)
    folder = paths[0].parent if paths else Path(".")
    if not paths:
        raise InputError(folder, "no images in the stack")
    if len(paths) < 2:
        raise InputError(folder, "need at least 2 frames (found 1)")
    ref_i = _pick_reference(paths, reference)
    # Before any work: TERAPAN_DEVICE=gpu without a usable GPU fails here.
    dev, xp = _pick_device()
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds (all threads) per stage
    t_all = time.perf_counter()

    def report(frac: float, msg: str) -> None:
        if progress:
            progress(float(min(max(frac, 0.0), 1.0)), msg)

    # ------------------------------------------------------------ develop
    t0, c0 = time.perf_counter(), time.process_time()
    order = [ref_i] + [i for i in range(len(paths)) if i != ref_i]
    frames: list[_Frame] = [_Frame(pth, _record(pth)) for pth in paths]
    reg_px = max(p.align.feature_max_pixels, p.align.ecc_max_pixels, p.flow.max_pixels)
    scores: dict[int, float] = {}
    tca: tuple[float, float] | None = None
    ref_size: tuple[int, int] | None = None
    tca_for = ref_i if p.color.tca else -1
    on_device = dev == "gpu" and p.fuse.method == "kernel"
    upload = xp.asarray if on_device else None
    # One pool for develop and align: a frame's alignment is queued as soon as
    # the reference's features exist and the frame is sure to survive the
    # sharpness ranking, so it fills the cores the last decodes leave idle.
    pool = ThreadPoolExecutor(max_workers=_workers(p))
    frame_stages.callback(pool.shutdown, wait=True, cancel_futures=True)
    ref_feats: Any = None
    ref_pyr: al.ReferencePyramid | None = None
    align_futs: dict[int, Future[Any]] = {}

    def align_one(i: int) -> tuple[Any, np.ndarray, float | None, str]:
        g = frames[i].grey
        assert g is not None
        res = al.coarse_align(ref_feats, al.detect(g, p.align), p.align)
        if not res.ok:
            return res, res.transform, None, ""
        if ref_pyr is None:
            return res, res.transform, None, ""
        t, cc, note = al.fine_align(ref_pyr, g, res.transform, p.align)
        return res, t, cc, note

    def queue_sure_aligns() -> None:
        """Queue the alignment of every developed frame that the ranking can
        no longer drop: at least `drop_worst` others rank below it already
        (the ranking's order is (score, index) and only grows)."""
        if ref_feats is None:
            return
        ranked = sorted((s, j) for j, s in scores.items() if j != ref_i)
        for _, j in ranked[p.sharpness.drop_worst :]:
            if j not in align_futs:
                align_futs[j] = pool.submit(align_one, j)

    # Frames decode in parallel (decoders and NumPy release the GIL);
    # results are taken in order, so the policy below is unchanged.
    futs = [pool.submit(_develop_one, frames[i].path, p, reg_px, i == tca_for, upload) for i in order]
    for n_done, (i, fut) in enumerate(zip(order, futs, strict=True)):
        fr = frames[i]
        got = fut.result()
        if isinstance(got, InputError):
            fr.record["reason"] = f"unreadable: {got.reason}"
            if i == ref_i:
                if reference is not None:
                    raise got
                ref_i = -1  # pick the next readable file below
            report(0.2 * (n_done + 1) / len(order), f"develop {fr.path.name}")
            continue
        if ref_i == -1:
            ref_i = i
        w, h = got.size
        if ref_size is None:
            ref_size = (w, h)
        elif abs(w / ref_size[0] - 1) > p.align.max_size_change or abs(h / ref_size[1] - 1) > p.align.max_size_change:
            fr.record["reason"] = (
                f"size {w}x{h} differs from the reference's {ref_size[0]}x{ref_size[1]} by more than "
                f"{p.align.max_size_change:.0%}"
            )
            report(0.2 * (n_done + 1) / len(order), f"develop {fr.path.name}")
            continue
        fr.encoding = got.encoding
        scores[i] = got.score
        fr.record["sharpness"] = got.score
        fr.grey, fr.grey_f = got.grey, got.grey_f
        fr.col, fr.col_f = got.col, got.col_f
        if i == ref_i and p.color.tca:
            # The reference moved on from an unreadable first choice.
            tca = got.tca if got.tca is not None else estimate_tca(got.image, p.color)
        fr.image, fr.on_device = got.image, got.on_device
        if i == ref_i:
            ref_feats = al.detect(got.grey, p.align)
            ref_pyr = al.ReferencePyramid(got.grey, p.align) if p.align.ecc else None
        queue_sure_aligns()
        report(0.2 * (n_done + 1) / len(order), f"develop {fr.path.name}")
    # The futures hold the developed frames: drop them so that a frame freed
    # later (after fusion) really goes.
    futs.clear()
    got = None
    times["develop"] = time.perf_counter() - t0
    cpu["develop"] = time.process_time() - c0
    usable = [i for i in range(len(frames)) if frames[i].image is not None]
    # Name every unreadable file and its reason, not only the folder.
    bad = "; ".join(f"{fr.path.name}: {fr.record.get('reason')}" for fr in frames if fr.image is None)
    why = f" ({bad})" if bad else ""
    if ref_i < 0 or frames[ref_i].image is None:
        raise InputError(folder, f"no readable reference frame{why}")
    if len(usable) < 2:
        raise InputError(folder, f"need at least 2 readable frames (found {len(usable)}){why}")

    # ---------------------------------------------------------- sharpness
    t0, c0 = time.perf_counter(), time.process_time()
    keep, reasons = rank_frames([scores[i] for i in usable], p.sharpness, protect=usable.index(ref_i))
    for k, i in enumerate(usable):
        if not keep[k]:
            frames[i].record["reason"] = reasons[k]
            frames[i].on_device = None  # its device copy goes back to the pool
    cand = [i for k, i in enumerate(usable) if keep[k]]
    times["sharpness"] = time.perf_counter() - t0
    cpu["sharpness"] = time.process_time() - c0

    # -------------------------------------------------------------- align
    t0, c0 = time.perf_counter(), time.process_time()
    ref = frames[ref_i]
    assert ref.grey is not None
    aligned = [ref_i]
    ref.record.update(kept=True, reg_error=0.0, transform=np.eye(3).tolist())
    others = [i for i in cand if i != ref_i]
    early = sum(1 for i in others if i in align_futs)
    # Frames align independently against the one reference (SIFT, matching
    # and ECC release the GIL): threads, results applied in order. Those the
    # ranking kept that were not sure during develop are queued now.
    for i in others:
        if i not in align_futs:
            align_futs[i] = pool.submit(align_one, i)
    for n_done, i in enumerate(others):
        res, t, cc, note = align_futs.pop(i).result()
        fr = frames[i]
        assert fr.grey is not None
        if not res.ok:
            fr.record["reason"] = f"alignment failed: {res.reason}"
            fr.image = fr.on_device = None
        else:
            if ref_pyr is not None:
                fr.record["ecc"] = cc
            src, dst = res._src, res._dst  # type: ignore[attr-defined]
            fr.record["reg_error"] = al._residual(t, src, dst) / fr.grey_f[0]
            fr.record["inliers"] = res.inliers
            if note:
                fr.record["note"] = note
            # Proxy transform -> full-resolution transform.
            fr.transform = np.linalg.inv(scale_matrix(*fr.grey_f)) @ t @ scale_matrix(*ref.grey_f)
            fr.transform /= fr.transform[2, 2]
            fr.record["transform"] = fr.transform.tolist()
            fr.record["kept"] = True
            aligned.append(i)
        report(0.2 + 0.2 * (n_done + 1) / max(1, len(others)), f"align {fr.path.name}")
    times["align"] = time.perf_counter() - t0
    cpu["align"] = time.process_time() - c0
    if len(aligned) < 2 and len(others) > 0:
        raise InputError(folder, "need at least 2 frames that align with the reference")

    # ------------------------------------------------------------- colour
    t0, c0 = time.perf_counter(), time.process_time()
    assert ref_size is not None
    inputs: list[FrameInput] = []

    def match_one(i: int) -> tuple[np.ndarray, np.ndarray] | None:
        fr = frames[i]
        assert fr.col is not None and ref.col is not None
        if p.color.match and i != ref_i:
            return match_to_reference(ref.col, ref.col_f, fr.col, fr.col_f, fr.transform, p.color)
        return None

    with ThreadPoolExecutor(max_workers=_workers(p)) as pool:
        for i, fit in zip(aligned, pool.map(match_one, aligned), strict=True):
            fr = frames[i]
            assert fr.image is not None
            gain = offset = None
            if fit is not None:
                gain, offset = fit
                fr.record["gain"] = [round(float(x), 5) for x in gain]
                fr.record["offset"] = [round(float(x), 6) for x in offset]
            inputs.append(FrameInput(fr.image, fr.transform, gain=gain, offset=offset, tca=tca))
    times["color"] = time.perf_counter() - t0
    cpu["color"] = time.process_time() - c0

    # ------------------------------------------------------------- master
    t0, c0 = time.perf_counter(), time.process_time()
    devf = None
    if on_device:
        from .fuse_gpu import DeviceFrames, make_master_xp

        # Each frame went to the device once, in its decode thread.
        devf = DeviceFrames(inputs, xp, [frames[i].on_device for i in aligned])
        master = make_master_xp(inputs, ref_size, p.fuse, xp, devf, lambda f, m: report(0.4 + 0.1 * f, m))
    else:
        master = make_master(inputs, ref_size, p.fuse, lambda f, m: report(0.4 + 0.1 * f, m))
    master = anchor_to_reference(master, inputs, p.fuse)  # inputs[0] is the reference
    times["master"] = time.perf_counter() - t0
    cpu["master"] = time.process_time() - c0

    # --------------------------------------------------------------- flow
    t0, c0 = time.perf_counter(), time.process_time()
    flow_rms = []
    if p.flow.method != "none":
        mg, _ = proxy(al.align_proxy(master), reg_px)
        gh, gw = mg.shape

        def flow_one(i: int, fin: FrameInput) -> Any:
            fr = frames[i]
            assert fr.grey is not None
            tp = rescale_transform(fin.transform, ref.grey_f, fr.grey_f)
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            warped = cv2.warpPerspective(fr.grey, tp, (gw, gh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            ones = np.full(fr.grey.shape, 255, np.uint8)
            valid = cv2.warpPerspective(ones, tp, (gw, gh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
            return compute_flow(mg, warped, p.flow, valid, base_f=ref.grey_f)

        with ThreadPoolExecutor(max_workers=_workers(p)) as pool:
            for k, ff in enumerate(pool.map(flow_one, aligned, inputs)):
                fr, fin = frames[aligned[k]], inputs[k]
                if ff is not None:
                    fin.flow = ff
                    fr.record["flow_rms"] = round(ff.rms(), 4)
                    flow_rms.append(ff.rms())
                report(0.5 + 0.1 * (k + 1) / len(aligned), f"flow {fr.path.name}")
    times["flow"] = time.perf_counter() - t0
    cpu["flow"] = time.process_time() - c0

    # --------------------------------------------------------------- fuse
    t0, c0 = time.perf_counter(), time.process_time()
    use_model = upscale_model and scale > MODEL_ROUTE_SCALE
    fuse_scale = MODEL_ROUTE_SCALE if use_model else scale
    out_size = (round(fuse_scale * ref_size[0]), round(fuse_scale * ref_size[1]))
    # Safety net: held-out frames choose between the kernel fusion and the
    # median of the aligned frames (fusion_check); the median is the CPU path.
    safety = choose_fusion(inputs, master, fuse_scale, p.fuse, ref.encoding) if p.fuse.safety_net else None
    master_on_device = on_device
    fuse_p = p.fuse  # the recipe keeps the asked method; the metrics say which ran
    if safety is not None and safety["method"] == "naive":
        fuse_p = p.fuse.replace(method="naive")
        on_device = False
    if on_device:
        from .fuse_gpu import deblur_xp, fuse_xp, unsharp_mask_xp

        # From here to the sharpened result the image stays on the device.
        out = fuse_xp(
            inputs,
            fuse_scale,
            out_size,
            master,
            fuse_p,
            xp,
            devf,
            lambda f, m: report(0.6 + 0.3 * f, m),
            to_host_result=False,
        )
        backend.synchronize(xp)
    else:
        out = fuse(inputs, fuse_scale, out_size, master, fuse_p, lambda f, m: report(0.6 + 0.3 * f, m))
    deblur_params = matched_deblur(inputs, fuse_scale, fuse_p)
    del inputs, devf
    for fr in frames:
        fr.image = fr.on_device = None
    if on_device or master_on_device:
        backend.release_pool(xp)  # the frames' device copies go back before the model needs memory
    times["fuse"] = time.perf_counter() - t0
    cpu["fuse"] = time.process_time() - c0
    frame_stages.close()  # the frame threads stop and the libraries get their own threads back
    if p.color.dehaze:
        t0, c0 = time.perf_counter(), time.process_time()
        out = dehaze(backend.to_host(out) if on_device else out, p.color)
        out = xp.asarray(out) if on_device else out
        times["dehaze"] = time.perf_counter() - t0
        cpu["dehaze"] = time.process_time() - c0
    # Back to the reference's encoding; deconvolution and sharpening act on
    # the encoded image (measured: +0.3 dB over linear on clean bursts).
    out = encode(out, ref.encoding)  # on the device too (same 16-bit table)
    if fuse_p.method == "kernel":
        t0, c0 = time.perf_counter(), time.process_time()
        if on_device:
            out = deblur_xp(out, fuse_scale, deblur_params, xp)
            backend.synchronize(xp)
        else:
            out = deblur(out, fuse_scale, deblur_params)
        times["deblur"] = time.perf_counter() - t0
        cpu["deblur"] = time.process_time() - c0
    if use_model:
        t0, c0 = time.perf_counter(), time.process_time()
        from ..upscale.upscale import upscale_array

        report(0.9, "upscale model")
        out = upscale_array(out, scale / fuse_scale, device=on_device)
        if on_device:
            backend.synchronize(xp)
        else:
            out = np.asarray(out, np.float32)
        times["upscale"] = time.perf_counter() - t0
        cpu["upscale"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    if on_device:
        out = unsharp_mask_xp(out, p.sharpen, xp)
        backend.synchronize(xp)
    else:
        out = unsharp_mask(out, p.sharpen)
    times["sharpen"] = time.perf_counter() - t0
    cpu["sharpen"] = time.process_time() - c0
    if result_dtype == "uint16":
        t0, c0 = time.perf_counter(), time.process_time()
        out = quantize16_consuming(out)  # on the device when there: half the bytes to copy back
        if on_device:
            backend.synchronize(xp)
        times["quantize"] = time.perf_counter() - t0
        cpu["quantize"] = time.process_time() - c0
    if on_device:
        t0, c0 = time.perf_counter(), time.process_time()
        out = backend.to_host(out)  # the one copy of the result back to the host
        backend.release_pool(xp)
        times["to_host"] = time.perf_counter() - t0
        cpu["to_host"] = time.process_time() - c0
    want = (round(scale * ref_size[0]), round(scale * ref_size[1]))
    if (out.shape[1], out.shape[0]) != want:
        raise RuntimeError(f"output {out.shape[1]}x{out.shape[0]} is not {want[0]}x{want[1]}")
    report(1.0, "done")
    total = time.perf_counter() - t_all
    n_in = len(usable)
    mp_in = n_in * ref_size[0] * ref_size[1] / 1e6
    metrics: dict[str, Any] = {
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "seconds_total": round(total, 3),
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "frames_total": len(paths),
        "frames_readable": n_in,
        "frames_fused": len(aligned),
        "input_megapixels": round(mp_in, 3),
        "megapixels_per_second": round(mp_in / total, 3) if total > 0 else None,
        "reference": frames[ref_i].path.name,
        "reference_size": list(ref_size),
        "output_size": [int(out.shape[1]), int(out.shape[0])],
        "fuse_scale": fuse_scale,
        "upscale_model": use_model,
        "encoding": ref.encoding,
        "device": dev if on_device else "cpu",
        "flow_rms_mean": round(float(np.mean(flow_rms)), 4) if flow_rms else None,
        "aligned_during_develop": early,
        "gpu_fused_kernel": _fused_kernel_used() if on_device else None,
        "library_threads": backend.library_threads(),
        "deblur": {"sigma": deblur_params.deblur_sigma, "nsr": deblur_params.deblur_nsr},
        "safety_net": safety,
    }
    if tca is not None:
        metrics["tca"] = [round(tca[0], 6), round(tca[1], 6)]
    recipe = {
        "stack": p.to_dict(),
        "scale": scale,
        "reference": frames[ref_i].path.name,
        "upscale_model": use_model,
        "frames": [fr.path.name for fr in frames],
    }
    if result_dtype == "float32":
        out = out.astype(np.float32, copy=False)
    return StackResult(out, [fr.record for fr in frames], metrics, recipe)
