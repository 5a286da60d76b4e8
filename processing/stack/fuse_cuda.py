"""One CUDA kernel for a frame's whole kernel-regression term (GPU path).

`fuse_gpu.fuse_kernel_xp` builds each frame's contribution to an output
strip from about fifty array operations (the frame's coordinates through
flow and homography, the kernel lookup, a bilinear read per channel, the
coverage, the robustness weight, the colour match, the accumulation), each a
pass over strip-sized arrays in device memory. `fuse_frame` does all of it
per output pixel in registers and touches memory only for its reads and the
accumulators: the same arithmetic, in the same order, as the xp operations.

The per-pixel body is plain C shared by two wrappers: the CUDA kernel, and a
host loop that the tests compile with the system C compiler and compare with
the NumPy path (so the arithmetic and indexing are checked on machines
without a GPU); a test also compiles the CUDA source for sm_90 with nvcc
where one is installed. On a GPU, `FusedFrames.check` compares the kernel
with the xp path once per process on a small synthetic strip, and the xp path
is used (with a warning naming the reason) if the kernel fails to compile,
to launch or to agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The kernels' checks against the array path, by name ("fusion", "master"):
#: callables (kernels, xp) -> PSNR in dB. fuse_gpu owns that path and fills
#: this when it is imported, so this module never imports fuse_gpu (which
#: imports it).
SELF_CHECKS: dict[str, Callable[[Any, Any], float]] = {}

# The parameters, in order, of both wrappers (a macro, so that they cannot
# drift apart).
PARAMS = """\
const unsigned short* img, int fw, int fh,
const float* flow, int flw, int flh, float ffx, float ffy,
float t00, float t01, float t02, float t10, float t11, float t12, float t20, float t21, float t22,
const float* sig, float lo, float lvl_scale, int levels,
const float* a_lut, const float* s_lut,
const unsigned char* rob, int rw, int rh,
float g0, float g1, float g2, float o0, float o1, float o2,
double scale, int ow, int y0, int rows,
float* num, float* den"""

ARGS = """img, fw, fh, flow, flw, flh, ffx, ffy, t00, t01, t02, t10, t11, t12, t20, t21, t22,
sig, lo, lvl_scale, levels, a_lut, s_lut, rob, rw, rh, g0, g1, g2, o0, o1, o2, scale, ow, y0, rows, num, den"""

MASTER_PARAMS = """\
const unsigned long long* img_ptrs, const unsigned long long* flow_ptrs, const int* dims,
const float* T, const float* FF, const float* G, int n, int w, int y0, int rows,
float* med_out, float* gst, unsigned char* valid_out"""

MASTER_ARGS = "img_ptrs, flow_ptrs, dims, T, FF, G, n, w, y0, rows, med_out, gst, valid_out"

LUT_F = 1024  # fuse._LUT_F: fraction steps of the kernel lookup tables
MAX_FRAMES = 64  # the master kernel's per-pixel sample arrays (more frames: the array path)

BODY = r"""
#define LUT_F 1024

/* Bilinear read at (x, y) of channel c of an H x W x C array, edges
   replicated: map_coordinates(order=1, mode="nearest"), cv2 BORDER_REPLICATE. */
#define BILINEAR(T, a, w, h, C, c, x, y, out) do {                           \
    float x0_ = floorf(x), y0_ = floorf(y);                                 \
    float tx_ = (x) - x0_, ty_ = (y) - y0_;                                 \
    int ix0_ = (int)x0_, iy0_ = (int)y0_;                                   \
    int ix1_ = ix0_ + 1, iy1_ = iy0_ + 1;                                   \
    ix0_ = ix0_ < 0 ? 0 : (ix0_ > (w) - 1 ? (w) - 1 : ix0_);                \
    ix1_ = ix1_ < 0 ? 0 : (ix1_ > (w) - 1 ? (w) - 1 : ix1_);                \
    iy0_ = iy0_ < 0 ? 0 : (iy0_ > (h) - 1 ? (h) - 1 : iy0_);                \
    iy1_ = iy1_ < 0 ? 0 : (iy1_ > (h) - 1 ? (h) - 1 : iy1_);                \
    float v00_ = (float)(a)[((long long)iy0_ * (w) + ix0_) * (C) + (c)];    \
    float v01_ = (float)(a)[((long long)iy0_ * (w) + ix1_) * (C) + (c)];    \
    float v10_ = (float)(a)[((long long)iy1_ * (w) + ix0_) * (C) + (c)];    \
    float v11_ = (float)(a)[((long long)iy1_ * (w) + ix1_) * (C) + (c)];    \
    float top_ = v00_ + tx_ * (v01_ - v00_);                                \
    float bot_ = v10_ + tx_ * (v11_ - v10_);                                \
    (out) = top_ + ty_ * (bot_ - top_);                                     \
} while (0)

DEVICE void fuse_pixel(int x, int yy, FUSE_PARAMS_LIST) {
    int y = y0 + yy;
    long long i = (long long)yy * ow + x;
    /* output pixel -> reference grid (fuse_gpu._frame_maps: float64, then float32) */
    float px = (float)(((double)x + 0.5) / scale - 0.5);
    float py = (float)(((double)y + 0.5) / scale - 0.5);
    if (flow) {
        float qx = (px + 0.5f) * ffx - 0.5f;
        float qy = (py + 0.5f) * ffy - 0.5f;
        float fx, fy;
        BILINEAR(float, flow, flw, flh, 2, 0, qx, qy, fx);
        BILINEAR(float, flow, flw, flh, 2, 1, qx, qy, fy);
        px = px + fx;
        py = py + fy;
    }
    float d = t20 * px + t21 * py + t22;
    float mx = (t00 * px + t01 * py + t02) / d;
    float my = (t10 * px + t11 * py + t12) / d;
    /* Gaussian 2x2 gather as one bilinear read (gpu.kernel_maps) */
    int base = 0;
    if (sig && levels > 1) {
        int lvl = (int)((sig[i] - lo) * lvl_scale + 0.5f);
        lvl = lvl < 0 ? 0 : (lvl > levels - 1 ? levels - 1 : lvl);
        base = lvl * (LUT_F + 1);
    }
    float x0 = floorf(mx), yf0 = floorf(my);
    int ix = (int)((mx - x0) * (float)LUT_F + 0.5f) + base;
    int iy = (int)((my - yf0) * (float)LUT_F + 0.5f) + base;
    float kx = x0 + a_lut[ix];
    float ky = yf0 + a_lut[iy];
    float wk = s_lut[ix] * s_lut[iy];
    /* coverage of the frame (gpu.coverage) */
    float cx = fminf(kx + 1.0f, (float)fw - kx);
    float cy = fminf(ky + 1.0f, (float)fh - ky);
    cx = cx < 0.0f ? 0.0f : (cx > 1.0f ? 1.0f : cx);
    cy = cy < 0.0f ? 0.0f : (cy > 1.0f ? 1.0f : cy);
    wk = wk * (cx * cy);
    /* robustness weight, read on the reference grid at the output pixel */
    if (rob) {
        float rx = ((float)x + 0.5f) / (float)scale - 0.5f;
        float ry = ((float)y + 0.5f) / (float)scale - 0.5f;
        float r;
        BILINEAR(unsigned char, rob, rw, rh, 1, 0, rx, ry, r);
        wk = wk * (r * (1.0f / 255.0f));
    }
    float v0, v1, v2;
    BILINEAR(unsigned short, img, fw, fh, 3, 0, kx, ky, v0);
    BILINEAR(unsigned short, img, fw, fh, 3, 1, kx, ky, v1);
    BILINEAR(unsigned short, img, fw, fh, 3, 2, kx, ky, v2);
    num[i * 3 + 0] += (v0 * g0 + o0) * wk;
    num[i * 3 + 1] += (v1 * g1 + o1) * wk;
    num[i * 3 + 2] += (v2 * g2 + o2) * wk;
    den[i] += wk;
}
"""

MASTER_BODY = r"""
#define MAXN 64

/* One reference-grid pixel of a master strip (fuse_gpu.master_reads_xp):
   every frame's sample (flow, homography, bilinear read, colour) and
   validity, the per-channel median of the valid samples, and each frame's
   variance-stabilised grey with the median standing in where it is invalid. */
DEVICE void master_pixel(int x, int yy, MASTER_PARAMS_LIST) {
    int y = y0 + yy;
    long long i = (long long)yy * w + x;
    long long plane = (long long)rows * w;
    float s[3][MAXN];
    unsigned char ok[MAXN];
    for (int k = 0; k < n; k++) {
        const unsigned short* img = (const unsigned short*)img_ptrs[k];
        const float* flow = (const float*)flow_ptrs[k];
        int fw = dims[k * 4 + 0], fh = dims[k * 4 + 1], flw = dims[k * 4 + 2], flh = dims[k * 4 + 3];
        const float* t = T + k * 9;
        float px = (float)x, py = (float)y;
        if (flow) {
            float qx = (px + 0.5f) * FF[k * 2 + 0] - 0.5f;
            float qy = (py + 0.5f) * FF[k * 2 + 1] - 0.5f;
            float fx, fy;
            BILINEAR(float, flow, flw, flh, 2, 0, qx, qy, fx);
            BILINEAR(float, flow, flw, flh, 2, 1, qx, qy, fy);
            px = px + fx;
            py = py + fy;
        }
        float d = t[6] * px + t[7] * py + t[8];
        float mx = (t[0] * px + t[1] * py + t[2]) / d;
        float my = (t[3] * px + t[4] * py + t[5]) / d;
        ok[k] = (mx >= 0.0f && my >= 0.0f && mx <= (float)(fw - 1) && my <= (float)(fh - 1)) ? 1 : 0;
        for (int c = 0; c < 3; c++) {
            float v;
            BILINEAR(unsigned short, img, fw, fh, 3, c, mx, my, v);
            s[c][k] = v * G[k * 6 + c] + G[k * 6 + 3 + c];
        }
        valid_out[k * plane + i] = ok[k];
    }
    float med[3];
    for (int c = 0; c < 3; c++) {
        float tmp[MAXN];
        int m = 0;
        for (int k = 0; k < n; k++) {
            if (!ok[k]) continue;
            float v = s[c][k];
            int j = m++;
            while (j > 0 && tmp[j - 1] > v) { tmp[j] = tmp[j - 1]; j--; }
            tmp[j] = v;
        }
        med[c] = m > 0 ? 0.5f * (tmp[(m - 1) / 2] + tmp[m / 2]) : 0.0f;
        med_out[i * 3 + c] = med[c];
    }
    for (int k = 0; k < n; k++) {
        float a0 = ok[k] ? s[0][k] : med[0];
        float a1 = ok[k] ? s[1][k] : med[1];
        float a2 = ok[k] ? s[2][k] : med[2];
        float g = (a0 + a1 + a2) / 3.0f;
        gst[k * plane + i] = sqrtf(g > 0.0f ? g : 0.0f);
    }
}
"""

_DEFINES = (
    f"#define FUSE_PARAMS_LIST {PARAMS.replace(chr(10), ' ')}\n"
    f"#define MASTER_PARAMS_LIST {MASTER_PARAMS.replace(chr(10), ' ')}\n"
)

CUDA_SOURCE = (
    "#define DEVICE __device__ __forceinline__\n"
    + _DEFINES
    + BODY
    + MASTER_BODY
    + f"""
extern "C" __global__ void fuse_frame(FUSE_PARAMS_LIST) {{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)ow * rows) return;
    fuse_pixel((int)(i % ow), (int)(i / ow), {ARGS.replace(chr(10), " ")});
}}

extern "C" __global__ void master_strip(MASTER_PARAMS_LIST) {{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)w * rows) return;
    master_pixel((int)(i % w), (int)(i / w), {MASTER_ARGS});
}}
"""
)

# The host loop the tests compile (cc -O2 -shared) to check the body on a CPU.
C_SOURCE = (
    "#include <math.h>\n"
    "#define DEVICE static\n"
    + _DEFINES
    + BODY
    + MASTER_BODY
    + f"""
void fuse_frame_host(FUSE_PARAMS_LIST) {{
    for (long long i = 0; i < (long long)ow * rows; i++)
        fuse_pixel((int)(i % ow), (int)(i / ow), {ARGS.replace(chr(10), " ")});
}}

void master_strip_host(MASTER_PARAMS_LIST) {{
    for (long long i = 0; i < (long long)w * rows; i++)
        master_pixel((int)(i % w), (int)(i / w), {MASTER_ARGS});
}}
"""
)


@dataclass
class FrameArgs:
    """One frame's arguments, in PARAMS order (arrays of any array module; None
    stands for a null pointer)."""

    values: list[Any]


def _transform32(fr: Any) -> np.ndarray:
    """The frame's homography with t22 = 1, in float32 (as fuse_gpu._frame_maps)."""
    t = fr.transform.astype(np.float64)
    return (t / t[2, 2]).astype(np.float32)


def _colour_terms(fr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multiplier (colour gain with the 16-bit scale folded in)
    and offset, as fuse_gpu._colour applies them."""
    gain = fr.gain.astype(np.float64) * (1 / 65535) if fr.gain is not None else np.full(3, 1 / 65535)
    off = fr.offset if fr.offset is not None else np.zeros(3)
    return gain.astype(np.float32), off.astype(np.float32)


def frame_args(
    fr: Any,
    img: Any,
    flow: Any,
    scale: float,
    ow: int,
    y0: int,
    rows: int,
    sigma: Any,
    s_range: tuple[float, float],
    luts: tuple[Any, Any],
    rob: Any,
    num: Any,
    den: Any,
) -> FrameArgs:
    """The kernel's arguments for frame FR and one output strip: the same
    quantities that fuse_gpu._frame_maps, gpu.kernel_maps, gpu.coverage and
    fuse_gpu._colour compute. SIGMA: a float (one kernel size) or the strip's
    map; LUTS: the device copies of fuse._kernel_luts(s_range)."""
    from .fuse import _LUT_S

    if LUT_F != 1024:
        raise AssertionError("LUT_F must match the kernel source")
    fh, fw = int(img.shape[0]), int(img.shape[1])
    t = _transform32(fr)
    if flow is not None and fr.flow is not None:
        if flow.dtype != np.float32:
            flow = flow.astype(np.float32)
        flh, flw = int(flow.shape[0]), int(flow.shape[1])
        ffx, ffy = np.float32(fr.flow.f[0]), np.float32(fr.flow.f[1])
    else:
        flow, flh, flw, ffx, ffy = None, 0, 0, np.float32(0), np.float32(0)
    lo, hi = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else s_range
    levels = _LUT_S if (not isinstance(sigma, (int, float)) and hi > lo) else 1
    lvl_scale = np.float32((_LUT_S - 1) / (hi - lo)) if levels > 1 else np.float32(0)
    sig = None if isinstance(sigma, (int, float)) else sigma
    g, o = _colour_terms(fr)
    rh, rw = (int(rob.shape[0]), int(rob.shape[1])) if rob is not None else (0, 0)
    i32, f32 = np.int32, np.float32
    values = [
        img, i32(fw), i32(fh),
        flow, i32(flw), i32(flh), ffx, ffy,
        *(f32(t[r, c]) for r in range(3) for c in range(3)),
        sig, f32(lo), lvl_scale, i32(levels),
        luts[0], luts[1],
        rob, i32(rw), i32(rh),
        f32(g[0]), f32(g[1]), f32(g[2]), f32(o[0]), f32(o[1]), f32(o[2]),
        np.float64(scale), i32(ow), i32(y0), i32(rows),
        num, den,
    ]  # fmt: skip
    return FrameArgs(values)


def _ptr(a: Any) -> int:
    """Device (CuPy) or host (NumPy) address of a contiguous array."""
    data = getattr(a, "data", None)
    return int(data.ptr) if hasattr(data, "ptr") else int(a.ctypes.data)


@dataclass
class MasterArgs:
    """The master kernel's per-stack tables (built once) and the arrays they
    point into (kept alive here while the kernel may read them)."""

    values: list[Any]
    keep: list[Any]


def master_tables(frames: list[Any], images: list[Any], flows: list[Any], xp: Any) -> MasterArgs:
    """Per-frame pointers, sizes, transforms, flow scales and colour (as
    fuse_gpu._frame_maps and _colour use them); the strip arguments are
    appended per strip by `master_strip_args`."""
    keep, img_ptrs, flow_ptrs, dims, tt, ff, gg = [], [], [], [], [], [], []
    for fr, img, flow in zip(frames, images, flows, strict=True):
        img = xp.ascontiguousarray(img)
        keep.append(img)
        img_ptrs.append(_ptr(img))
        if flow is not None and fr.flow is not None:
            flow = xp.ascontiguousarray(flow, dtype=xp.float32)
            keep.append(flow)
            flow_ptrs.append(_ptr(flow))
            dims += [img.shape[1], img.shape[0], flow.shape[1], flow.shape[0]]
            ff += [np.float32(fr.flow.f[0]), np.float32(fr.flow.f[1])]
        else:
            flow_ptrs.append(0)
            dims += [img.shape[1], img.shape[0], 0, 0]
            ff += [0.0, 0.0]
        tt += list(_transform32(fr).ravel())
        g, o = _colour_terms(fr)
        gg += list(g) + list(o)
    tables = [
        xp.asarray(np.array(img_ptrs, np.uint64)),
        xp.asarray(np.array(flow_ptrs, np.uint64)),
        xp.asarray(np.array(dims, np.int32)),
        xp.asarray(np.array(tt, np.float32)),
        xp.asarray(np.array(ff, np.float32)),
        xp.asarray(np.array(gg, np.float32)),
        np.int32(len(frames)),
    ]
    return MasterArgs(tables, keep + tables)


def master_strip_args(tables: MasterArgs, w: int, y0: int, rows: int, med: Any, gst: Any, valid: Any) -> list[Any]:
    return [*tables.values, np.int32(w), np.int32(y0), np.int32(rows), med, gst, valid]


def master_supports(frames: list[Any], images: list[Any]) -> bool:
    """The master kernel covers up to MAX_FRAMES uint16 RGB frames."""
    return 0 < len(frames) <= MAX_FRAMES and all(
        im.dtype == np.uint16 and im.ndim == 3 and im.shape[2] == 3 for im in images
    )


def supports(fr: Any, img: Any) -> bool:
    """The kernel covers uint16 RGB frames without lateral-CA correction."""
    return (
        img.dtype == np.uint16
        and img.ndim == 3
        and img.shape[2] == 3
        and (fr.tca is None or tuple(fr.tca) == (1.0, 1.0))
    )


class FusedFrames:
    """The compiled kernel (CuPy), checked against the xp path once."""

    _instance: FusedFrames | None = None
    _failed: str | None = None

    def __init__(self) -> None:
        import cupy  # type: ignore[import-not-found]

        self.cupy = cupy
        module = cupy.RawModule(code=CUDA_SOURCE, options=("--std=c++14",))
        self.kernel = module.get_function("fuse_frame")
        self.master_kernel = module.get_function("master_strip")

    def master(self, values: list[Any]) -> None:
        """One master strip: MASTER_PARAMS in order (see master_strip_args)."""
        w, rows = int(values[7]), int(values[9])
        for out in values[10:]:
            if not out.flags.c_contiguous:
                raise ValueError("master_strip writes in place: its outputs must be contiguous")
        n = w * rows
        block = 128
        self.master_kernel(((n + block - 1) // block,), (block,), tuple(values))

    def __call__(self, args: FrameArgs) -> None:
        cp = self.cupy
        num, den = args.values[-2], args.values[-1]
        if not (num.flags.c_contiguous and den.flags.c_contiguous):
            raise ValueError("fuse_frame accumulates in place: num and den must be contiguous")
        # Inputs as contiguous device arrays (no copy when they are); None is a null pointer.
        vals = [
            np.uint64(0) if v is None else (cp.ascontiguousarray(v) if isinstance(v, cp.ndarray) else v)
            for v in args.values
        ]
        ow, rows = int(args.values[-5]), int(args.values[-3])
        n = ow * rows
        block = 256
        self.kernel(((n + block - 1) // block,), (block,), tuple(vals))

    @classmethod
    def in_use(cls) -> bool:
        """Whether the kernels compiled and passed their check in this process."""
        return cls._instance is not None

    @classmethod
    def get(cls) -> FusedFrames | None:
        """The checked kernel, or None (after one warning) where it cannot be used."""
        if cls._failed is not None:
            return None
        if cls._instance is None:
            try:
                inst = cls()
                inst.check()
            except Exception as e:  # compile, launch or disagreement: keep the xp path
                cls._failed = f"{type(e).__name__}: {e}"
                log.warning("fused CUDA fusion kernel not used (%s); the CuPy array path runs instead", cls._failed)
                return None
            cls._instance = inst
        return cls._instance

    def check(self) -> None:
        """The kernel against the xp path on a small synthetic strip (with flow,
        colour, robustness and a kernel-size map): 60 dB or it is not used."""
        if set(SELF_CHECKS) != {"fusion", "master"}:
            raise RuntimeError("the kernels' checks are not registered (import processing.stack.fuse_gpu)")
        db = SELF_CHECKS["fusion"](self, self.cupy)
        if not db >= 60:
            raise RuntimeError(f"fusion kernel disagrees with the CuPy path ({db:.1f} dB < 60 dB)")
        db = SELF_CHECKS["master"](self, self.cupy)
        if not db >= 60:
            raise RuntimeError(f"master kernel disagrees with the CuPy path ({db:.1f} dB < 60 dB)")
