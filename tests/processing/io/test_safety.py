"""processing.io.safety: decoder hardening and per-job resource limits.

harden() and limit_resources() change process-wide state, so they run in
subprocesses; check_vips_image and captured_stderr run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from processing.io.errors import InputError
from processing.io.safety import check_vips_image
from processing.io.stderr import captured_stderr

from .._security_helpers import PY, ROOT, png_bomb, texture, tiff_bomb, write_png

pyvips = pytest.importorskip("pyvips")


def _py(code: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout
    )


def test_harden_blocks_untrusted_vips_loaders(tmp_path: Path) -> None:
    src = pyvips.Image.new_from_array(texture(16, 16))
    for ext in ("png", "jpg", "tif", "webp", "v"):
        src.write_to_file(str(tmp_path / f"a.{ext}"))
    (tmp_path / "a.csv").write_text("1 2\n3 4\n")
    (tmp_path / "a.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')
    r = _py(
        f"""
        import json, os, pyvips
        from PIL import Image
        from processing.io.safety import harden
        state = harden(max_pixels=123_456_789)
        out = {{"state": state, "pil": Image.MAX_IMAGE_PIXELS, "cv": os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]}}
        for ext in ("png", "jpg", "tif", "webp", "v", "csv", "svg"):
            try:
                im = pyvips.Image.new_from_file("{tmp_path}/a." + ext)
                im.avg()
                out[ext] = im.get("vips-loader")
            except pyvips.Error as e:
                out[ext] = "refused"
        try:
            pyvips.Image.csvload("{tmp_path}/a.csv")
            out["csvload"] = "loaded"
        except pyvips.Error as e:
            out["csvload"] = "blocked" if "blocked" in str(e) else str(e)
        print(json.dumps(out))
        """
    )
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["pil"] == 123_456_789
    assert int(out["cv"]) > 0
    assert out["state"]["vips"]["available"] is True
    assert out["state"]["libraw"] >= "0.22.1"
    assert [out[e] for e in ("png", "jpg", "tif", "webp")] == ["pngload", "jpegload", "tiffload", "webpload"]
    assert out["v"] == out["csv"] == out["svg"] == "refused"
    assert out["csvload"] == "blocked"


def test_harden_refuses_when_cv2_was_imported_unbounded() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    code = textwrap.dedent(
        """
        import cv2
        from processing.io.safety import harden
        harden()
        """
    )
    r = subprocess.run(
        [PY, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in r.stderr


def test_harden_is_idempotent_in_order() -> None:
    r = _py(
        """
        import processing.io.imageio  # sets the OpenCV limit first
        import cv2
        from processing.io.safety import harden, hardened
        a = harden(); b = harden()
        assert hardened() and a == b, (a, b)
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_check_vips_image_refuses_bombs_before_decoding(tmp_path: Path) -> None:
    for build, name in ((png_bomb, "bomb.png"), (tiff_bomb, "bomb.tif")):
        path = build(tmp_path / name)
        im = pyvips.Image.new_from_file(str(path), access="sequential")  # header only
        with pytest.raises(InputError, match=r"above the limit") as e:
            check_vips_image(im, path, max_pixels=50_000_000)
        assert name in str(e.value)
    good = write_png(tmp_path / "good.png", texture(16, 24))
    im = pyvips.Image.new_from_file(str(good))
    assert check_vips_image(im, good, max_pixels=1000) is im
    with pytest.raises(InputError, match="above the limit"):
        check_vips_image(im, good, max_pixels=100)


def test_check_vips_image_refuses_other_loaders(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("1 2\n3 4\n")
    im = pyvips.Image.new_from_array(np.zeros((4, 4), np.uint8)).copy()
    im.set_type(pyvips.GValue.gstr_type, "vips-loader", "magickload")
    with pytest.raises(InputError, match="loader magickload"):
        check_vips_image(im, csv)
    wide = pyvips.Image.new_from_array(np.zeros((4, 4, 6), np.uint8))
    with pytest.raises(InputError, match="6 bands"):
        check_vips_image(wide, tmp_path / "x.v")


def test_captured_stderr_catches_c_level_writes() -> None:
    with captured_stderr() as err:
        os.write(2, b"libfoo: Unexpected end of file\nsecond line\n")
    assert err.first_line() == "libfoo: Unexpected end of file"
    # fd 2 is back to normal afterwards
    assert os.fstat(2)


def test_limit_resources_memory_in_subprocess() -> None:
    r = _py(
        """
        import numpy as np
        from processing.io.safety import limit_resources
        limit_resources(max_rss_bytes=600 * 2**20)
        small = np.ones(10 * 2**20, np.uint8)  # still fine
        try:
            big = np.ones(2 * 2**30, np.uint8)
            print("allocated")
        except MemoryError:
            print("MemoryError")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "MemoryError"


def test_limit_resources_cpu_in_subprocess() -> None:
    """Soft limit: ResourceLimitExceeded in Python code (a normal job failure).
    Then a decoder stuck in C (simulated by ignoring SIGXCPU) is killed by the
    hard limit GRACE seconds later. One process, about 2 s of CPU."""
    r = _py(
        """
        import signal, sys
        from processing.io.safety import ResourceLimitExceeded, limit_resources
        limit_resources(max_seconds=1, grace_seconds=1)
        try:
            while True:
                pass
        except ResourceLimitExceeded as e:
            print("limited:", e, flush=True)
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # stands in for C code that never returns
        while True:
            pass
        """,
        timeout=60,
    )
    assert r.stdout.startswith("limited:"), (r.stdout, r.stderr)
    assert r.returncode in (-9, 137), (r.returncode, r.stderr)


def test_limit_resources_rejects_nonsense() -> None:
    from processing.io.safety import limit_resources

    with pytest.raises(ValueError):
        limit_resources(max_rss_bytes=0)
    with pytest.raises(ValueError):
        limit_resources(max_seconds=-1)
    assert sys.platform.startswith("linux")
