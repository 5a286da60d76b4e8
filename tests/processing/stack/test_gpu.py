"""The xp-generic (GPU) path: primitives against their CPU twins, the device
fusion against the CPU fusion (NumPy standing in for CuPy), and CuPy against
NumPy where a CUDA device exists."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from processing.device import backend
from processing.io.imageio import to_uint16
from processing.io.metrics import psnr
from processing.stack import gpu
from processing.stack.develop import srgb_to_linear
from processing.stack.flow import FlowField
from processing.stack.fuse import FrameInput, FuseParams, _unsharp, deblur, fuse, make_master, masked_median
from processing.stack.fuse_gpu import DeviceFrames, deblur_xp, fuse_kernel_xp, fuse_xp, make_master_xp
from processing.stack.sharpness import sharpness_score
from processing.synth.synth import make_burst

from .._sr_helpers import texture

needs_gpu = pytest.mark.skipif(not backend.gpu_available(), reason="no CUDA device")


def _img(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    return texture(max(h, w), seed)[:h, :w].copy()


def _maps(h: int, w: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mx = (xx * 1.03 - 1.7 + rng.normal(0, 0.3, (h, w))).astype(np.float32)
    my = (yy * 0.98 + 0.6 + rng.normal(0, 0.3, (h, w))).astype(np.float32)
    return mx, my


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(np.asarray(a, np.float32), np.asarray(b, np.float32), 0)


# ------------------------------------------------- (a) primitives vs twins


@pytest.mark.parametrize(("order", "flag", "min_db"), [(1, cv2.INTER_LINEAR, 55.0), (3, cv2.INTER_CUBIC, 50.0)])
def test_remap_matches_cv2(order: int, flag: int, min_db: float) -> None:
    img = _img()
    mx, my = _maps(*img.shape[:2])
    ref = cv2.remap(img, mx, my, flag, borderMode=cv2.BORDER_REPLICATE)
    got = gpu.remap(img, mx, my, order, np)
    assert got.dtype == np.float32 and got.shape == ref.shape
    # cv2 quantises fractions to 1/32 px; that is the whole difference.
    assert _psnr(got, ref) > min_db
    # Integer positions read the pixels themselves (both orders).
    yy, xx = np.mgrid[0:64, 0:80].astype(np.float32)
    assert np.allclose(gpu.remap(img, xx, yy, order, np), img, atol=1e-5)
    assert np.allclose(gpu.remap(img, xx, yy, 0, np), img)


def test_coverage_closed_form_matches_cv2() -> None:
    mx, my = _maps(40, 50)
    mx = mx * 1.3 - 4
    ones = np.full((40, 50), 255, np.uint8)
    ref = cv2.remap(ones, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) / 255.0
    got = gpu.coverage(mx, my, 50, 40, np)
    assert np.abs(got - ref).max() < 0.05
    assert got.min() == 0.0 and got.max() == 1.0


def test_filters_match_cv2() -> None:
    img = _img()
    ref = cv2.GaussianBlur(img, (0, 0), 1.3, borderType=cv2.BORDER_REFLECT)
    assert _psnr(gpu.gaussian_blur(img, 1.3, np), ref) > 80
    assert _psnr(gpu.unsharp(img, 1.0, 0.3, np), _unsharp(img, 1.0, 0.3)) > 80
    g = img[..., 1]
    assert _psnr(gpu.box(g, 5, np), cv2.blur(g, (5, 5))) > 80
    assert _psnr(gpu.box(img, 3, np), cv2.blur(img, (3, 3))) > 80


def test_masked_median_and_clipped_mean() -> None:
    rng = np.random.default_rng(3)
    stack = rng.random((7, 12, 10, 3), dtype=np.float32)
    valid = rng.random((7, 12, 10)) > 0.3
    valid[:, 0, 0] = False  # nobody covers this pixel
    got = gpu.masked_median(stack, valid, np)
    assert np.array_equal(got, masked_median(stack, valid))
    assert np.all(got[0, 0] == 0)
    # Clipped mean: an outlier is ignored, the rest averaged.
    s = np.full((6, 2, 2), 0.5, np.float32) + np.arange(6, dtype=np.float32)[:, None, None] * 0.01
    s[5] = 9.0
    v = np.ones((6, 2, 2), bool)
    cm = gpu.clipped_mean(s, v, 3.0, np)
    assert np.allclose(cm, s[:5].mean(axis=0))
    v[:, 1, 1] = False
    assert gpu.clipped_mean(s, v, 3.0, np)[1, 1] == 0


def test_sharpness_matches_cpu() -> None:
    img = _img(96, 96)
    noisy = img + np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)
    for x in (img, noisy, cv2.GaussianBlur(img, (0, 0), 2.0)):
        assert gpu.sharpness(x, None, np) == pytest.approx(sharpness_score(x), rel=1e-3, abs=1e-6)


def test_kernel_maps_match_cpu() -> None:
    from processing.stack.fuse import _kernel_maps

    mx, my = _maps(30, 40)
    sig = np.random.default_rng(2).uniform(0.15, 0.5, mx.shape).astype(np.float32)
    for s in (0.2, sig):
        a = _kernel_maps(mx, my, s, (0.15, 0.5))
        b = gpu.kernel_maps(mx, my, s, (0.15, 0.5), np)
        for x, y in zip(a, b, strict=True):
            assert np.allclose(x, y, atol=1e-5)


# --------------------------------------------- (b) xp fusion vs CPU fusion


def _burst(n: int = 6, seed: int = 3, size: int = 96):
    gt = texture(size, seed)
    b = make_burst(gt, n, 2.0, seed=seed, noise=0.004)
    return b


def _frames(b, extras: bool = False) -> list[FrameInput]:
    out = [FrameInput(to_uint16(srgb_to_linear(f)), t) for f, t in zip(b.frames, b.transforms, strict=True)]
    if extras:
        rng = np.random.default_rng(7)
        for i, fr in enumerate(out[1:]):
            fr.gain = np.array([1.02, 0.98, 1.01]) + 0.01 * i
            fr.offset = np.array([0.001, -0.002, 0.0])
            fr.flow = FlowField(rng.normal(0, 0.3, (12, 12, 2)).astype(np.float32), (0.25, 0.25))
    return out


@pytest.mark.parametrize("extras", [False, True])
def test_xp_fusion_equals_cpu_fusion(extras: bool) -> None:
    b = _burst()
    size = (b.frames[0].shape[1], b.frames[0].shape[0])
    out_size = (2 * size[0], 2 * size[1])
    cpu_frames, xp_frames = _frames(b, extras), _frames(b, extras)
    m_cpu = make_master(cpu_frames, size)
    m_xp = make_master_xp(xp_frames, size, xp=np)
    assert _psnr(m_xp, m_cpu) >= 60
    for a, c in zip(cpu_frames, xp_frames, strict=True):
        assert c.sigma == pytest.approx(a.sigma, rel=0.02)
        # cv2 rounds the bilinear reads to uint16 first: a few levels of 255.
        assert np.abs(a.robust.astype(int) - c.robust).max() <= 4
    out_cpu = fuse(cpu_frames, 2.0, out_size, m_cpu)
    out_xp = fuse_xp(xp_frames, 2.0, out_size, m_xp, xp=np)
    assert out_xp.shape == out_cpu.shape and out_xp.dtype == np.float32
    # The tolerance: within 1/1000 of full scale (PSNR >= 60 dB).
    assert _psnr(out_xp, out_cpu) >= 60
    assert _psnr(deblur_xp(out_xp, 2.0, None, np), deblur(out_cpu, 2.0)) >= 60


def test_fuse_kernel_xp_fixed_kernel_and_lateral_ca() -> None:
    b = _burst(5, seed=4, size=80)
    fr = _frames(b, extras=True)
    for f in fr:
        f.tca = (1.001, 0.999)
    m = make_master(fr, (40, 40))
    p = FuseParams(kernel_sigma=0.3, kernel_sigma_flat=0.3)
    from processing.stack.fuse import fuse_kernel

    ref = fuse_kernel(fr, 2.0, (80, 80), m, p)
    got = fuse_kernel_xp(fr, 2.0, (80, 80), m, p, np, dev=DeviceFrames(fr, np))
    assert _psnr(got, ref) >= 60


def test_stack_pipeline_device_branch(tmp_path, monkeypatch) -> None:
    """process_stack's GPU branch (NumPy standing in for CuPy) gives the CPU
    result within the tolerance, with the same recipe."""
    from processing.stack import pipeline as stackpipe
    from processing.synth.synth import write_burst

    b = _burst(5, seed=6, size=96)
    write_burst(b, tmp_path)
    paths = stackpipe.list_frames(tmp_path)
    monkeypatch.setenv("TERAPAN_DEVICE", "cpu")  # the CPU branch, also on a GPU machine
    cpu = stackpipe.process_stack(paths, 2.0, upscale_model=False)
    monkeypatch.setattr(stackpipe, "_pick_device", lambda: ("gpu", np))
    dev = stackpipe.process_stack(paths, 2.0, upscale_model=False)
    assert dev.metrics["device"] == "gpu" and cpu.metrics["device"] == "cpu"
    assert dev.recipe == cpu.recipe
    assert _psnr(dev.image, cpu.image) >= 60


def test_stack_pipeline_device_chain_with_model(tmp_path, monkeypatch) -> None:
    """x4 through fusion at x2 and EDSR: the device chain (fuse, encode,
    deblur, tiled model on device windows, sharpen, one copy back) with NumPy
    standing in gives the CPU chain's image."""
    from processing.stack import pipeline as stackpipe
    from processing.stack.sharpen import SharpenParams
    from processing.synth.synth import write_burst

    write_burst(_burst(4, seed=6, size=96), tmp_path)
    paths = stackpipe.list_frames(tmp_path)
    params = stackpipe.StackParams().replace(sharpen=SharpenParams(radius=1.2, amount=0.5, threshold=0.01))
    monkeypatch.setenv("TERAPAN_DEVICE", "cpu")
    cpu = stackpipe.process_stack(paths, 4.0, params)
    monkeypatch.setattr(stackpipe, "_pick_device", lambda: ("gpu", np))
    dev = stackpipe.process_stack(paths, 4.0, params)
    assert dev.metrics["device"] == "gpu" and dev.metrics["upscale_model"] and "to_host" in dev.metrics["seconds"]
    assert dev.image.shape == cpu.image.shape and dev.recipe == cpu.recipe
    assert _psnr(dev.image, cpu.image) >= 60


def test_encode_and_unsharp_xp_match_cpu() -> None:
    from processing.stack.develop import encode
    from processing.stack.fuse_gpu import unsharp_mask_xp
    from processing.stack.sharpen import SharpenParams, unsharp_mask

    img = _img(70, 90, seed=5)
    # the one 16-bit table (develop._lut, any array module) against the sRGB curve
    curve = np.where(img <= 0.0031308, img * 12.92, 1.055 * np.power(img, 1 / 2.4) - 0.055)
    assert np.abs(encode(img, "srgb") - curve).max() < 2e-3
    assert encode(img, "linear") is img
    for p in (SharpenParams(radius=1.5, amount=0.8), SharpenParams(radius=0.8, amount=1.0, threshold=0.02)):
        assert _psnr(unsharp_mask_xp(img, p, np), unsharp_mask(img, p)) > 80
    assert unsharp_mask_xp(img, SharpenParams(), np) is img  # amount 0: untouched


def test_device_upscale_matches_host_upscale() -> None:
    """The device model pass (large padded batches, xp accumulation) against
    the host pass: only window placement differs."""
    from processing.upscale.upscale import UpscaleParams, upscale_array

    img = _img(150, 170, seed=2)
    host = upscale_array(img, 2.0, UpscaleParams(tile=64, batch=2))
    dev = upscale_array(img, 2.0, UpscaleParams(tile=64, batch=3), device=True)
    assert dev.shape == host.shape == (300, 340, 3)
    assert _psnr(dev, host) > 75
    # A non-native factor adds a host resample pass: device rows go and come back.
    odd = upscale_array(img, 2.5, UpscaleParams(tile=64), device=True)
    assert odd.shape == (375, 425, 3) and _psnr(odd, upscale_array(img, 2.5, UpscaleParams(tile=64))) > 75


# ------------------------------------------------ (c) CuPy against NumPy


@needs_gpu
def test_cupy_primitives_equal_numpy() -> None:
    import cupy as cp  # type: ignore[import-not-found]

    img = _img()
    from processing.stack.develop import encode

    # the device encode is develop.encode on a CuPy array: bit-identical
    assert np.array_equal(backend.to_host(encode(cp.asarray(img), "srgb")), encode(img, "srgb"))
    mx, my = _maps(*img.shape[:2])
    for order in (0, 1, 3):
        got = backend.to_host(gpu.remap(cp.asarray(img), cp.asarray(mx), cp.asarray(my), order, cp))
        assert _psnr(got, gpu.remap(img, mx, my, order, np)) > 80
    assert _psnr(backend.to_host(gpu.gaussian_blur(cp.asarray(img), 1.3, cp)), gpu.gaussian_blur(img, 1.3, np)) > 80
    assert _psnr(backend.to_host(gpu.box(cp.asarray(img), 5, cp)), gpu.box(img, 5, np)) > 80
    rng = np.random.default_rng(3)
    stack = rng.random((7, 12, 10, 3), dtype=np.float32)
    valid = rng.random((7, 12, 10)) > 0.3
    got = backend.to_host(gpu.masked_median(cp.asarray(stack), cp.asarray(valid), cp))
    assert np.allclose(got, gpu.masked_median(stack, valid, np))
    assert gpu.sharpness(cp.asarray(img), None, cp) == pytest.approx(gpu.sharpness(img, None, np), rel=1e-4)


@needs_gpu
def test_cupy_fusion_equals_numpy() -> None:
    import cupy as cp  # type: ignore[import-not-found]

    b = _burst()
    size = (b.frames[0].shape[1], b.frames[0].shape[0])
    a, c = _frames(b, True), _frames(b, True)
    m_np = make_master_xp(a, size, xp=np)
    m_cp = make_master_xp(c, size, xp=cp)
    assert _psnr(m_cp, m_np) >= 60
    out_np = fuse_xp(a, 2.0, (2 * size[0], 2 * size[1]), m_np, xp=np)
    out_cp = fuse_xp(c, 2.0, (2 * size[0], 2 * size[1]), m_cp, xp=cp)
    assert isinstance(out_cp, np.ndarray)
    assert _psnr(out_cp, out_np) >= 60


@pytest.mark.skipif(backend.gpu_available(), reason="needs a machine without a CUDA device")
def test_forced_gpu_without_device_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    from processing.io.errors import ProcessingError
    from processing.stack import pipeline as stackpipe
    from processing.synth.synth import write_burst

    write_burst(_burst(3, seed=8, size=64), tmp_path)
    monkeypatch.setenv("TERAPAN_DEVICE", "gpu")
    with pytest.raises(ProcessingError, match="no CUDA device"):
        stackpipe.process_stack(stackpipe.list_frames(tmp_path), 2.0, upscale_model=False)


@needs_gpu
def test_cupy_upscale_equals_host() -> None:
    """EDSR on device windows through DLPack (Keras' JAX, TensorFlow or
    PyTorch backend on the GPU) against the host model pass."""
    import cupy as cp  # type: ignore[import-not-found]

    from processing.upscale.upscale import UpscaleParams, upscale_array

    img = _img(300, 420, seed=3)
    host = upscale_array(img, 2.0, UpscaleParams(tile=192))
    dev = upscale_array(cp.asarray(img), 2.0, UpscaleParams(tile=192), device=True)
    assert isinstance(dev, cp.ndarray) and dev.shape == host.shape
    assert _psnr(backend.to_host(dev), host) >= 60


def test_host_threads_is_a_machine_setting_not_a_recipe(tmp_path, monkeypatch) -> None:
    """TERAPAN_THREADS changes how many threads the CPU stages use, never the
    result or the recipe; a bad value is a clear error."""
    from processing.stack import pipeline as stackpipe
    from processing.synth.synth import write_burst

    monkeypatch.delenv("TERAPAN_THREADS", raising=False)
    assert backend.host_threads(2) == 2
    monkeypatch.setenv("TERAPAN_THREADS", "5")
    assert backend.host_threads(2) == 5
    monkeypatch.setenv("TERAPAN_THREADS", "auto")
    assert backend.host_threads(2) == (os.cpu_count() or 1)
    monkeypatch.setenv("TERAPAN_THREADS", "5")
    for bad in ("0", "many"):
        monkeypatch.setenv("TERAPAN_THREADS", bad)
        with pytest.raises(ValueError, match="TERAPAN_THREADS"):
            backend.host_threads(2)
    write_burst(_burst(4, seed=6, size=96), tmp_path)
    paths = stackpipe.list_frames(tmp_path)
    monkeypatch.setenv("TERAPAN_DEVICE", "cpu")
    monkeypatch.setenv("TERAPAN_THREADS", "1")
    one = stackpipe.process_stack(paths, 2.0, upscale_model=False)
    monkeypatch.setenv("TERAPAN_THREADS", "3")
    three = stackpipe.process_stack(paths, 2.0, upscale_model=False)
    assert one.recipe == three.recipe and np.array_equal(one.image, three.image)


@needs_gpu
def test_cupy_large_copy_to_host_is_exact(monkeypatch) -> None:
    """The chunked, pinned, double-buffered copy (arrays over 4 chunks) gives
    exactly the plain copy, also for a size that is not a chunk multiple."""
    import cupy as cp  # type: ignore[import-not-found]

    monkeypatch.setattr(backend, "D2H_CHUNK", 1 << 20)
    a = cp.random.default_rng(1).random((1031, 977, 3), dtype=cp.float32)
    assert a.nbytes > 4 * backend.D2H_CHUNK
    got = backend.to_host(a[:, 5:])  # a non-contiguous view too
    assert np.array_equal(got, a[:, 5:].get())


@pytest.mark.parametrize("where", ["build", "call"])
def test_device_model_falls_back_to_host_windows(monkeypatch, caplog, where) -> None:
    """Should the DLPack hand-over fail (an untested Keras backend or CuPy
    version), the model runs on host copies of the windows with the same
    result, and the reason is logged, instead of failing the stack."""
    import types

    from processing.upscale import edsr, upscale

    model = edsr.load_model(2)
    model.__dict__.pop("_terapan_device_call", None)

    def broken(m):
        if where == "build":
            raise RuntimeError("no DLPack here")
        return lambda b: (_ for _ in ()).throw(RuntimeError("no DLPack here"))

    monkeypatch.setattr(edsr, "device_predictor", broken)
    # An array module that is not NumPy itself, so the device branch is taken.
    fake_xp = types.SimpleNamespace(stack=np.stack, zeros_like=np.zeros_like, asarray=np.asarray)
    tiles = [_img(24, 24, seed=k) for k in range(3)]
    with caplog.at_level("WARNING", logger="processing.upscale.upscale"):
        got = upscale._device_runner(model, fake_xp)(tiles, 2)
    want = upscale._run_batch(model, tiles, 2)
    assert len(got) == 3 and all(np.allclose(g, w, atol=1e-6) for g, w in zip(got, want, strict=True))
    assert "host windows" in caplog.text and "no DLPack here" in caplog.text
    model.__dict__.pop("_terapan_device_call", None)  # the cached model must not keep the broken call
    assert getattr(model, "_terapan_device_call", None) is None


# ------------------------------------------------ 16-bit results


def test_quantize16_consuming_equals_to_uint16() -> None:
    from processing.io.imageio import quantize16_consuming, to_uint16

    rng = np.random.default_rng(11)
    img = rng.uniform(-0.2, 1.2, (33, 47, 3)).astype(np.float32)
    img[0, :5, 0] = [0.0, 1.0, 0.5 / 65535, 1.5 / 65535, 65534.5 / 65535]  # rounding edges
    want = to_uint16(img)
    got = quantize16_consuming(img.copy())
    assert got.dtype == np.uint16 and np.array_equal(got, want)
    assert quantize16_consuming(want) is want and to_uint16(want) is want  # codes pass through


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_stack_uint16_result_is_the_tiff_of_the_float_result(tmp_path, monkeypatch, device) -> None:
    """result_dtype="uint16" (what `stack` and the workers use) gives the
    codes write_tiff16 would write from the float result, bit for bit, on
    both branches (NumPy standing in for CuPy on "gpu")."""
    import tifffile

    from processing.io.imageio import to_uint16, write_tiff16
    from processing.stack import pipeline as stackpipe
    from processing.synth.synth import write_burst

    write_burst(_burst(5, seed=6, size=96), tmp_path / "in")
    paths = stackpipe.list_frames(tmp_path / "in")
    monkeypatch.setenv("TERAPAN_DEVICE", "cpu")
    if device == "gpu":
        monkeypatch.setattr(stackpipe, "_pick_device", lambda: ("gpu", np))
    flt = stackpipe.process_stack(paths, 2.0, upscale_model=False)
    u16 = stackpipe.process_stack(paths, 2.0, upscale_model=False, result_dtype="uint16")
    assert flt.image.dtype == np.float32 and u16.image.dtype == np.uint16
    assert np.array_equal(u16.image, to_uint16(flt.image))
    assert "quantize" in u16.metrics["seconds"] and ("to_host" in u16.metrics["seconds"]) == (device == "gpu")
    write_tiff16(tmp_path / "a.tif", flt.image)
    write_tiff16(tmp_path / "b.tif", u16.image)
    assert np.array_equal(tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif"))
    with pytest.raises(ValueError, match="result_dtype"):
        stackpipe.process_stack(paths, 2.0, result_dtype="float16")


@needs_gpu
def test_cupy_quantize16_equals_numpy() -> None:
    import cupy as cp  # type: ignore[import-not-found]

    from processing.io.imageio import quantize16_consuming, to_uint16

    img = np.random.default_rng(12).uniform(-0.1, 1.1, (64, 80, 3)).astype(np.float32)
    got = quantize16_consuming(cp.asarray(img))
    assert isinstance(got, cp.ndarray) and got.dtype == cp.uint16
    assert np.array_equal(backend.to_host(got), to_uint16(img))


def test_frames_go_to_the_device_in_their_decode_threads(tmp_path, monkeypatch) -> None:
    """GPU path (NumPy standing in): every frame is uploaded once, by the
    thread that decoded it, and the master and fusion use those copies."""
    import threading

    from processing.stack import fuse_gpu
    from processing.stack import pipeline as stackpipe
    from processing.synth.synth import write_burst

    write_burst(_burst(6, seed=6, size=96), tmp_path)
    monkeypatch.setenv("TERAPAN_DEVICE", "cpu")
    monkeypatch.setenv("TERAPAN_THREADS", "2")
    monkeypatch.setattr(stackpipe, "_pick_device", lambda: ("gpu", np))
    uploads: list[bool] = []
    real_develop = stackpipe._develop_one

    def spy_develop(path, p, reg_px, want_tca, upload=None):
        def counted(a):
            uploads.append(threading.current_thread() is not threading.main_thread())
            return upload(a)

        return real_develop(path, p, reg_px, want_tca, counted if upload is not None else None)

    given: list = []
    real_init = fuse_gpu.DeviceFrames.__init__

    def spy_init(self, frames, xp, images=None):
        given.append((list(frames), images))
        real_init(self, frames, xp, images)

    monkeypatch.setattr(stackpipe, "_develop_one", spy_develop)
    monkeypatch.setattr(fuse_gpu.DeviceFrames, "__init__", spy_init)
    res = stackpipe.process_stack(stackpipe.list_frames(tmp_path), 2.0, upscale_model=False)
    assert len(uploads) == 6 and all(uploads)  # one per frame, none on the main thread
    ((frames, images),) = given  # one DeviceFrames for master and fusion
    assert len(frames) == res.metrics["frames_fused"] and all(im is not None for im in images)
    assert all(im is fr.image for im, fr in zip(images, frames, strict=True))  # the decode thread's copies


@needs_gpu
def test_fused_cuda_kernel_equals_array_path_on_the_gpu(monkeypatch) -> None:
    """fuse_cuda's kernels compile, pass their own checks, and the master and
    fusion with them equal the array-operation paths (>= 60 dB)."""
    import cupy as cp  # type: ignore[import-not-found]

    from processing.stack import fuse_cuda
    from processing.stack.fuse_gpu import _check_fused_against_xp, _check_master_against_xp

    fused = fuse_cuda.FusedFrames.get()
    assert fused is not None, fuse_cuda.FusedFrames._failed
    assert _check_fused_against_xp(fused, cp) >= 60
    assert _check_master_against_xp(fused, cp) >= 60
    b = _burst()
    size = (b.frames[0].shape[1], b.frames[0].shape[0])
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("TERAPAN_GPU_FUSED", flag)
        fr = _frames(b, True)
        m = make_master_xp(fr, size, xp=cp)
        out[flag] = (m, fuse_xp(fr, 2.0, (2 * size[0], 2 * size[1]), m, xp=cp))
    assert _psnr(out["1"][0], out["0"][0]) >= 60  # master
    assert _psnr(out["1"][1], out["0"][1]) >= 60  # fusion
