"""EDSR (Lim et al. 2017) in Keras 3, backend-agnostic (keras.ops only).

Residual blocks without batch norm, residual scaling, a global skip, a mean
shift and pixel-shuffle upsampling (x2, x3, x4 = two x2 stages). Images are
float RGB in [0, 1] (NHWC). Weights ship in processing/upscale/weights/ as
edsr_x{scale}.weights.h5 with a JSON sidecar holding the architecture (so the
right model is built before the weights load) and the training recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX would otherwise take 75 % of the GPU at import, starving CuPy's fusion.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import keras
import numpy as np
from keras import layers, ops

from ..io.errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NATIVE_SCALES = (2, 3, 4)
#: DIV2K RGB mean, as in EDSR's MeanShift (inputs in [0, 1]).
RGB_MEAN = (0.4488, 0.4371, 0.4040)

_threads_set = False


def configure_threads(n: int | None = None) -> None:
    """Bound TensorFlow's thread pools (shared CPU); a no-op on other backends."""
    global _threads_set
    if _threads_set or keras.backend.backend() != "tensorflow":
        return
    n = int(n or os.environ.get("TERAPAN_TF_THREADS", 2))
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised: keep its pools
    _threads_set = True


def depth_to_space(x: Any, r: int) -> Any:
    """NHWC pixel shuffle with TF's channel order, via reshape/transpose only.

    out[b, h*r+i, w*r+j, c] = x[b, h, w, (i*r + j)*C + c]
    """
    s = ops.shape(x)
    b, h, w, cr = s[0], s[1], s[2], s[3]
    c = x.shape[-1] // (r * r)
    del cr
    x = ops.reshape(x, (b, h, w, r, r, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, h * r, w * r, c))


@keras.saving.register_keras_serializable(package="terapan")
class PixelShuffle(layers.Layer):
    def __init__(self, r: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.r = int(r)

    def call(self, x: Any) -> Any:
        return depth_to_space(x, self.r)

    def compute_output_shape(self, s: tuple) -> tuple:
        r = self.r
        return (s[0], None if s[1] is None else s[1] * r, None if s[2] is None else s[2] * r, s[3] // (r * r))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "r": self.r}


@keras.saving.register_keras_serializable(package="terapan")
class MeanShift(layers.Layer):
    def __init__(self, sign: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.sign = float(sign)

    def call(self, x: Any) -> Any:
        return x + self.sign * ops.convert_to_tensor(RGB_MEAN, dtype=x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sign": self.sign}


@keras.saving.register_keras_serializable(package="terapan")
class Scale(layers.Layer):
    """Residual scaling (0.1 in EDSR) keeps deep residual stacks stable."""

    def __init__(self, factor: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.factor = float(factor)

    def call(self, x: Any) -> Any:
        return x * self.factor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


def _keys(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_kernel(r: int, channels: int = 3) -> np.ndarray:
    """5x5 conv kernel whose r*r phases are bicubic (Keys a=-0.5) upsampling taps.

    Output pixel o = r*k + i sits at input k + (i + 0.5)/r - 0.5 (half-pixel
    centres, as tf.image.resize / keras UpSampling2D 'bicubic'); the taps
    span k-2..k+2, so the input is padded by 2.
    """
    taps = np.zeros((r, 5))
    for i in range(r):
        d = (i + 0.5) / r - 0.5
        f = int(np.floor(d))
        t = d - f
        for m, w in zip((-1, 0, 1, 2), (_keys(1 + t), _keys(t), _keys(1 - t), _keys(2 - t)), strict=True):
            taps[i, f + m + 2] = w
    k = np.zeros((5, 5, channels, channels * r * r), np.float32)
    for i in range(r):
        for j in range(r):
            for c in range(channels):
                k[:, :, c, (i * r + j) * channels + c] = np.outer(taps[i], taps[j])
    return k


@keras.saving.register_keras_serializable(package="terapan")
class BicubicUp(layers.Layer):
    """Fixed bicubic x r upsampling as conv + pixel shuffle (dynamic shapes, any backend)."""

    def __init__(self, r: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.r = int(r)
        self._k = bicubic_kernel(self.r)
        self._k1 = bicubic_kernel(self.r, 1)

    def call(self, x: Any) -> Any:
        # Taps outside the image get weight 0 and the rest are renormalised
        # (as TF's resize_bicubic does), via a convolved ones-mask.
        pad = ((0, 0), (2, 2), (2, 2), (0, 0))
        k = ops.convert_to_tensor(self._k, dtype=x.dtype)
        k1 = ops.convert_to_tensor(self._k1, dtype=x.dtype)
        y = ops.conv(ops.pad(x, pad), k, strides=1, padding="valid")
        n = ops.conv(ops.pad(ops.ones_like(x[..., :1]), pad), k1, strides=1, padding="valid")
        y = depth_to_space(y, self.r)
        return y / depth_to_space(n, self.r)

    def compute_output_shape(self, s: tuple) -> tuple:
        r = self.r
        return (s[0], None if s[1] is None else s[1] * r, None if s[2] is None else s[2] * r, s[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "r": self.r}


def _conv(filters: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(filters, 3, padding="same", name=name)


def build_edsr(
    scale: int, n_blocks: int = 16, n_filters: int = 48, res_scale: float = 0.1, skip: str = "none"
) -> keras.Model:
    """EDSR for an integer scale in (2, 3, 4); input any HxW, float RGB [0, 1].

    skip="bicubic" adds a fixed bicubic upsampling of the input to the output
    (VDSR-style residual learning; the tail starts at zero so an untrained
    model is exactly bicubic). It converges far faster, which matters with
    minutes of CPU training; skip="none" is the paper's EDSR.
    """
    if scale not in NATIVE_SCALES:
        raise ValueError(f"EDSR scale must be one of {NATIVE_SCALES}, got {scale}")
    if skip not in ("none", "bicubic"):
        raise ValueError(f"skip must be 'none' or 'bicubic', got {skip!r}")
    inp = keras.Input((None, None, 3), name="lr")
    x = MeanShift(-1.0, name="sub_mean")(inp)
    x = head = _conv(n_filters, "head")(x)
    for i in range(n_blocks):
        y = _conv(n_filters, f"body_{i}_conv1")(x)
        y = layers.ReLU(name=f"body_{i}_relu")(y)
        y = _conv(n_filters, f"body_{i}_conv2")(y)
        if res_scale != 1.0:
            y = Scale(res_scale, name=f"body_{i}_scale")(y)
        x = layers.Add(name=f"body_{i}_add")([x, y])
    x = _conv(n_filters, "body_end")(x)
    x = layers.Add(name="global_skip")([x, head])
    stages = (2, 2) if scale == 4 else (scale,)
    for k, r in enumerate(stages):
        x = _conv(n_filters * r * r, f"up_{k}_conv")(x)
        x = PixelShuffle(r, name=f"up_{k}_shuffle")(x)
    if skip == "bicubic":
        x = layers.Conv2D(3, 3, padding="same", name="tail", kernel_initializer="zeros")(x)
        up = BicubicUp(scale, name="bicubic_skip")(inp)
        out = layers.Add(name="add_bicubic")([x, up])
    else:
        x = _conv(3, "tail")(x)
        out = MeanShift(1.0, name="add_mean")(x)
    return keras.Model(inp, out, name=f"edsr_x{scale}_b{n_blocks}_f{n_filters}")


def build_from_arch(arch: dict[str, Any]) -> keras.Model:
    """The model a sidecar's architecture names."""
    return build_edsr(
        int(arch["scale"]),
        int(arch["n_blocks"]),
        int(arch["n_filters"]),
        float(arch.get("res_scale", 0.1)),
        str(arch.get("skip", "none")),
    )


def sidecar_path(weights: Path) -> Path:
    w = str(weights)
    stem = w[: -len(".weights.h5")] if w.endswith(".weights.h5") else str(Path(w).with_suffix(""))
    return Path(stem + ".json")


def default_weights(scale: int) -> Path:
    return WEIGHTS_DIR / f"edsr_x{scale}.weights.h5"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sidecar(weights: Path) -> dict[str, Any]:
    side = sidecar_path(weights)
    if not side.is_file():
        raise InputError(side, "missing JSON sidecar (architecture) for the weights")
    try:
        meta = json.loads(side.read_text())
        arch = meta["architecture"]
        int(arch["scale"]), int(arch["n_blocks"]), int(arch["n_filters"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(side, f"bad sidecar: {e}") from e
    return meta


def write_sidecar(weights: Path, model_arch: dict[str, Any], recipe: dict[str, Any]) -> Path:
    side = sidecar_path(weights)
    meta = {"architecture": model_arch, "recipe": recipe, "weights_sha256": file_sha256(weights)}
    side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return side


_cache: dict[tuple[str, int], keras.Model] = {}


def load_model(scale: int, weights: Path | str | None = None, cache: bool = True) -> keras.Model:
    """Build the architecture named by the sidecar and load the weights.

    Default: the shipped processing/upscale/weights/edsr_x{scale}.weights.h5.
    """
    configure_threads()
    path = Path(weights) if weights is not None else default_weights(scale)
    if not path.is_file():
        raise InputError(path, "EDSR weights not found")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if cache and (key, scale) in _cache:
        return _cache[(key, scale)]  # type: ignore[index]
    meta = read_sidecar(path)
    arch = meta["architecture"]
    if int(arch["scale"]) != int(scale):
        raise InputError(path, f"weights are for x{arch['scale']}, not x{scale}")
    model = build_from_arch(arch)
    try:
        model.load_weights(path)
    except Exception as e:
        raise InputError(path, f"cannot load weights: {e}") from e
    model.terapan_meta = meta  # type: ignore[attr-defined]
    if cache:
        _cache[(key, scale)] = model  # type: ignore[index]
    return model


def architecture(
    model: keras.Model, scale: int, n_blocks: int, n_filters: int, res_scale: float = 0.1, skip: str = "none"
) -> dict[str, Any]:
    return {
        "name": "EDSR",
        "scale": scale,
        "n_blocks": n_blocks,
        "n_filters": n_filters,
        "res_scale": res_scale,
        "skip": skip,
        "rgb_mean": list(RGB_MEAN),
        "io": "float RGB [0,1], NHWC",
        "params": int(model.count_params()),
    }


def predict(model: keras.Model, batch: Any) -> Any:
    """Run the model on an NHWC float32 batch and return NumPy.

    predict_on_batch runs a compiled function (about 25 % faster than an
    eager call on CPU); callers keep batch shapes fixed to avoid retracing.
    """
    if isinstance(model, keras.Model):
        return ops.convert_to_numpy(model.predict_on_batch(batch))
    return ops.convert_to_numpy(model(batch, training=False))


def device_predictor(model: keras.Model) -> Any:
    """A function from a CuPy NHWC float32 batch to a CuPy batch on the same GPU.

    The batch goes to the Keras backend through DLPack (no host copy) and the
    result comes back the same way, so the tiled upscale keeps the image on
    the device. One compiled function per model: JAX jits a stateless call,
    TensorFlow a tf.function, PyTorch runs under no_grad.
    """
    import cupy  # type: ignore[import-not-found]

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def call(tv: Any, ntv: Any, x: Any) -> Any:
            y, _ = model.stateless_call(tv, ntv, x, training=False)
            return y

        return lambda x: cupy.from_dlpack(call(tv, ntv, jax.dlpack.from_dlpack(x)))
    if backend == "torch":
        import torch

        def run_torch(x: Any) -> Any:
            with torch.no_grad():
                return cupy.from_dlpack(model(torch.from_dlpack(x), training=False).detach().contiguous())

        return run_torch
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def run_tf(x: Any) -> Any:
            y = fn(tf.experimental.dlpack.from_dlpack(x.__dlpack__()))
            capsule = tf.experimental.dlpack.to_dlpack(y)
            try:
                return cupy.from_dlpack(capsule)
            except (TypeError, AttributeError):  # a CuPy that takes only __dlpack__ objects
                return cupy.fromDlpack(capsule)

        return run_tf
    raise RuntimeError(f"no device path for the Keras backend {backend!r}")
