"""JPEGs decode through OpenCV when that gives Pillow's pixels exactly, and
through Pillow (which names the fault) whenever anything is unusual."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from processing.io.errors import InputError
from processing.io.imageio import _jpeg_opencv, load_image_int

from .._sr_helpers import SHARED


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] + np.zeros((h, 1, 3), np.float32)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        ImageOps.exif_transpose(im, in_place=True)
        a = np.asarray(im)
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_opencv_path_matches_pillow_for_every_orientation(tmp_path, orientation, mode) -> None:
    ex = Image.Exif()
    ex[0x0112] = orientation
    path = tmp_path / f"o{orientation}{mode}.jpg"
    Image.fromarray(_photo()).convert(mode).save(path, "JPEG", quality=90, exif=ex)
    assert _jpeg_opencv(path) is not None  # the fast path was taken
    got, _ = load_image_int(path)
    want = _pillow(path)
    assert got.flags.c_contiguous and got.shape == want.shape
    assert np.array_equal(got, want)


def test_padding_after_the_end_marker_keeps_the_fast_path(tmp_path) -> None:
    """Cameras pad after EOI (the durlach Lumix files carry 321 bytes)."""
    path = tmp_path / "padded.jpg"
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue() + bytes(range(256)) * 2)
    assert _jpeg_opencv(path) is not None
    assert np.array_equal(load_image_int(path)[0], _pillow(path))


def test_missing_end_marker_goes_to_pillow_which_names_the_fault(tmp_path) -> None:
    path = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    Image.fromarray(_photo(256, 256)).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue()[:-2])  # only the EOI marker is missing
    assert _jpeg_opencv(path) is None
    with pytest.raises(InputError, match="truncated") as e:
        load_image_int(path)
    assert "cut.jpg" in str(e.value)


def test_cmyk_goes_to_pillow(tmp_path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo()).convert("CMYK").save(path, "JPEG", quality=90)
    assert _jpeg_opencv(path) is None
    with Image.open(path) as im:
        want = np.asarray(im.convert("RGB"))
    assert np.array_equal(load_image_int(path)[0], want)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_real_camera_jpegs_identical_to_pillow() -> None:
    paths = sorted((SHARED / "panoramas" / "durlach").glob("*.JPG"))[:3]
    paths += sorted((SHARED / "bursts").rglob("*.jpg"))[:3]
    assert paths
    for p in paths:
        assert _jpeg_opencv(p) is not None, p
        assert np.array_equal(load_image_int(p)[0], _pillow(p)), p


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_bench_develop_prints_its_json() -> None:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    cmd = [sys.executable, "-m", "processing", "bench", "develop", "--megapixels", "0.5", "--repeat", "1"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["bench"] == "develop" and got["opencv_equals_pillow"] is True
    assert 0.4 < got["megapixels"] < 0.6
    assert all(v > 0 for v in got["seconds"].values())
