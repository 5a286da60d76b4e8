import numpy as np
import pytest

from processing.io.errors import InputError
from processing.io.imageio import write_image
from processing.stack.develop import DevelopParams, develop, develop_with_encoding, linear_to_srgb, srgb_to_linear

from .._sr_helpers import SHARED


def test_srgb_roundtrip_and_linearisation(tmp_path):
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-4)
    assert abs(float(srgb_to_linear(np.float32(0.5))) - 0.2140) < 1e-3
    img = np.full((16, 16, 3), 0.5, np.float32)
    write_image(tmp_path / "a.png", img)
    lin, enc = develop_with_encoding(tmp_path / "a.png")
    assert enc == "srgb" and lin.dtype == np.float32 and lin.shape == (16, 16, 3)
    assert abs(float(lin.mean()) - 0.214) < 2e-3
    same, enc = develop_with_encoding(tmp_path / "a.png", DevelopParams(linearize=False))
    assert enc == "as-is" and abs(float(same.mean()) - 0.5) < 1e-3


def test_pixel_limit_refused_before_decoding(tmp_path):
    write_image(tmp_path / "big.png", np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="above the limit"):
        develop(tmp_path / "big.png", DevelopParams(max_pixels=1000))


def test_bad_params():
    with pytest.raises(ValueError):
        DevelopParams(highlight_mode="nope")
    assert DevelopParams.from_dict(DevelopParams(highlight_mode="blend").to_dict()).highlight_mode == "blend"


@pytest.mark.skipif(not (SHARED / "raw" / "RAW_KODAK_DC50.KDC").exists(), reason="shared data absent")
def test_raw_develop_linear():
    img, enc = develop_with_encoding(SHARED / "raw" / "RAW_KODAK_DC50.KDC")
    assert enc == "linear" and img.shape == (512, 768, 3) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.mean() > 0.01
    with pytest.raises(InputError, match="above the limit"):
        develop(SHARED / "raw" / "RAW_KODAK_DC50.KDC", DevelopParams(max_pixels=10_000))


@pytest.mark.parametrize("kind", ["jpg", "grey.jpg", "rgba.png", "png16"])
def test_develop_uint16_table_path_is_bit_identical(tmp_path, kind) -> None:
    """8-bit files take one 256-entry lookup (cv2.LUT); the result must equal
    the float route (decode to [0, 1], 16-bit codes, 65536-entry table)."""
    import cv2

    from processing.io.imageio import load_image
    from processing.stack.develop import _TO_LINEAR_U16, DevelopParams, _u16, develop_uint16

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    path = tmp_path / ("f.png" if kind == "png16" else f"f.{kind.split('.')[-1]}")
    if kind == "jpg":
        cv2.imwrite(str(path), img[:, :, :3])
    elif kind == "grey.jpg":
        cv2.imwrite(str(path), img[:, :, 0])
    elif kind == "rgba.png":
        cv2.imwrite(str(path), img)
    else:
        cv2.imwrite(str(path), img[:, :, :3].astype(np.uint16) * 250)
    ref, info = load_image(path)
    got, enc = develop_uint16(path)
    want = _u16(ref) if info.linear else _TO_LINEAR_U16.take(_u16(ref))
    assert got.dtype == np.uint16 and got.shape == want.shape and np.array_equal(got, want)
    assert enc == ("linear" if info.linear else "srgb")
    raw, enc = develop_uint16(path, DevelopParams(linearize=False))
    assert enc == "as-is" and np.array_equal(raw, _u16(ref))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation) -> None:
    """JPEGs are turned upright by their EXIF orientation (in place), and the
    header probe reports the upright size."""
    from PIL import Image

    from processing.io.imageio import load_image, probe

    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :20] = 255  # a white block at the top left
    ex = Image.Exif()
    ex[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(img).save(path, "JPEG", quality=95, exif=ex)
    got, info = load_image(path)
    turned = {1: img, 3: np.rot90(img, 2), 6: np.rot90(img, -1), 8: np.rot90(img, 1)}[orientation]
    assert got.shape == turned.shape and (info.width, info.height) == (turned.shape[1], turned.shape[0])
    assert probe(path, 10**9).width == turned.shape[1]
    assert np.abs(got * 255 - turned).mean() < 3  # JPEG loss only
