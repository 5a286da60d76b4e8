"""One stack, end to end: develop -> sharpness -> align -> colour -> master
-> flow -> fuse [-> dehaze] -> encode -> deblur [-> upscale] -> sharpen.

The sequence is STAGES (near the end of this module), the one place where a
stage is added, removed or reordered. A stage is a function
(run, state, progress) -> state: `StackRun` holds what the run fixes first
(paths, recipe, device, threads), `StackState` what the stages hand on
(frames -> transforms -> master -> flows -> result). `run_stages` times every
stage (metrics "seconds" and "cpu_seconds" under its name) and gives it its
share of the progress. The CPU and GPU paths share the sequence; a stage
whose maths runs on the device branches on `run.on_device`.

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
from .fuse import FrameInput, FuseParams, deblur, fuse, make_master
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
        run, state = _start(paths, scale, params, reference, progress, upscale_model, result_dtype, frame_stages)
        t_all = time.perf_counter()
        state = run_stages(run, state)
        return _result(run, state, t_all)


# ---------------------------------------------------------------- the run


@dataclass
class StackRun:
    """What one run fixes before its first stage: inputs, recipe, device, threads."""

    paths: list[Path]  # in name order
    folder: Path
    scale: float
    p: StackParams
    reference: str | None  # as the caller named it (then it must be readable)
    upscale_model: bool
    result_dtype: str  # "float32" or "uint16"
    dev: str  # the device of the master and everything after it (TERAPAN_DEVICE)
    xp: ModuleType  # its array module
    on_device: bool  # the GPU path: master, fusion, deblur, upscale and sharpening on the device
    reg_px: float  # pixels of the registration proxies
    frame_stages: contextlib.ExitStack  # the frame threads' settings; closed after the last frame stage
    report: Progress  # the whole run's progress, in [0, 1]


@dataclass
class StackState:
    """What the stages hand on: frames -> transforms -> master -> flows -> result.

    Each field says which stage fills it; a stage reads only what the stages
    before it filled."""

    frames: list[_Frame]  # one per path, with its record (develop decodes them, align sets transforms)
    ref_i: int  # the reference (develop moves an implicit one past unreadable files)
    times: dict[str, float] = field(default_factory=dict)  # wall seconds per timed stage
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds (all threads) per timed stage
    queue: _AlignQueue | None = None  # develop: alignments queued while the last frames decode
    usable: list[int] = field(default_factory=list)  # develop: readable frames of a usable size
    scores: dict[int, float] = field(default_factory=dict)  # develop: sharpness of the usable frames
    ref_size: tuple[int, int] = (0, 0)  # develop
    tca: tuple[float, float] | None = None  # develop: the reference's lateral CA (color.tca)
    candidates: list[int] = field(default_factory=list)  # sharpness: the frames the ranking keeps
    aligned: list[int] = field(default_factory=list)  # align: the frames fused, reference first
    aligned_early: int = 0  # align: how many were aligned during develop
    inputs: list[FrameInput] = field(default_factory=list)  # colour: transform + colour fit per aligned frame
    device_frames: Any = None  # master (GPU path): the aligned frames on the device, for the fusion too
    master: Any = None  # master: median of the aligned frames, reference size
    flow_rms: list[float] = field(default_factory=list)  # flow: per frame with a flow field (set in inputs)
    use_model: bool = False  # fuse: EDSR does the scale beyond MODEL_ROUTE_SCALE
    fuse_scale: float = 1.0  # fuse: the fusion's own scale
    image: Any = None  # fuse and after: the result so far (a device array on the GPU path)

    @property
    def ref(self) -> _Frame:
        return self.frames[self.ref_i]


@dataclass(frozen=True)
class Stage:
    """One step of the sequence: timed under NAME (metrics "seconds" and
    "cpu_seconds") when it runs, reporting within PROGRESS = (start, span)."""

    name: str
    run: Callable[[StackRun, StackState, Progress], StackState]
    progress: tuple[float, float] = (0.0, 0.0)
    when: Callable[[StackRun, StackState], bool] = lambda run, s: True
    frame_parallel: bool = False  # runs on the frame threads, with single-threaded libraries
    timed: bool = True


def _start(
    paths: list[Path],
    scale: float,
    params: StackParams | None,
    reference: str | None,
    progress: Progress | None,
    upscale_model: bool,
    result_dtype: str,
    frame_stages: contextlib.ExitStack,
) -> tuple[StackRun, StackState]:
    """Check the request (before any work) and fix the run."""
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

    def report(frac: float, msg: str) -> None:
        if progress:
            progress(float(min(max(frac, 0.0), 1.0)), msg)

    run = StackRun(
        paths=paths,
        folder=folder,
        scale=scale,
        p=p,
        reference=reference,
        upscale_model=upscale_model,
        result_dtype=result_dtype,
        dev=dev,
        xp=xp,
        on_device=dev == "gpu" and p.fuse.method == "kernel",
        reg_px=max(p.align.feature_max_pixels, p.align.ecc_max_pixels, p.flow.max_pixels),
        frame_stages=frame_stages,
        report=report,
    )
    return run, StackState(frames=[_Frame(pth, _record(pth)) for pth in paths], ref_i=ref_i)


def run_stages(run: StackRun, state: StackState, stages: tuple[Stage, ...] | None = None) -> StackState:
    """STAGES in order (the module's sequence by default), each timed and
    given its part of the progress."""
    for stage in STAGES if stages is None else stages:
        if not stage.frame_parallel:
            run.frame_stages.close()  # the frame threads stop; the libraries get their threads back
        if not stage.when(run, state):
            continue
        lo, span = stage.progress
        t0, c0 = time.perf_counter(), time.process_time()
        state = stage.run(run, state, lambda f, msg, lo=lo, span=span: run.report(lo + span * f, msg))
        if stage.timed:
            state.times[stage.name] = time.perf_counter() - t0
            state.cpu[stage.name] = time.process_time() - c0
    return state


# ------------------------------------------------------------- the stages


@dataclass
class _AlignQueue:
    """Alignments against the reference on the develop pool: a frame's is
    queued as soon as the reference's features exist and the frame is sure
    to survive the sharpness ranking, so it fills the cores the last decodes
    leave idle."""

    pool: ThreadPoolExecutor
    p: StackParams
    frames: list[_Frame]
    ref_feats: Any = None
    ref_pyr: al.ReferencePyramid | None = None
    futures: dict[int, Future[Any]] = field(default_factory=dict)

    def set_reference(self, grey: np.ndarray) -> None:
        self.ref_feats = al.detect(grey, self.p.align)
        self.ref_pyr = al.ReferencePyramid(grey, self.p.align) if self.p.align.ecc else None

    def align_one(self, i: int) -> tuple[Any, np.ndarray, float | None, str]:
        g = self.frames[i].grey
        assert g is not None
        res = al.coarse_align(self.ref_feats, al.detect(g, self.p.align), self.p.align)
        if not res.ok:
            return res, res.transform, None, ""
        if self.ref_pyr is None:
            return res, res.transform, None, ""
        t, cc, note = al.fine_align(self.ref_pyr, g, res.transform, self.p.align)
        return res, t, cc, note

    def queue(self, i: int) -> None:
        if i not in self.futures:
            self.futures[i] = self.pool.submit(self.align_one, i)

    def queue_sure(self, scores: dict[int, float], ref_i: int) -> None:
        """Queue every developed frame that the ranking can no longer drop: at
        least `drop_worst` others rank below it already (the ranking's order
        is (score, index) and only grows)."""
        if self.ref_feats is None:
            return
        ranked = sorted((s, j) for j, s in scores.items() if j != ref_i)
        for _, j in ranked[self.p.sharpness.drop_worst :]:
            self.queue(j)


def _develop(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Decode every frame (threads) and make its proxies and sharpness score."""
    p, frames = run.p, s.frames
    order = [s.ref_i] + [i for i in range(len(frames)) if i != s.ref_i]
    tca_for = s.ref_i if p.color.tca else -1
    upload = run.xp.asarray if run.on_device else None
    # One pool for develop and align (see _AlignQueue).
    pool = ThreadPoolExecutor(max_workers=_workers(p))
    run.frame_stages.callback(pool.shutdown, wait=True, cancel_futures=True)
    s.queue = q = _AlignQueue(pool, p, frames)
    ref_size: tuple[int, int] | None = None
    # Frames decode in parallel (decoders and NumPy release the GIL);
    # results are taken in order, so the policy below is unchanged.
    futs = [pool.submit(_develop_one, frames[i].path, p, run.reg_px, i == tca_for, upload) for i in order]
    for n_done, (i, fut) in enumerate(zip(order, futs, strict=True)):
        fr = frames[i]
        got = fut.result()
        if isinstance(got, InputError):
            fr.record["reason"] = f"unreadable: {got.reason}"
            if i == s.ref_i:
                if run.reference is not None:
                    raise got
                s.ref_i = -1  # pick the next readable file below
            report((n_done + 1) / len(order), f"develop {fr.path.name}")
            continue
        if s.ref_i == -1:
            s.ref_i = i
        w, h = got.size
        if ref_size is None:
            ref_size = (w, h)
        elif abs(w / ref_size[0] - 1) > p.align.max_size_change or abs(h / ref_size[1] - 1) > p.align.max_size_change:
            fr.record["reason"] = (
                f"size {w}x{h} differs from the reference's {ref_size[0]}x{ref_size[1]} by more than "
                f"{p.align.max_size_change:.0%}"
            )
            report((n_done + 1) / len(order), f"develop {fr.path.name}")
            continue
        fr.encoding = got.encoding
        s.scores[i] = got.score
        fr.record["sharpness"] = got.score
        fr.grey, fr.grey_f = got.grey, got.grey_f
        fr.col, fr.col_f = got.col, got.col_f
        if i == s.ref_i and p.color.tca:
            # The reference moved on from an unreadable first choice.
            s.tca = got.tca if got.tca is not None else estimate_tca(got.image, p.color)
        fr.image, fr.on_device = got.image, got.on_device
        if i == s.ref_i:
            q.set_reference(got.grey)
        q.queue_sure(s.scores, s.ref_i)
        report((n_done + 1) / len(order), f"develop {fr.path.name}")
    # The futures hold the developed frames: drop them so that a frame freed
    # later (after fusion) really goes.
    futs.clear()
    got = None
    s.usable = [i for i in range(len(frames)) if frames[i].image is not None]
    # Name every unreadable file and its reason, not only the folder.
    bad = "; ".join(f"{fr.path.name}: {fr.record.get('reason')}" for fr in frames if fr.image is None)
    why = f" ({bad})" if bad else ""
    if s.ref_i < 0 or frames[s.ref_i].image is None:
        raise InputError(run.folder, f"no readable reference frame{why}")
    if len(s.usable) < 2:
        raise InputError(run.folder, f"need at least 2 readable frames (found {len(s.usable)}){why}")
    assert ref_size is not None
    s.ref_size = ref_size
    return s


def _rank(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Drop the worst frames by sharpness (never the reference)."""
    keep, reasons = rank_frames([s.scores[i] for i in s.usable], run.p.sharpness, protect=s.usable.index(s.ref_i))
    for k, i in enumerate(s.usable):
        if not keep[k]:
            s.frames[i].record["reason"] = reasons[k]
            s.frames[i].on_device = None  # its device copy goes back to the pool
    s.candidates = [i for k, i in enumerate(s.usable) if keep[k]]
    return s


def _align(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Coarse and fine alignment of every kept frame to the reference."""
    frames, ref, q = s.frames, s.ref, s.queue
    assert ref.grey is not None and q is not None
    s.aligned = [s.ref_i]
    ref.record.update(kept=True, reg_error=0.0, transform=np.eye(3).tolist())
    others = [i for i in s.candidates if i != s.ref_i]
    s.aligned_early = sum(1 for i in others if i in q.futures)
    # Frames align independently against the one reference (SIFT, matching
    # and ECC release the GIL): threads, results applied in order. Those the
    # ranking kept that were not sure during develop are queued now.
    for i in others:
        q.queue(i)
    for n_done, i in enumerate(others):
        res, t, cc, note = q.futures.pop(i).result()
        fr = frames[i]
        assert fr.grey is not None
        if not res.ok:
            fr.record["reason"] = f"alignment failed: {res.reason}"
            fr.image = fr.on_device = None
        else:
            if q.ref_pyr is not None:
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
            s.aligned.append(i)
        report((n_done + 1) / max(1, len(others)), f"align {fr.path.name}")
    if len(s.aligned) < 2 and len(others) > 0:
        raise InputError(run.folder, "need at least 2 frames that align with the reference")
    return s


def _match_colour(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Colour: each aligned frame's gain and offset against the reference
    (measured on the aligned proxies, so it runs after alignment)."""
    p, ref = run.p, s.ref

    def match_one(i: int) -> tuple[np.ndarray, np.ndarray] | None:
        fr = s.frames[i]
        assert fr.col is not None and ref.col is not None
        if p.color.match and i != s.ref_i:
            return match_to_reference(ref.col, ref.col_f, fr.col, fr.col_f, fr.transform, p.color)
        return None

    with ThreadPoolExecutor(max_workers=_workers(p)) as pool:
        for i, fit in zip(s.aligned, pool.map(match_one, s.aligned), strict=True):
            fr = s.frames[i]
            assert fr.image is not None
            gain = offset = None
            if fit is not None:
                gain, offset = fit
                fr.record["gain"] = [round(float(x), 5) for x in gain]
                fr.record["offset"] = [round(float(x), 6) for x in offset]
            s.inputs.append(FrameInput(fr.image, fr.transform, gain=gain, offset=offset, tca=s.tca))
    return s


def _master(run: StackRun, s: StackState, report: Progress) -> StackState:
    """The master: per-pixel median of the aligned frames (reference size)."""
    if run.on_device:
        from .fuse_gpu import DeviceFrames, make_master_xp

        # Each frame went to the device once, in its decode thread.
        s.device_frames = DeviceFrames(s.inputs, run.xp, [s.frames[i].on_device for i in s.aligned])
        s.master = make_master_xp(s.inputs, s.ref_size, run.p.fuse, run.xp, s.device_frames, report)
    else:
        s.master = make_master(s.inputs, s.ref_size, run.p.fuse, report)
    return s


def _flow(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Residual motion of each aligned frame against the master."""
    p, ref = run.p, s.ref
    if p.flow.method == "none":
        return s
    mg, _ = proxy(al.align_proxy(s.master), run.reg_px)
    gh, gw = mg.shape

    def flow_one(i: int, fin: FrameInput) -> Any:
        fr = s.frames[i]
        assert fr.grey is not None
        tp = rescale_transform(fin.transform, ref.grey_f, fr.grey_f)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpPerspective(fr.grey, tp, (gw, gh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        ones = np.full(fr.grey.shape, 255, np.uint8)
        valid = cv2.warpPerspective(ones, tp, (gw, gh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        return compute_flow(mg, warped, p.flow, valid, base_f=ref.grey_f)

    with ThreadPoolExecutor(max_workers=_workers(p)) as pool:
        for k, ff in enumerate(pool.map(flow_one, s.aligned, s.inputs)):
            fr, fin = s.frames[s.aligned[k]], s.inputs[k]
            if ff is not None:
                fin.flow = ff
                fr.record["flow_rms"] = round(ff.rms(), 4)
                s.flow_rms.append(ff.rms())
            report((k + 1) / len(s.aligned), f"flow {fr.path.name}")
    return s


def _fuse(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Kernel fusion onto the output grid (x2 when the model does the rest);
    the frames are freed afterwards."""
    p, xp = run.p, run.xp
    s.use_model = run.upscale_model and run.scale > MODEL_ROUTE_SCALE
    s.fuse_scale = MODEL_ROUTE_SCALE if s.use_model else run.scale
    out_size = (round(s.fuse_scale * s.ref_size[0]), round(s.fuse_scale * s.ref_size[1]))
    if run.on_device:
        from .fuse_gpu import fuse_xp

        # From here to the sharpened result the image stays on the device.
        s.image = fuse_xp(
            s.inputs, s.fuse_scale, out_size, s.master, p.fuse, xp, s.device_frames, report, to_host_result=False
        )
        backend.synchronize(xp)
    else:
        s.image = fuse(s.inputs, s.fuse_scale, out_size, s.master, p.fuse, report)
    s.inputs, s.device_frames = [], None
    for fr in s.frames:
        fr.image = fr.on_device = None
    if run.on_device:
        backend.release_pool(xp)  # the frames' device copies go back before the model needs memory
    return s


def _dehaze(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Haze removal (color.dehaze), on the host."""
    out = dehaze(backend.to_host(s.image) if run.on_device else s.image, run.p.color)
    s.image = run.xp.asarray(out) if run.on_device else out
    return s


def _encode(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Back to the reference's encoding: deconvolution and sharpening act on
    the encoded image (measured: +0.3 dB over linear on clean bursts)."""
    s.image = encode(s.image, s.ref.encoding)  # on the device too (same 16-bit table)
    return s


def _deblur(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Wiener deconvolution of the pixel integration (kernel fusion only)."""
    if run.on_device:
        from .fuse_gpu import deblur_xp

        s.image = deblur_xp(s.image, s.fuse_scale, run.p.fuse, run.xp)
        backend.synchronize(run.xp)
    else:
        s.image = deblur(s.image, s.fuse_scale, run.p.fuse)
    return s


def _upscale(run: StackRun, s: StackState, report: Progress) -> StackState:
    """EDSR for the scale beyond the fusion's."""
    from ..upscale.upscale import upscale_array

    report(0.0, "upscale model")
    s.image = upscale_array(s.image, run.scale / s.fuse_scale, device=run.on_device)
    if run.on_device:
        backend.synchronize(run.xp)
    else:
        s.image = np.asarray(s.image, np.float32)
    return s


def _sharpen(run: StackRun, s: StackState, report: Progress) -> StackState:
    """Unsharp mask."""
    if run.on_device:
        from .fuse_gpu import unsharp_mask_xp

        s.image = unsharp_mask_xp(s.image, run.p.sharpen, run.xp)
        backend.synchronize(run.xp)
    else:
        s.image = unsharp_mask(s.image, run.p.sharpen)
    return s


def _quantize(run: StackRun, s: StackState, report: Progress) -> StackState:
    """16-bit codes (result_dtype "uint16"), where the image is."""
    s.image = quantize16_consuming(s.image)  # on the device when there: half the bytes to copy back
    if run.on_device:
        backend.synchronize(run.xp)
    return s


def _to_host(run: StackRun, s: StackState, report: Progress) -> StackState:
    """The one copy of the result back to the host (GPU path)."""
    s.image = backend.to_host(s.image)
    backend.release_pool(run.xp)
    return s


#: The stack, in order: the one place to add, remove or reorder a stage. The
#: frame-parallel stages come first (the frame threads and their library
#: settings end before the first stage that is not); progress spans are
#: (start, width) of the whole run's [0, 1].
STAGES: tuple[Stage, ...] = (
    Stage("develop", _develop, progress=(0.0, 0.2), frame_parallel=True),
    Stage("sharpness", _rank, frame_parallel=True),
    Stage("align", _align, progress=(0.2, 0.2), frame_parallel=True),
    Stage("color", _match_colour, frame_parallel=True),
    Stage("master", _master, progress=(0.4, 0.1), frame_parallel=True),
    Stage("flow", _flow, progress=(0.5, 0.1), frame_parallel=True),
    Stage("fuse", _fuse, progress=(0.6, 0.3), frame_parallel=True),
    Stage("dehaze", _dehaze, when=lambda run, s: run.p.color.dehaze),
    Stage("encode", _encode, timed=False),
    Stage("deblur", _deblur, when=lambda run, s: run.p.fuse.method == "kernel"),
    Stage("upscale", _upscale, progress=(0.9, 0.0), when=lambda run, s: s.use_model),
    Stage("sharpen", _sharpen),
    Stage("quantize", _quantize, when=lambda run, s: run.result_dtype == "uint16"),
    Stage("to_host", _to_host, when=lambda run, s: run.on_device),
)


def _result(run: StackRun, s: StackState, t_all: float) -> StackResult:
    """The checked result, its metrics and its recipe."""
    out, ref_size = s.image, s.ref_size
    want = (round(run.scale * ref_size[0]), round(run.scale * ref_size[1]))
    if (out.shape[1], out.shape[0]) != want:
        raise RuntimeError(f"output {out.shape[1]}x{out.shape[0]} is not {want[0]}x{want[1]}")
    run.report(1.0, "done")
    total = time.perf_counter() - t_all
    n_in = len(s.usable)
    mp_in = n_in * ref_size[0] * ref_size[1] / 1e6
    metrics: dict[str, Any] = {
        "seconds": {k: round(v, 3) for k, v in s.times.items()},
        "seconds_total": round(total, 3),
        "cpu_seconds": {k: round(v, 3) for k, v in s.cpu.items()},
        "frames_total": len(run.paths),
        "frames_readable": n_in,
        "frames_fused": len(s.aligned),
        "input_megapixels": round(mp_in, 3),
        "megapixels_per_second": round(mp_in / total, 3) if total > 0 else None,
        "reference": s.ref.path.name,
        "reference_size": list(ref_size),
        "output_size": [int(out.shape[1]), int(out.shape[0])],
        "fuse_scale": s.fuse_scale,
        "upscale_model": s.use_model,
        "encoding": s.ref.encoding,
        "device": run.dev if run.on_device else "cpu",
        "flow_rms_mean": round(float(np.mean(s.flow_rms)), 4) if s.flow_rms else None,
        "aligned_during_develop": s.aligned_early,
        "gpu_fused_kernel": _fused_kernel_used() if run.on_device else None,
        "library_threads": backend.library_threads(),
    }
    if s.tca is not None:
        metrics["tca"] = [round(s.tca[0], 6), round(s.tca[1], 6)]
    recipe = {
        "stack": run.p.to_dict(),
        "scale": run.scale,
        "reference": s.ref.path.name,
        "upscale_model": s.use_model,
        "frames": [fr.path.name for fr in s.frames],
    }
    if run.result_dtype == "float32":
        out = out.astype(np.float32, copy=False)
    return StackResult(out, [fr.record for fr in s.frames], metrics, recipe)
