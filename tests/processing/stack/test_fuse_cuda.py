"""The fused CUDA kernels of the fusion and the master (processing/stack/fuse_cuda.py),
checked without a GPU: their per-pixel bodies compiled as C for the host and
compared with the array paths they replace, and their CUDA source compiled
for sm_90 by nvcc where one is installed. On a GPU, test_gpu.py compares the
kernels themselves."""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from processing.io.metrics import psnr
from processing.stack import fuse_cuda
from processing.stack.fuse_gpu import fused_and_xp_strips, fused_check_case

CC = shutil.which("cc") or shutil.which("gcc")
NVCC = shutil.which("nvcc")


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory) -> ctypes.CDLL:
    if CC is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("fuse_cuda")
    (d / "k.c").write_text(fuse_cuda.C_SOURCE)
    subprocess.run([CC, "-O2", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.c"), "-lm"], check=True)
    return ctypes.CDLL(str(d / "k.so"))


def _ctypes_args(values: list) -> tuple[list, list]:
    types, args = [], []
    for v in values:
        if v is None or isinstance(v, np.ndarray):
            types.append(ctypes.c_void_p)
            args.append(None if v is None else v.ctypes.data)
        elif isinstance(v, np.int32):
            types.append(ctypes.c_int)
            args.append(int(v))
        elif isinstance(v, np.float32):
            types.append(ctypes.c_float)
            args.append(float(v))
        elif isinstance(v, np.float64):
            types.append(ctypes.c_double)
            args.append(float(v))
        else:
            raise TypeError(type(v))
    return types, args


def _host_fused(lib: ctypes.CDLL):
    """The fusion kernel's C body run on the host, in FusedFrames' place."""

    def call(args: fuse_cuda.FrameArgs) -> None:
        types, vals = _ctypes_args(args.values)
        fn = lib.fuse_frame_host
        fn.argtypes, fn.restype = types, None
        fn(*vals)

    return call


VARIANTS = {
    "everything": {},
    "no flow": {"flow": None},
    "one kernel size": {"ks": 0.6},
    "no robustness map": {"rob": None},
    "no colour match": {"gain": None, "offset": None},
    "pure translation, scale 3": {"transform": np.array([[1.0, 0.0, 3.25], [0.0, 1.0, -2.5], [0.0, 0.0, 1.0]])},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernel_body_equals_array_path(host_kernel, variant) -> None:
    case = fused_check_case(np)
    change = VARIANTS[variant]
    fr = case["fr"]
    if "flow" in change:
        case["flow"] = None
        fr = dataclasses.replace(fr, flow=None)
    if "ks" in change:
        case["ks"] = change["ks"]
    if "rob" in change:
        case["rob"] = None
    if "gain" in change:
        fr = dataclasses.replace(fr, gain=None, offset=None)
    if "transform" in change:
        fr = dataclasses.replace(fr, transform=change["transform"])
        case.update(scale=3.0, ow=fr.image.shape[1] * 3, r=60)
        case["ks"] = np.full((60, case["ow"]), 0.7, np.float32)
        case["base"] = np.random.default_rng(1).random((60, case["ow"], 3)).astype(np.float32)
        xs = (np.arange(case["ow"], dtype=np.float32) + 0.5) / 3.0 - 0.5
        ys = (np.arange(case["y0"], case["y0"] + 60, dtype=np.float32) + 0.5) / 3.0 - 0.5
        case["rx"] = np.ascontiguousarray(np.broadcast_to(xs[None, :], (60, case["ow"])))
        case["ry"] = np.ascontiguousarray(np.broadcast_to(ys[:, None], (60, case["ow"])))
    case["fr"] = fr
    got, want = fused_and_xp_strips(_host_fused(host_kernel), case, np)
    assert got.shape == want.shape
    # float32 in registers against float32 array passes (map_coordinates
    # interpolates in float64): the 1/1000 is 60 dB
    assert psnr(got, want) > 90
    assert np.abs(got - want).max() < 2e-4


def test_kernel_only_takes_what_it_covers() -> None:
    case = fused_check_case(np)
    fr, img = case["fr"], case["img"]
    assert fuse_cuda.supports(fr, img)
    assert not fuse_cuda.supports(dataclasses.replace(fr, tca=(1.001, 0.999)), img)
    assert not fuse_cuda.supports(fr, img.astype(np.float32))


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_cuda_source_compiles_for_hopper(tmp_path) -> None:
    src = tmp_path / "fuse_frame.cu"
    src.write_text(fuse_cuda.CUDA_SOURCE)
    ptx = tmp_path / "fuse_frame.ptx"
    proc = subprocess.run(
        [NVCC, "--ptx", "-arch=sm_90", "--std=c++14", "-o", str(ptx), str(src)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    text = Path(ptx).read_text()
    assert ".entry fuse_frame" in text and ".entry master_strip" in text  # extern "C": the names CuPy looks up


def test_kernel_that_cannot_be_used_falls_back_once(monkeypatch, caplog) -> None:
    """A kernel that fails to compile, launch or agree is not used: one
    warning naming the reason, then the array path (get() returns None)."""

    def broken(self) -> None:
        raise RuntimeError("nvrtc: error: identifier undefined")

    monkeypatch.setattr(fuse_cuda.FusedFrames, "__init__", broken)
    monkeypatch.setattr(fuse_cuda.FusedFrames, "_instance", None)
    monkeypatch.setattr(fuse_cuda.FusedFrames, "_failed", None)
    with caplog.at_level("WARNING", logger="processing.stack.fuse_cuda"):
        assert fuse_cuda.FusedFrames.get() is None
        assert fuse_cuda.FusedFrames.get() is None
    warnings = [r for r in caplog.records if "not used" in r.getMessage()]
    assert len(warnings) == 1 and "identifier undefined" in warnings[0].getMessage()


class _HostMaster:
    """The master kernel's C body run on the host, in FusedFrames.master's place."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def master(self, values: list) -> None:
        types, vals = _ctypes_args(values)
        fn = self.lib.master_strip_host
        fn.argtypes, fn.restype = types, None
        fn(*vals)


def test_master_kernel_body_equals_array_path(host_kernel) -> None:
    """Medians of the valid samples, each frame's stabilised grey and the
    validity, for frames with and without flow, partly outside the frame."""
    from processing.stack.fuse_gpu import _check_master_against_xp

    assert _check_master_against_xp(_HostMaster(host_kernel), np) > 90


def test_master_kernel_takes_up_to_its_frame_limit() -> None:
    case = fused_check_case(np)
    fr, img = case["fr"], case["img"]
    assert fuse_cuda.master_supports([fr] * 3, [img] * 3)
    assert not fuse_cuda.master_supports([fr] * 65, [img] * 65)
    assert not fuse_cuda.master_supports([fr], [img.astype(np.float32)])


def _nvrtc() -> ctypes.CDLL | None:
    """NVRTC (what CuPy compiles RawModule sources with), where installed: the
    pip package nvidia-cuda-nvrtc-cu12, or the system's libnvrtc."""
    import ctypes.util
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except ModuleNotFoundError:  # no "nvidia" namespace at all
        spec = None
    paths = []
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            paths += sorted(Path(loc, "lib").glob("libnvrtc.so*"))
    found = ctypes.util.find_library("nvrtc")
    for p in [*(str(x) for x in paths if "builtins" not in x.name and ".alt." not in x.name), found]:
        if p:
            try:
                return ctypes.CDLL(p)
            except OSError:
                continue
    return None


def test_cuda_source_compiles_with_nvrtc() -> None:
    """The compiler CuPy itself uses, with CuPy's kind of options."""
    lib = _nvrtc()
    if lib is None:
        pytest.skip("NVRTC is not installed")
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), fuse_cuda.CUDA_SOURCE.encode(), b"fuse.cu", 0, None, None) == 0
    opts = [b"--std=c++14", b"--gpu-architecture=compute_90"]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    assert rc == 0, log.value.decode()
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    assert b".entry fuse_frame" in ptx.value and b".entry master_strip" in ptx.value
