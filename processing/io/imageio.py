"""Safe image decoding and writing.

Every decoder checks the header before it allocates anything: the declared
pixel count (decompression bombs) and the memory the decode will take, from
the dimensions, the channels and the bit depth. TERAPAN_MAX_PIXELS counts
8-bit RGB pixels: a frame may take what that many of them take decoded
(BYTES_PER_LIMIT_PIXEL each, the samples and the float32 working copy), so a
16-bit RGBA frame may have fewer pixels than an 8-bit JPEG. Every failure
becomes an InputError naming the file and the reason. Decoded images are float32 HxWx3 in [0, 1], in the
file's own encoding (develop.py turns them linear where needed).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bound OpenCV's own decoder before cv2 is imported anywhere (it reads this once).
# safety.harden() refuses to run when cv2 came first and this limit was too late.
CV2_IMPORTED_UNBOUNDED = "cv2" in sys.modules and "OPENCV_IO_MAX_IMAGE_PIXELS" not in os.environ
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**30))

import numpy as np  # noqa: E402
from PIL import Image, ImageFile, ImageOps  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .errors import InputError  # noqa: E402

#: Default refusal threshold for one input frame (pixels). Frames of real
#: cameras are < 0.2 GP; anything larger is refused unless raised explicitly.
DEFAULT_MAX_PIXELS = int(os.environ.get("TERAPAN_MAX_PIXELS", 250_000_000))
MIN_SIDE = 8

Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

RAW_EXTS = {".dng", ".nef", ".cr2", ".cr3", ".arw", ".raf", ".orf", ".rw2", ".kdc", ".pef", ".srw", ".raw"}
PIL_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
TIFF_EXTS = {".tif", ".tiff"}
IMAGE_EXTS = RAW_EXTS | PIL_EXTS | TIFF_EXTS

MIN_LIBRAW = (0, 22, 1)


#: Decoded bytes one pixel of the limit stands for: 3 samples of 8 bits and a
#: float32 RGB working copy (3 x 4 bytes).
BYTES_PER_LIMIT_PIXEL = 3 + 12


@dataclass(frozen=True)
class ImageInfo:
    path: str
    width: int
    height: int
    kind: str  # "raw", "tiff", "png", "jpeg", ...
    linear: bool  # True for RAW sensor data and float TIFF
    channels: int = 3  # samples per pixel as stored (decoders keep them until the RGB copy)
    bits: int = 8  # bits per sample as stored

    @property
    def decode_bytes(self) -> int:
        """Peak bytes of decoding this image: its samples plus the float32 RGB copy."""
        return decode_bytes(self.width, self.height, self.channels, self.bits)


def decode_bytes(width: int, height: int, channels: int, bits: int) -> int:
    sample = max(1, (int(bits) + 7) // 8)
    return int(width) * int(height) * (int(channels) * sample + 12)


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def libraw_version() -> tuple[int, ...]:
    import rawpy

    return tuple(int(x) for x in rawpy.libraw_version[:3])


def check_libraw() -> None:
    """Refuse to run with a LibRaw older than MIN_LIBRAW (known decoder CVEs)."""
    v = libraw_version()
    if v < MIN_LIBRAW:
        raise RuntimeError(f"LibRaw {v} is older than {MIN_LIBRAW}; upgrade rawpy")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(path, f"cannot stat: {e.strerror}") from e
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")


def _check_dims(path: Path, w: int, h: int, max_pixels: int, channels: int = 3, bits: int = 8) -> None:
    if w * h > max_pixels:
        raise InputError(
            path,
            f"image declares {w} x {h} = {w * h / 1e6:.1f} MP, above the limit of "
            f"{max_pixels / 1e6:.1f} MP (refused before decoding)",
        )
    if w < MIN_SIDE or h < MIN_SIDE:
        raise InputError(path, f"image is {w} x {h} px, smaller than {MIN_SIDE} px a side")
    need, allowed = decode_bytes(w, h, channels, bits), max_pixels * BYTES_PER_LIMIT_PIXEL
    if need > allowed:
        raise InputError(
            path,
            f"image declares {w} x {h} x {channels} channels of {bits} bits: decoding needs "
            f"{need / 2**30:.1f} GiB, above the limit of {allowed / 2**30:.1f} GiB (refused before decoding)",
        )


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"  # also DNG/NEF/... by extension
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "unknown"


#: Sniffed kind -> the only Pillow plugin allowed to open it (never EPS & co.).
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "webp": "WEBP"}


def probe(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read only the header: size and kind. Raises InputError on anything bad."""
    path = Path(path)
    _check_file(path)
    ext = path.suffix.lower()
    magic = _sniff(path)
    # Content wins over the name: a PNG called .jpg or .tif is still a PNG.
    if ext in RAW_EXTS and magic not in _PIL_FORMATS:
        w, h = _raw_dims(path)
        _check_dims(path, w, h, max_pixels, 3, 16)  # developed to 16-bit RGB
        return ImageInfo(str(path), w, h, "raw", True, 3, 16)
    if magic == "tiff" or (ext in TIFF_EXTS and magic not in _PIL_FORMATS):
        w, h, spp, bits = _tiff_header(path)
        _check_dims(path, w, h, max_pixels, spp, bits)
        return ImageInfo(str(path), w, h, "tiff", False, spp, bits)
    if magic == "png":
        w, h, channels, bits = _png_header(path)
        _check_dims(path, w, h, max_pixels, channels, bits)
        _pil_dims(path, max_pixels, magic)  # Pillow's own checks of the header
        return ImageInfo(str(path), w, h, magic, False, channels, bits)
    if magic in _PIL_FORMATS:
        w, h, channels = _pil_dims(path, max_pixels, magic, with_channels=True)
        _check_dims(path, w, h, max_pixels, channels, 8)
        return ImageInfo(str(path), w, h, magic, False, channels, 8)
    raise InputError(path, f"not a supported image (extension {ext or 'none'}, content {magic})")


#: PNG colour type -> samples per decoded pixel (a palette decodes to RGB).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """Width, height, channels and bits per sample from the PNG's IHDR chunk."""
    import struct

    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise InputError(path, "PNG without an IHDR header")
    w, h, bits, ctype = struct.unpack(">IIBB", head[16:26])
    if ctype not in _PNG_CHANNELS or bits not in (1, 2, 4, 8, 16):
        raise InputError(path, f"PNG declares colour type {ctype} with {bits}-bit samples (not a valid PNG)")
    return int(w), int(h), _PNG_CHANNELS[ctype], max(8, int(bits))


def _pil_dims(path: Path, max_pixels: int, kind: str, with_channels: bool = False):  # noqa: ANN201
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[_PIL_FORMATS[kind]]) as im:
                w, h = im.size
                if im.format == "JPEG":
                    orient = im.getexif().get(0x0112, 1)
                    if orient in (5, 6, 7, 8):
                        w, h = h, w
                if with_channels:
                    return w, h, len(im.getbands())
                return w, h
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(path, f"decompression bomb refused: {e}") from e
    except Exception as e:
        raise InputError(path, f"unreadable image header: {e}") from e


#: More samples per pixel than this is no photograph (and multiplies memory).
MAX_TIFF_SAMPLES = 8


def _tiff_dims(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, int]:
    w, h, spp, _ = _tiff_header(path)
    return w, h, spp


def _tiff_header(path: Path) -> tuple[int, int, int, int]:
    """Width, height, samples per pixel and bits per sample of the first page."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            if not tf.pages:
                raise InputError(path, "TIFF has no images")
            page = tf.pages[0]
            w, h, spp = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
            bits = int(page.bitspersample or 8)
            depth = int(getattr(page, "imagedepth", 1) or 1)
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"unreadable TIFF header: {e}") from e
    # The pixel limit alone would let a TIFF declare thousands of samples or slices.
    if spp < 1 or spp > MAX_TIFF_SAMPLES:
        raise InputError(path, f"TIFF declares {spp} samples per pixel (at most {MAX_TIFF_SAMPLES})")
    if depth != 1:
        raise InputError(path, f"TIFF declares an image depth of {depth} (volumes are not supported)")
    if bits < 1 or bits > 64:
        raise InputError(path, f"TIFF declares {bits} bits per sample")
    return w, h, spp, max(8, bits)


def _raw_dims(path: Path) -> tuple[int, int]:
    import rawpy

    from .stderr import captured_stderr

    # LibRaw prints its own complaints on fd 2: fold them into the one-line reason.
    failure: Exception | None = None
    with captured_stderr() as err:
        try:
            with rawpy.imread(str(path)) as raw:
                s = raw.sizes
                w, h = int(s.width), int(s.height)
                if s.flip in (5, 6):
                    w, h = h, w
        except Exception as e:
            failure = e
    if failure is not None:
        said = f" ({err.first_line()})" if err.first_line() else ""
        reason = f"not a readable RAW file: {type(failure).__name__}: {_msg(failure)}{said}"
        raise InputError(path, reason) from failure
    return w, h


def _msg(e: BaseException) -> str:
    """An exception's text on one line (rawpy gives bytes)."""
    arg = e.args[0] if len(e.args) == 1 else str(e)
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return " ".join(text.split()) or type(e).__name__


def _to_float_rgb(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(path, f"unexpected image shape {arr.shape}")
    c = arr.shape[2]
    if c == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif c == 2:  # grey + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif c >= 4:
        arr = arr[:, :, :3]
    # Divided in place: one float32 copy of the image, not two (bit-identical).
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32)
        np.divide(out, np.float32(255.0), out=out)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32)
        np.divide(out, np.float32(65535.0), out=out)
    elif arr.dtype in (np.float32, np.float64, np.float16):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputError(path, "image contains NaN or infinite values")
        out = np.clip(out, 0.0, 1.0)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = (arr.astype(np.float64) / info.max).clip(0, 1).astype(np.float32)
    else:
        raise InputError(path, f"unsupported sample type {arr.dtype}")
    return np.ascontiguousarray(out)


# EXIF orientation -> the numpy view that turns the stored pixels upright
# (the same results as Pillow's ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _jpeg_opencv(path: Path) -> np.ndarray | None:
    """A complete baseline RGB or grey JPEG decoded by OpenCV, else None.

    OpenCV's libjpeg-turbo decodes straight into the array with the GIL
    released (a 45 MP frame in 0.40 s against Pillow's 0.57 s, whose array
    export is two more copies, one under the GIL), bit-identical to Pillow.
    Anything unusual (no end-of-image marker, CMYK, a decoder complaint, an
    OpenCV without RGB output) returns None, and Pillow decodes it and names
    the fault, as before.
    """
    import cv2

    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    if rgb_flag is None:
        return None
    data = np.fromfile(path, dtype=np.uint8)
    # A truncated file lacks its end-of-image marker (old OpenCV would
    # grey-fill the rest). Cameras may pad after it, so look in the tail; the
    # marker cannot occur inside entropy-coded data (0xFF is stuffed there).
    if b"\xff\xd9" not in data[-65536:].tobytes():
        return None
    with Image.open(path, formats=["JPEG"]) as im:  # the header only
        mode, orient = im.mode, im.getexif().get(0x0112, 1)
    if mode not in ("RGB", "L"):
        return None
    flags = (rgb_flag if mode == "RGB" else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(data, flags)
    if arr is None:
        return None
    turn = _ORIENT.get(orient)
    return np.ascontiguousarray(turn(arr)) if turn else arr


def _decode(path: Path, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    """Decode a non-RAW image safely into its native array (any dtype / channels)."""
    info = probe(path, max_pixels)
    if info.kind == "raw":
        raise InputError(path, "RAW file: use develop.develop_raw")
    try:
        if info.kind == "tiff":
            import tifffile

            arr = tifffile.imread(path, key=0)
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)  # planar
            linear = arr.dtype.kind == "f"
            info = ImageInfo(info.path, info.width, info.height, "tiff", linear)
        elif info.kind == "png":
            with Image.open(path, formats=["PNG"]) as im:
                im.verify()  # CRCs: catches truncated or corrupt files
            import cv2

            data = np.fromfile(path, dtype=np.uint8)
            arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise InputError(path, "PNG could not be decoded")
            if arr.ndim == 3:
                arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] >= 3 else arr
        elif info.kind == "jpeg" and (fast := _jpeg_opencv(path)) is not None:
            arr = fast
        else:
            with Image.open(path, formats=[_PIL_FORMATS[info.kind]]) as im:
                # in place: no copy of the whole image when there is nothing
                # to turn (the usual case; the copy was ~13 % of a JPEG's decode)
                ImageOps.exif_transpose(im, in_place=True)
                im.load()
                if im.mode not in ("RGB", "L", "I;16", "RGBA", "LA"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot decode {info.kind.upper()}: {e}") from e
    if arr.ndim < 2:
        raise InputError(path, f"unexpected image shape {arr.shape}")
    if arr.shape[0] != info.height or arr.shape[1] != info.width:
        raise InputError(path, f"decoded size {arr.shape[1]}x{arr.shape[0]} differs from header")
    return arr, info


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decode a non-RAW image safely into float32 RGB in [0, 1].

    RAW files go through develop.develop_raw (rawpy); here they are refused.
    """
    path = Path(path)
    arr, info = _decode(path, max_pixels)
    return _to_float_rgb(path, arr), info


def load_image_int(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decode safely into integer RGB: uint8 for 8-bit sources (JPEG, 8-bit
    PNG / TIFF), else uint16 (floats scaled from [0, 1]). Half or a quarter
    of float32's memory, for caches of many decoded tiles."""
    path = Path(path)
    arr, info = _decode(path, max_pixels)
    if arr.dtype in (np.uint8, np.uint16) and arr.ndim == 3 and arr.shape[2] == 3:
        # 16-bit RGB (stack outputs) as it is: the float round trip gave the same codes
        # at twice the cost of the decode itself (every farm block job reads its sources)
        return np.ascontiguousarray(arr), info
    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (1, 2, 4)):
        c = arr if arr.ndim == 2 else (arr[:, :, 0] if arr.shape[2] <= 2 else arr[:, :, :3])
        return np.ascontiguousarray(np.repeat(c[:, :, None], 3, axis=2) if c.ndim == 2 else c), info
    return to_uint16(_to_float_rgb(path, arr)), info


def to_uint16(img: np.ndarray) -> np.ndarray:
    """[0, 1] float to 16-bit codes (rounded); uint16 passes through."""
    if img.dtype == np.uint16:
        return img
    return (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def quantize16_consuming(img: Any) -> Any:
    """`to_uint16` that reuses IMG's own memory for the arithmetic (IMG, float32
    and owned by the caller, is overwritten): no full-size float temporaries,
    which at a 720 MP result are 8.6 GB each. IMG may be a CuPy array (the GPU
    path quantises on the device and copies half the bytes back)."""
    # The array's own module (NumPy, or CuPy on the GPU path); io/ sits below
    # device/, so this does not ask processing.device.backend.xp_of.
    xp = sys.modules["cupy"] if type(img).__module__.split(".")[0] == "cupy" else np
    if img.dtype == xp.uint16:
        return img
    if img.dtype != xp.float32:
        img = img.astype(xp.float32)
    xp.clip(img, 0.0, 1.0, out=img)
    img *= xp.float32(65535.0)
    img += xp.float32(0.5)
    return img.astype(xp.uint16)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_tiff16(path: str | Path, img: np.ndarray, compress: bool = True) -> Path:
    """Write float RGB [0, 1] (or uint16 codes as they are) as a 16-bit RGB
    TIFF, atomically."""
    import tifffile

    path = Path(path)
    data = to_uint16(img)
    with atomic_path(path) as tmp:
        try:
            tifffile.imwrite(
                tmp,
                data,
                photometric="rgb" if data.ndim == 3 else "minisblack",
                compression="zlib" if compress else None,
                bigtiff=data.nbytes > 2**31,
                # zlib strips compressed on threads: a 48 MP result in ~4 s, not ~9 s.
                maxworkers=min(4, os.cpu_count() or 1) if compress else 1,
            )
        except OSError as e:
            raise _short_write_reason(e, path, data.nbytes) from e
    return path


def _short_write_reason(e: OSError, path: Path, nbytes: int) -> OSError:
    """An uncompressed write that ran out of disk raises NumPy's "N requested and M written"
    with no errno: name the reason as the kernel would (ENOSPC) when the disk is full."""
    import errno
    import shutil

    if e.errno is None and "written" in str(e):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = 0
        if free < nbytes:
            return OSError(errno.ENOSPC, f"No space left on device ({free} bytes free, {nbytes} needed)", str(path))
    return e


def write_image(path: str | Path, img: np.ndarray, quality: int = 92) -> Path:
    """Write by extension (.tif 16-bit, .png 8/16-bit, .jpg 8-bit), atomically."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in TIFF_EXTS:
        return write_tiff16(path, img)
    import cv2

    if ext == ".png":
        data = to_uint16(img) if img.dtype != np.uint8 else img
    elif ext in (".jpg", ".jpeg"):
        data = to_uint8(img) if img.dtype != np.uint8 else img
    else:
        raise InputError(path, f"cannot write extension {ext}")
    if data.ndim == 3:
        data = data[:, :, ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, data, params)
    if not ok:
        raise InputError(path, "encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
