"""The fusion stages (master, kernel fusion, deblur) with xp ops: CuPy on a
GPU, NumPy elsewhere (that is how the tests run them without CUDA).

Same maths as processing/stack/fuse.py (`make_master`, `fuse_kernel`, `fuse`,
`deblur`): maps composed from transform and flow, Gaussian-weighted 2x2
gather as one bilinear read with the same lookup tables, robustness weights
from the master, coverage fallback to the master, Wiener deblur. Differences
are interpolation precision only (cv2 quantises fractions to 1/32 px and
rounds integer outputs; here everything is float32): the equivalence test
asks for PSNR >= 60 dB against the CPU path.

Each frame is copied to the device once per stack (`DeviceFrames`, uint16,
2 bytes per sample) and used by both the master and the fusion; results come
back once. Work goes in strips of output rows (`gpu_strip_rows`), so device
memory is the frames plus a few strip-sized buffers. On CuPy each frame's
term of the fusion is one CUDA kernel (`fuse_cuda`, checked against
`accumulate_frame_xp` once per process); TERAPAN_GPU_FUSED=0 keeps the
array operations.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..device.backend import to_host
from ..io.metrics import psnr
from . import fuse_cuda, gpu
from .fuse import (
    FrameInput,
    FuseParams,
    clip_bias_luts,
    clip_noise_model,
    debias_clipped,
    fusion_noise,
    kernel_params,
    kernel_sigma_map,
    wiener_kernel,
)

Progress = Callable[[float, str], None]
Array = Any
GPU_STRIP_ROWS = 1024  # output rows per strip on the device


class DeviceFrames:
    """Device copies of the frames' pixels (and flow fields), made once."""

    def __init__(self, frames: list[FrameInput], xp: ModuleType, images: list[Array | None] | None = None) -> None:
        """IMAGES: device copies made earlier (the stack pipeline uploads each
        frame in its decode thread, hidden behind the other decodes); a
        missing one is copied now."""
        self.xp = xp
        given = images if images is not None else [None] * len(frames)
        self.images = [xp.asarray(fr.image) if im is None else im for fr, im in zip(frames, given, strict=True)]
        self.flows = [None if fr.flow is None else xp.asarray(fr.flow.field) for fr in frames]


def _ensure(frames: list[FrameInput], xp: ModuleType, dev: DeviceFrames | None) -> DeviceFrames:
    if dev is not None and dev.xp is xp and len(dev.images) == len(frames):
        # Flow may have been computed after the frames were moved: refresh.
        dev.flows = [
            None if fr.flow is None else (old if old is not None else xp.asarray(fr.flow.field))
            for fr, old in zip(frames, dev.flows, strict=True)
        ]
        return dev
    return DeviceFrames(frames, xp)


def _frame_maps(fr: FrameInput, flow: Array | None, scale: float, out_w: int, y0: int, rows: int, xp: ModuleType):
    """fuse.frame_maps with xp: frame coordinates T(p + flow(p)) of output rows."""
    xs = xp.asarray(((np.arange(out_w, dtype=np.float64) + 0.5) / scale - 0.5).astype(np.float32))[None, :]
    ys = xp.asarray(((np.arange(y0, y0 + rows, dtype=np.float64) + 0.5) / scale - 0.5).astype(np.float32))[:, None]
    t = fr.transform.astype(np.float64)
    t = (t / t[2, 2]).astype(np.float32)
    t = [[float(t[i, j]) for j in range(3)] for i in range(3)]
    if flow is not None and fr.flow is not None:
        px = xp.broadcast_to(xs, (rows, out_w))
        py = xp.broadcast_to(ys, (rows, out_w))
        f = fr.flow.f
        qx = ((px + 0.5) * f[0] - 0.5).astype(xp.float32)
        qy = ((py + 0.5) * f[1] - 0.5).astype(xp.float32)
        fl = gpu.remap(flow, qx, qy, 1, xp)
        px = px + fl[..., 0]
        py = py + fl[..., 1]
    else:
        px, py = xs, ys
    d = t[2][0] * px + t[2][1] * py + t[2][2]
    u = (t[0][0] * px + t[0][1] * py + t[0][2]) / d
    v = (t[1][0] * px + t[1][1] * py + t[1][2]) / d
    u, v = xp.broadcast_arrays(u, v)
    return xp.ascontiguousarray(u, dtype=xp.float32), xp.ascontiguousarray(v, dtype=xp.float32)


def _colour(fr: FrameInput, v: Array, xp: ModuleType, integer: bool) -> Array:
    """Raw samples -> working values, colour match folded in (fuse._colour_read)."""
    scale = 1 / 65535 if integer else 1.0
    if fr.gain is not None:
        v = v * xp.asarray((fr.gain.astype(np.float64) * scale).astype(np.float32))
    elif scale != 1:
        v = v * xp.float32(scale)
    if fr.offset is not None:
        v = v + xp.asarray(fr.offset.astype(np.float32))
    return v


def _read(fr, img, mx, my, xp, sigma=None, s_range=(0.0, 0.0)):
    """fuse._read with xp: plain bilinear read, or the kernel gather (+ weight)."""
    integer = img.dtype == xp.uint16
    h, w = img.shape[:2]
    if fr.tca is None or fr.tca == (1.0, 1.0):
        if sigma is None:
            return _colour(fr, gpu.remap(img, mx, my, 1, xp), xp, integer), None
        kx, ky, wk = gpu.kernel_maps(mx, my, sigma, s_range, xp)
        v = gpu.remap(img, kx, ky, 1, xp)
        return _colour(fr, v, xp, integer), wk * gpu.coverage(kx, ky, w, h, xp)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    chans, wk = [], None
    for c, k in enumerate((fr.tca[0], 1.0, fr.tca[1])):
        cmx = (cx + k * (mx - cx)).astype(xp.float32)
        cmy = (cy + k * (my - cy)).astype(xp.float32)
        if sigma is None:
            chans.append(gpu.remap(img[..., c], cmx, cmy, 1, xp))
        else:
            kx, ky, wc = gpu.kernel_maps(cmx, cmy, sigma, s_range, xp)
            chans.append(gpu.remap(img[..., c], kx, ky, 1, xp))
            if c == 1:
                wk = wc * gpu.coverage(kx, ky, w, h, xp)
    return _colour(fr, xp.stack(chans, axis=-1), xp, integer), wk


def _grey(v: Array) -> Array:
    return v.mean(axis=2) if v.ndim == 3 else v


def _stab(g: Array, xp: ModuleType) -> Array:
    return xp.sqrt(xp.maximum(g, 0.0))


def master_reads_xp(
    frames: list[FrameInput], dev: DeviceFrames, w: int, y0: int, r: int, xp: ModuleType
) -> tuple[Array, Array, Array]:
    """One master strip with array operations (what fuse_cuda's master kernel
    does per pixel): the median of the frames' valid samples (r x w x 3), each
    frame's variance-stabilised grey with the median where it is invalid
    (n x r x w) and the validity (n x r x w)."""
    n = len(frames)
    stack = xp.empty((n, r, w, 3), xp.float32)
    valid = xp.empty((n, r, w), bool)
    for i, fr in enumerate(frames):
        mx, my = _frame_maps(fr, dev.flows[i], 1.0, w, y0, r, xp)
        fw, fh = fr.size
        stack[i] = _read(fr, dev.images[i], mx, my, xp)[0]
        valid[i] = (mx >= 0) & (my >= 0) & (mx <= fw - 1) & (my <= fh - 1)
    med = gpu.masked_median(stack, valid, xp)
    gst = xp.stack([_stab(_grey(xp.where(valid[i][..., None], stack[i], med)), xp) for i in range(n)])
    return med, gst, valid


def make_master_xp(
    frames: list[FrameInput],
    size: tuple[int, int],
    params: FuseParams | None = None,
    xp: ModuleType = np,
    dev: DeviceFrames | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """fuse.make_master with xp: returns the (host) master and sets each
    frame's `sigma` and `robust` (host uint8) like the CPU version."""
    p = params or FuseParams()
    dev = _ensure(frames, xp, dev)
    w, h = size
    out = xp.empty((h, w, 3), xp.float32)
    n = len(frames)
    win = max(1, p.robust_window)
    samples: list[list[Array]] = [[] for _ in frames]
    diffs = [xp.zeros((h, w), xp.int16) for _ in frames] if p.robust else []
    # The same strips as the CPU version: its box filters restart at strip
    # edges, and following them keeps the two paths equal.
    rows = max(16, p.strip_rows)
    fused = fuse_cuda.FusedFrames.get() if (xp is not np and fused_kernel_enabled()) else None
    tables = None
    if fused is not None and fuse_cuda.master_supports(frames, dev.images):
        tables = fuse_cuda.master_tables(frames, dev.images, dev.flows, xp)
    for y0 in range(0, h, rows):
        r = min(rows, h - y0)
        if fused is not None and tables is not None:
            med = xp.empty((r, w, 3), xp.float32)
            gst = xp.empty((n, r, w), xp.float32)
            valid = xp.empty((n, r, w), xp.uint8)
            fused.master(fuse_cuda.master_strip_args(tables, w, y0, r, med, gst, valid))  # one kernel per strip
        else:
            med, gst, valid = master_reads_xp(frames, dev, w, y0, r, xp)
        out[y0 : y0 + r] = med
        gm = gpu.box(_stab(_grey(med), xp), win, xp)
        for i in range(n):
            d = gpu.box(gst[i], win, xp) - gm
            samples[i].append(d[::3, ::3][valid[i][::3, ::3] != 0])
            if p.robust:
                diffs[i][y0 : y0 + r] = xp.clip(d * 1e4, -32000, 32000).astype(xp.int16)
        if progress:
            progress(min(1.0, (y0 + r) / h), "master")
    for i, fr in enumerate(frames):
        d = xp.concatenate(samples[i]) if samples[i] else xp.zeros(1, xp.float32)
        if d.size == 0:
            d = xp.zeros(1, xp.float32)
        fr.sigma = float(1.4826 * float(xp.median(xp.abs(d - xp.median(d))))) + 1e-4
        if p.robust:
            t = np.float32(p.robust_k * fr.sigma)
            e = xp.maximum(xp.abs(diffs[i].astype(xp.float32)) * xp.float32(1e-4) - t, 0.0) / t
            fr.robust = to_host((xp.exp(-2.0 * e * e) * 255 + 0.5).astype(xp.uint8))
            fr.diff = None
    m = xp.clip(gpu.unsharp(out, p.master_radius, p.master_sharpen, xp), 0.0, 1.0)
    return to_host(m).astype(np.float32, copy=False)


def fuse_kernel_xp(
    frames: list[FrameInput],
    scale: float,
    out_size: tuple[int, int],
    master: np.ndarray,
    params: FuseParams | None = None,
    xp: ModuleType = np,
    sigma_map: np.ndarray | None = None,
    dev: DeviceFrames | None = None,
    progress: Progress | None = None,
    to_host_result: bool = True,
) -> Any:
    """fuse.fuse_kernel with xp (see the module doc); a host array unless
    TO_HOST_RESULT is False (then the device array, for deblur on device)."""
    p = params or FuseParams()
    dev = _ensure(frames, xp, dev)
    ow, oh = out_size
    out = xp.empty((oh, ow, 3), xp.float32)
    eps = xp.float32(1e-3)
    s_range = (p.kernel_sigma, max(p.kernel_sigma, p.kernel_sigma_flat))
    m_dev = xp.asarray(master, dtype=xp.float32)
    s_dev = None if sigma_map is None else xp.asarray(sigma_map, dtype=xp.float32)
    rob = [None if fr.robust is None else xp.asarray(fr.robust) for fr in frames]
    rows = max(p.strip_rows, GPU_STRIP_ROWS if xp is not np else p.strip_rows)
    fused = fuse_cuda.FusedFrames.get() if (xp is not np and fused_kernel_enabled()) else None
    for y0 in range(0, oh, rows):
        r = min(rows, oh - y0)
        xs = xp.asarray((np.arange(ow, dtype=np.float32) + 0.5) / scale - 0.5)
        ys = xp.asarray((np.arange(y0, y0 + r, dtype=np.float32) + 0.5) / scale - 0.5)
        rx = xp.ascontiguousarray(xp.broadcast_to(xs[None, :], (r, ow)))
        ry = xp.ascontiguousarray(xp.broadcast_to(ys[:, None], (r, ow)))
        m = gpu.remap(m_dev, rx, ry, 3, xp)
        ks: Any = p.kernel_sigma if s_dev is None else gpu.remap(s_dev, rx, ry, 1, xp)
        num = m * eps
        den = xp.full((r, ow), eps, xp.float32)
        luts = _device_luts(ks, s_range, xp) if fused is not None else None
        for i, fr in enumerate(frames):
            rob_i = rob[i] if p.robust else None
            img = dev.images[i]
            if fused is not None and luts is not None and fuse_cuda.supports(fr, img):
                args = fuse_cuda.frame_args(fr, img, dev.flows[i], scale, ow, y0, r, ks, s_range, luts, rob_i, num, den)
                fused(args)  # the whole term in one kernel
            else:
                accumulate_frame_xp(fr, img, dev.flows[i], scale, ow, y0, r, ks, s_range, rob_i, rx, ry, num, den, xp)
        out[y0 : y0 + r] = num / den[..., None]
        if progress:
            progress(min(1.0, (y0 + r) / oh), "fuse")
    out = xp.clip(out, 0.0, 1.0)
    return to_host(out) if to_host_result else out


def accumulate_frame_xp(
    fr: FrameInput,
    img: Array,
    flow: Array | None,
    scale: float,
    ow: int,
    y0: int,
    r: int,
    ks: Any,
    s_range: tuple[float, float],
    rob: Array | None,
    rx: Array,
    ry: Array,
    num: Array,
    den: Array,
    xp: ModuleType,
) -> None:
    """One frame's kernel-regression term added to an output strip, with
    array operations (what fuse_cuda's kernel does in one pass)."""
    mx, my = _frame_maps(fr, flow, scale, ow, y0, r, xp)
    v, wk = _read(fr, img, mx, my, xp, ks, s_range)
    if rob is not None:
        wk = wk * (gpu.remap(rob, rx, ry, 1, xp) * xp.float32(1 / 255))
    gpu.accumulate(num, den, v, wk)


def fused_kernel_enabled() -> bool:
    """TERAPAN_GPU_FUSED=0 keeps the array-operation path on the GPU (for
    comparison runs); the fused kernel is the default."""
    return os.environ.get("TERAPAN_GPU_FUSED", "1").strip() not in ("0", "false", "no", "off")


def _device_luts(ks: Any, s_range: tuple[float, float], xp: ModuleType) -> tuple[Array, Array]:
    """The kernel lookup tables gpu.kernel_maps reads, on the device."""
    from .fuse import _kernel_luts

    lo, hi = (float(ks), float(ks)) if isinstance(ks, (int, float)) else s_range
    a_np, s_np = _kernel_luts(round(lo, 4), round(max(hi, lo), 4))
    return xp.asarray(a_np), xp.asarray(s_np)


def fused_check_case(xp: ModuleType, seed: int = 5) -> dict[str, Any]:
    """A small strip problem with every feature the kernel covers: a flow
    field, colour gain and offset, a robustness map, a kernel-size map and
    reads past the frame's edges."""
    from .flow import FlowField

    rng = np.random.default_rng(seed)
    fh, fw, scale = 40, 56, 2.0
    img = (rng.random((fh, fw, 3)) * 65535).astype(np.uint16)
    t = np.array([[1.01, 0.02, -1.5], [-0.015, 0.99, 2.25], [1e-4, -2e-4, 1.0]])
    flow = FlowField((rng.normal(0, 0.6, (20, 28, 2))).astype(np.float32), (0.5, 0.5))
    fr = FrameInput(img, t, flow=flow, gain=np.array([1.02, 0.97, 1.05]), offset=np.array([0.01, -0.02, 0.0]))
    ow, y0, r = int(fw * scale), 10, 50
    rob = (rng.random((fh, fw)) * 255).astype(np.uint8)
    s_range = (0.45, 0.9)
    ks = xp.asarray(rng.uniform(0.4, 0.95, (r, ow)).astype(np.float32))
    xs = xp.asarray((np.arange(ow, dtype=np.float32) + 0.5) / scale - 0.5)
    ys = xp.asarray((np.arange(y0, y0 + r, dtype=np.float32) + 0.5) / scale - 0.5)
    rx = xp.ascontiguousarray(xp.broadcast_to(xs[None, :], (r, ow)))
    ry = xp.ascontiguousarray(xp.broadcast_to(ys[:, None], (r, ow)))
    base = xp.asarray(rng.random((r, ow, 3)).astype(np.float32))
    return {
        "fr": fr, "img": xp.asarray(img), "flow": xp.asarray(flow.field), "scale": scale, "ow": ow, "y0": y0,
        "r": r, "ks": ks, "s_range": s_range, "rob": xp.asarray(rob), "rx": rx, "ry": ry, "base": base,
    }  # fmt: skip


def fused_and_xp_strips(fused: Any, c: dict[str, Any], xp: ModuleType) -> tuple[np.ndarray, np.ndarray]:
    """Case C (see fused_check_case) accumulated by the fused kernel FUSED
    (any callable taking fuse_cuda.FrameArgs) and by accumulate_frame_xp:
    both normalised strips, on the host."""
    results = []
    for use_kernel in (True, False):
        num = c["base"].copy()
        den = xp.full(num.shape[:2], 1e-3, xp.float32)
        if use_kernel:
            luts = _device_luts(c["ks"], c["s_range"], xp)
            fused(
                fuse_cuda.frame_args(
                    c["fr"], c["img"], c["flow"], c["scale"], c["ow"], c["y0"], c["r"], c["ks"], c["s_range"],
                    luts, c["rob"], num, den,
                )
            )  # fmt: skip
        else:
            accumulate_frame_xp(
                c["fr"], c["img"], c["flow"], c["scale"], c["ow"], c["y0"], c["r"], c["ks"], c["s_range"], c["rob"],
                c["rx"], c["ry"], num, den, xp,
            )  # fmt: skip
        results.append(to_host(num / den[..., None]))
    return results[0], results[1]


def _check_fused_against_xp(fused: Any, xp: ModuleType) -> float:
    """PSNR (dB) between the fused kernel and accumulate_frame_xp on
    fused_check_case (both on the device)."""
    got, want = fused_and_xp_strips(fused, fused_check_case(xp), xp)
    return float(psnr(got, want))


def _check_master_against_xp(fused: Any, xp: ModuleType) -> float:
    """PSNR (dB) between the master kernel and master_reads_xp on a few
    frames of fused_check_case (flow, colour, parts outside the frames)."""
    c = fused_check_case(xp)
    base = c["fr"]
    shifts = [(0.0, 0.0), (3.5, -2.25), (-6.0, 4.0), (1.25, 1.75)]
    frames = []
    for k, (dx, dy) in enumerate(shifts):
        t = base.transform.copy()
        t[0, 2] += dx
        t[1, 2] += dy
        flow = base.flow if k % 2 == 0 else None
        frames.append(dataclasses.replace(base, transform=t, flow=flow))
    dev = DeviceFrames(frames, xp, [c["img"]] * len(frames))
    dev.flows = [c["flow"] if fr.flow is not None else None for fr in frames]
    h, w = c["img"].shape[:2]
    y0, r = 3, h - 5
    med_x, gst_x, valid_x = master_reads_xp(frames, dev, w, y0, r, xp)
    tables = fuse_cuda.master_tables(frames, dev.images, dev.flows, xp)
    med = xp.empty((r, w, 3), xp.float32)
    gst = xp.empty((len(frames), r, w), xp.float32)
    valid = xp.empty((len(frames), r, w), xp.uint8)
    fused.master(fuse_cuda.master_strip_args(tables, w, y0, r, med, gst, valid))
    agree = float(to_host((valid != 0) == valid_x).mean())
    if agree < 0.999:
        return 0.0
    got = np.concatenate([to_host(med).ravel(), to_host(gst).ravel()])
    want = np.concatenate([to_host(med_x).ravel(), to_host(gst_x).ravel()])
    return float(psnr(got, want))


# FusedFrames.check runs these; registered here because fuse_cuda must not import this module.
fuse_cuda.SELF_CHECKS.update(fusion=_check_fused_against_xp, master=_check_master_against_xp)


def fuse_xp(
    frames: list[FrameInput],
    scale: float,
    out_size: tuple[int, int],
    master: np.ndarray,
    params: FuseParams | None = None,
    xp: ModuleType = np,
    dev: DeviceFrames | None = None,
    progress: Progress | None = None,
    noise: float | None = None,
    to_host_result: bool = True,
) -> Any:
    """fuse.fuse (kernel method) on the device: the same adaptive kernel size
    (a host array unless TO_HOST_RESULT is False)."""
    p = params or FuseParams()
    if p.method != "kernel":
        raise ValueError("fuse_xp: only the kernel method runs on the device")
    if noise is None:
        noise = fusion_noise(frames, p)
    p = kernel_params(frames, p)
    smap = kernel_sigma_map(master, noise, p) if p.kernel_sigma_flat > p.kernel_sigma else None
    out = fuse_kernel_xp(frames, scale, out_size, master, p, xp, smap, dev, progress, to_host_result)
    if p.clip_debias:  # as fuse.fuse; a host result takes the host (OpenCV) path
        model = clip_noise_model(frames[0].image, master)
        out = (
            debias_clipped(out, model, scale, p)
            if isinstance(out, np.ndarray)
            else debias_clipped_xp(out, model, scale, p, xp)
        )
    return out


def debias_clipped_xp(img: Any, model: np.ndarray | None, scale: float, params: FuseParams, xp: ModuleType) -> Any:
    """fuse.debias_clipped with xp (Gaussian with BORDER_REFLECT, table lookup)."""
    luts = clip_bias_luts(model, params)
    if luts is None:
        return img
    ms = gpu.gaussian_blur(img, max(0.3, params.clip_debias_radius * scale), xp)
    n = len(luts[0]) - 1  # table steps over [0, 1]
    idx = xp.clip((ms * n + 0.5).astype(xp.int32), 0, n)
    corr = xp.stack([xp.asarray(luts[c]).take(idx[..., c]) for c in range(img.shape[2])], axis=-1)
    return xp.clip(img + corr, 0.0, 1.0)


def deblur_xp(img: Any, scale: float, params: FuseParams | None = None, xp: ModuleType = np) -> Any:
    """fuse.deblur with xp (FIR Wiener filter, BORDER_REFLECT)."""
    p = params or FuseParams()
    if p.deblur_nsr <= 0 or scale <= 1.0:
        return img
    k = xp.asarray(wiener_kernel(scale, p.deblur_sigma, p.deblur_nsr, p.deblur_taps))
    nd = gpu.ndimage_for(xp)
    img = xp.asarray(img, dtype=xp.float32)
    out = xp.stack([nd.correlate(img[..., c], k, mode="reflect") for c in range(img.shape[2])], axis=-1)
    return xp.clip(out, 0.0, 1.0)


def unsharp_mask_xp(img: Any, params: Any = None, xp: ModuleType = np) -> Any:
    """sharpen.unsharp_mask with xp (Gaussian with BORDER_REFLECT, soft threshold)."""
    from .sharpen import SharpenParams

    p = params or SharpenParams()
    if p.amount == 0:
        return img
    img = xp.asarray(img, dtype=xp.float32)
    detail = img - gpu.gaussian_blur(img, p.radius, xp)
    if p.threshold > 0:
        gate = xp.clip((xp.abs(detail) - p.threshold) / p.threshold, 0.0, 1.0)
        detail = detail * gate
    return xp.clip(img + xp.float32(p.amount) * detail, 0.0, 1.0)
