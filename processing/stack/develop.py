"""Stage 1, develop: decode one frame into linear float32 RGB.

Working space (one rule for the whole stack pipeline):
- RAW files are developed by LibRaw with the camera white balance, no gamma
  and no auto-brightening, so they are linear already ("linear" encoding).
- Integer-coded JPEG/PNG/TIFF files are display-encoded; they are treated as
  sRGB and linearised with the sRGB transfer curve ("srgb" encoding).
- Float TIFFs are taken as linear.
Fusion runs in linear light (pixel integration and sensor noise are linear);
the fused result is re-encoded with the reference frame's encoding, so a JPEG
burst gives a result comparable with its JPEG ground truth.
With `linearize=False` every frame is used as stored (encoding "as-is").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from ..io.errors import InputError
from ..io.imageio import DEFAULT_MAX_PIXELS, check_libraw, load_image, load_image_int, probe
from ..io.params import StageParams

HIGHLIGHT_MODES = {"clip": 0, "ignore": 1, "blend": 2, "reconstruct": 5}


@dataclasses.dataclass(frozen=True)
class DevelopParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "develop"

    linearize: bool = True  # decode display-encoded files to linear light
    highlight_mode: str = "clip"  # RAW: clip | ignore | blend | reconstruct
    use_camera_wb: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.highlight_mode not in HIGHLIGHT_MODES:
            raise ValueError(f"develop: highlight_mode must be one of {sorted(HIGHLIGHT_MODES)}")


# sRGB transfer curves through lookup tables: exact for 8/16-bit codes and far
# cheaper than pow() on 12 MP frames.
_LUT_N = 65536
_codes = np.arange(_LUT_N, dtype=np.float64) / (_LUT_N - 1)
_TO_LINEAR = np.where(_codes <= 0.04045, _codes / 12.92, ((_codes + 0.055) / 1.055) ** 2.4).astype(np.float32)
_TO_SRGB = np.where(_codes <= 0.0031308, _codes * 12.92, 1.055 * _codes ** (1 / 2.4) - 0.055).astype(np.float32)
del _codes
_TO_LINEAR_U16 = (_TO_LINEAR.astype(np.float64) * 65535.0 + 0.5).astype(np.uint16)
# 8-bit code c is the 16-bit code 257 c (c / 255 * 65535 exactly).
_U8_TO_U16 = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16)
_U8_TO_LINEAR_U16 = _TO_LINEAR_U16[_U8_TO_U16]


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """TABLE looked up at IMG's 16-bit codes; IMG may be a CuPy array (the GPU
    path encodes on the device with the same table)."""
    from ..device.backend import xp_of

    xp = xp_of(img)
    idx = xp.clip(img, 0.0, 1.0) * (_LUT_N - 1) + 0.5
    return xp.asarray(table)[idx.astype(xp.uint16)]


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] to linear light (16-bit precision)."""
    return _lut(img, _TO_LINEAR)


def linear_to_srgb(img: np.ndarray) -> np.ndarray:
    """Linear light [0, 1] to sRGB encoding (16-bit precision)."""
    return _lut(img, _TO_SRGB)


def encode(img: np.ndarray, encoding: str) -> np.ndarray:
    """Working space (linear) to ENCODING ("srgb", "linear" or "as-is")."""
    return linear_to_srgb(img) if encoding == "srgb" else img


def decode(img: np.ndarray, encoding: str) -> np.ndarray:
    """ENCODING to the working space (inverse of `encode`)."""
    return srgb_to_linear(img) if encoding == "srgb" else img


def develop_raw(path: str | Path, params: DevelopParams | None = None) -> np.ndarray:
    """RAW through LibRaw: camera WB, linear 16-bit, no auto-brightening."""
    import rawpy

    params = params or DevelopParams()
    path = Path(path)
    probe(path, params.max_pixels)  # header-only size check before demosaicing
    check_libraw()
    from ..io.imageio import _msg
    from ..io.stderr import captured_stderr

    failure: Exception | None = None
    with captured_stderr() as err:  # LibRaw's own stderr lines join the reason
        try:
            with rawpy.imread(str(path)) as raw:
                rgb = raw.postprocess(
                    use_camera_wb=params.use_camera_wb,
                    gamma=(1, 1),
                    no_auto_bright=True,
                    output_bps=16,
                    highlight_mode=HIGHLIGHT_MODES[params.highlight_mode],
                    output_color=rawpy.ColorSpace.sRGB,
                )
        except Exception as e:
            failure = e
    if failure is not None:
        said = f" ({err.first_line()})" if err.first_line() else ""
        raise InputError(path, f"cannot develop RAW: {type(failure).__name__}: {_msg(failure)}{said}") from failure
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise InputError(path, f"RAW developed to unexpected shape {rgb.shape}")
    return np.ascontiguousarray(rgb[:, :, :3], dtype=np.float32) / np.float32(65535.0)


def develop_with_encoding(path: str | Path, params: DevelopParams | None = None) -> tuple[np.ndarray, str]:
    """Decode PATH into the working space; also return its file encoding."""
    params = params or DevelopParams()
    info = probe(path, params.max_pixels)
    if info.kind == "raw":
        return develop_raw(path, params), "linear"
    img, info = load_image(path, params.max_pixels)
    if not params.linearize:
        return img, "as-is"
    if info.linear:
        return img, "linear"
    return srgb_to_linear(img), "srgb"


def _u16(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint16 codes in one saturating OpenCV pass (rounded)."""
    import cv2

    img = np.ascontiguousarray(img, dtype=np.float32)
    flat = img.reshape(img.shape[0], -1)  # one channel: a scalar scales all samples
    return cv2.multiply(flat, 65535.0, dtype=cv2.CV_16U).reshape(img.shape)


def develop_uint16(path: str | Path, params: DevelopParams | None = None) -> tuple[np.ndarray, str]:
    """`develop_with_encoding` straight to 16-bit linear codes (what the stack
    pipeline keeps): sRGB files go through one 16-bit lookup table instead of
    float linearisation followed by re-quantisation."""
    params = params or DevelopParams()
    info = probe(path, params.max_pixels)
    if info.kind == "raw":
        return _u16(develop_raw(path, params)), "linear"
    arr, info = load_image_int(path, params.max_pixels)
    if arr.dtype == np.uint8:
        # 8-bit sources (JPEG): one 256-entry table lookup in OpenCV (threaded,
        # GIL released), bit-identical to float -> 16-bit codes -> table below,
        # and 4x less memory traffic than going through float32.
        table = _U8_TO_U16 if (not params.linearize or info.linear) else _U8_TO_LINEAR_U16
        enc = "as-is" if not params.linearize else ("linear" if info.linear else "srgb")
        return cv2.LUT(arr, table), enc
    if not params.linearize:
        return arr, "as-is"
    if info.linear:
        return arr, "linear"
    return _TO_LINEAR_U16.take(arr), "srgb"


def develop(path: str | Path, params: DevelopParams | None = None) -> np.ndarray:
    """Decode one frame to float32 HxWx3 in the (linear) working space."""
    return develop_with_encoding(path, params)[0]
