"""Every bad input gets a clear error naming the file and the reason.

TABLE lists (case, entry point, expected) and every row is one test. Entry
points: imageio.probe, imageio.load_image, develop.develop and the CLI
`python -m processing stack DIR -o OUT.tif --scale 2` (a subprocess: exit
code 2 and one stderr line naming the file and the reason). In the CLI the
bad file sits beside one good frame, so the stack cannot be made.
`expected` is "ok" or "error: REGEX" (REGEX searched in the reason).
docs/security.md shows this table with observed results
(TERAPAN_SECURITY_REPORT=path writes them as JSON lines).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from processing.io import imageio
from processing.io.errors import InputError

from .._security_helpers import (
    PY,
    ROOT,
    SHARED,
    jpeg_bomb,
    png_bomb,
    texture,
    tiff_bomb,
    tiff_many_samples,
    truncate,
    write_jpeg,
    write_png,
    write_tiff,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAS_STACK_CLI = (ROOT / "processing" / "commands" / "stack.py").exists()
REPORT = os.environ.get("TERAPAN_SECURITY_REPORT")


# --------------------------------------------------------------- builders
# Each builder writes one input into DIR and returns its path.
def _good(d: Path, name: str = "b_good.png", seed: int = 0, shift: int = 0) -> Path:
    img = texture(96, 128, seed=seed)
    return write_png(d / name, np.roll(img, shift, axis=1))


def _trunc(kind: str, frac: float = 0.5) -> Callable[[Path], Path]:
    """A good 128 x 96 picture cut to FRAC of its bytes (kind: jpg, png, tif, tif-zlib)."""

    def build(d: Path) -> Path:
        img = texture(96, 128, seed=3)
        ext = kind.split("-")[0]
        src = d / f"full.{ext}"
        if kind == "jpg":
            write_jpeg(src, img)
        elif kind == "png":
            write_png(src, img)
        else:
            write_tiff(src, img, compression="zlib" if kind == "tif-zlib" else None)
        out = truncate(src, d / f"a_bad.{ext}", frac)
        src.unlink()
        return out

    return build


def _zero(ext: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / f"a_bad.{ext}"
        p.write_bytes(b"")
        return p

    return build


def _png_named_jpg(d: Path) -> Path:
    return write_png(d / "a_impostor.jpg", texture(96, 128, seed=0))


def _png_named_tif(d: Path) -> Path:
    return write_png(d / "a_impostor.tif", texture(96, 128, seed=0))


def _text_named_png(d: Path) -> Path:
    p = d / "a_bad.png"
    p.write_text("this is not an image\n" * 20)
    return p


def _random(ext: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / f"a_bad.{ext}"
        p.write_bytes(np.random.default_rng(7).bytes(20_000))
        return p

    return build


def _truncated_dng(d: Path) -> Path:
    src = SHARED / "raw" / "Blackmagic.dng"
    if not src.is_file():
        pytest.skip("../shared/data/raw/Blackmagic.dng is absent")
    return truncate(src, d / "a_bad.dng", 0.5)


def _one_px(d: Path) -> Path:
    return write_png(d / "a_bad.png", np.full((1, 1, 3), 128, np.uint8))


def _nan_tiff(d: Path) -> Path:
    img = np.full((96, 128, 3), 0.5, np.float32)
    img[10, 20, 1] = np.nan
    return write_tiff(d / "a_bad.tif", img)


def _dir_named_jpg(d: Path) -> Path:
    p = d / "a_bad.jpg"
    p.mkdir()
    return p


def _fifo_named_png(d: Path) -> Path:
    p = d / "a_bad.png"
    os.mkfifo(p)  # a reader would block forever: must be refused unopened
    return p


def _devzero_link(d: Path) -> Path:
    p = d / "a_bad.jpg"
    p.symlink_to("/dev/zero")
    return p


def _unreadable(d: Path) -> Path:
    p = _good(d, "a_bad.png", seed=1)
    p.chmod(0)
    return p


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "zero-byte JPEG": _zero("jpg"),
    "zero-byte PNG": _zero("png"),
    "zero-byte TIFF": _zero("tif"),
    "truncated JPEG (50 %)": _trunc("jpg"),
    "truncated PNG (50 %)": _trunc("png"),
    "truncated TIFF (50 %, uncompressed)": _trunc("tif"),
    "truncated TIFF (60 %, deflate)": _trunc("tif-zlib", 0.6),
    "PNG named .jpg": _png_named_jpg,
    "PNG named .tif": _png_named_tif,
    "text file named .png": _text_named_png,
    "random bytes named .dng": _random("dng"),
    "random bytes named .nef": _random("nef"),
    "truncated real DNG (50 %)": _truncated_dng,
    "PNG bomb (100,000 x 100,000 declared, 1 kB)": lambda d: png_bomb(d / "a_bad.png"),
    "TIFF bomb (IFD patched to 100,000 x 100,000)": lambda d: tiff_bomb(d / "a_bad.tif"),
    "TIFF declaring 4096 samples per pixel": lambda d: tiff_many_samples(d / "a_bad.tif"),
    "JPEG bomb (SOF patched to 65,500 x 65,500)": lambda d: jpeg_bomb(d / "a_bad.jpg"),
    "1 x 1 px PNG": _one_px,
    "NaN in a float32 TIFF": _nan_tiff,
    "folder named .jpg": _dir_named_jpg,
    "FIFO named .png": _fifo_named_png,
    "symlink to /dev/zero named .jpg": _devzero_link,
    "unreadable file (mode 000)": _unreadable,
}

EMPTY = "empty file"
NOT_FILE = "not a regular file"
TRUNC = r"truncated|failed to read|incomplete|Truncated"
# (case, entry point, expected): the whole contract in one table.
TABLE: list[tuple[str, str, str]] = []


def _rows(case: str, probe: str, load: str, develop: str | None = None, cli: str | None = "same") -> None:
    develop = load if develop is None else develop
    TABLE.append((case, "probe", probe))
    TABLE.append((case, "load_image", load))
    TABLE.append((case, "develop", develop))
    if cli is not None:
        TABLE.append((case, "cli", develop if cli == "same" else cli))


for _ext in ("JPEG", "PNG", "TIFF"):
    _rows(f"zero-byte {_ext}", f"error: {EMPTY}", f"error: {EMPTY}", cli=None if _ext != "JPEG" else "same")
_rows("truncated JPEG (50 %)", "ok", f"error: {TRUNC}")
_rows("truncated PNG (50 %)", "ok", f"error: {TRUNC}")
_rows("truncated TIFF (50 %, uncompressed)", "ok", f"error: {TRUNC}")
_rows("truncated TIFF (60 %, deflate)", "ok", f"error: {TRUNC}", cli=None)
_rows("PNG named .jpg", "ok", "ok")
_rows("PNG named .tif", "ok", "ok", cli=None)
_rows("text file named .png", "error: not a supported image", "error: not a supported image")
_rows("random bytes named .dng", "error: not a readable RAW file", "error: not a readable RAW file")
_rows("random bytes named .nef", "error: not a readable RAW file", "error: not a readable RAW file", cli=None)
_rows(
    "truncated real DNG (50 %)",
    "ok",
    "error: RAW file: use develop.develop_raw",
    develop="error: cannot develop RAW",
)
_rows("PNG bomb (100,000 x 100,000 declared, 1 kB)", "error: bomb|above the limit", "error: bomb|above the limit")
_rows("TIFF bomb (IFD patched to 100,000 x 100,000)", "error: above the limit", "error: above the limit")
_rows("TIFF declaring 4096 samples per pixel", "error: samples per pixel", "error: samples per pixel", cli=None)
_rows("JPEG bomb (SOF patched to 65,500 x 65,500)", "error: bomb|above the limit", "error: bomb|above the limit")
_rows("1 x 1 px PNG", "error: smaller than", "error: smaller than")
_rows("NaN in a float32 TIFF", "ok", "error: NaN")
_rows("folder named .jpg", f"error: {NOT_FILE}", f"error: {NOT_FILE}", cli=None)
_rows("FIFO named .png", f"error: {NOT_FILE}", f"error: {NOT_FILE}", cli=None)  # CLI: test_cli_fifo_never_blocks
_rows("symlink to /dev/zero named .jpg", f"error: {NOT_FILE}", f"error: {NOT_FILE}", cli=None)
_rows("unreadable file (mode 000)", "error: permission denied", "error: permission denied")


def _record(case: str, entry: str, expected: str, observed: str) -> None:
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as f:
            f.write(json.dumps({"case": case, "entry": entry, "expected": expected, "observed": observed}) + "\n")


def _check(expected: str, observed_ok: bool, reason: str, path: Path, message: str) -> None:
    if expected == "ok":
        assert observed_ok, f"expected success, got: {message}"
        return
    assert not observed_ok, "expected an error, the input was accepted"
    pattern = expected.removeprefix("error: ")
    assert re.search(pattern, reason, re.IGNORECASE), f"reason {reason!r} does not match {pattern!r}"
    assert path.name in message, f"message {message!r} does not name {path.name}"


def _fake_unreadable(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Root reads anything: make os.access answer as it would for a user."""
    real = os.access

    def access(p: object, mode: int, *a: object, **kw: object) -> bool:
        if Path(str(p)) == path and mode & os.R_OK:
            return False
        return real(p, mode, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


def _call(entry: str, path: Path) -> tuple[bool, str, str]:
    """(accepted, reason, full message) of one decode entry point."""
    try:
        if entry == "probe":
            imageio.probe(path)
        elif entry == "load_image":
            img, _ = imageio.load_image(path)
            assert img.dtype == np.float32 and img.ndim == 3 and np.isfinite(img).all()
        elif entry == "develop":
            from processing.stack import develop

            img = develop.develop(path)
            assert img.dtype == np.float32 and img.ndim == 3 and np.isfinite(img).all()
        else:
            raise AssertionError(entry)
    except InputError as e:
        return False, e.reason, str(e)
    return True, "", ""


def _id(row: tuple[str, str, str]) -> str:
    return f"{row[1]}:{row[0]}"


DECODE_ROWS = [r for r in TABLE if r[1] != "cli"]
CLI_ROWS = [r for r in TABLE if r[1] == "cli"]


@pytest.mark.parametrize(("case", "entry", "expected"), DECODE_ROWS, ids=[_id(r) for r in DECODE_ROWS])
def test_decode_entry_points(
    case: str, entry: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = BUILDERS[case](tmp_path)
    if case.startswith("unreadable") and IS_ROOT:
        _fake_unreadable(monkeypatch, path)
    ok, reason, message = _call(entry, path)
    _record(case, entry, expected, "ok" if ok else f"error: {message}")
    _check(expected, ok, reason, path, message)


# ------------------------------------------------------------------- CLI
def _run_cli(folder: Path, out: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [PY, "-m", "processing", "stack", str(folder), "-o", str(out), "--scale", "2", "--no-upscale-model"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _stderr_line(r: subprocess.CompletedProcess[str]) -> str:
    """The error line: the last one (progress bars may precede it; see test_cli_error_is_one_line)."""
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines, "no error message on stderr"
    return lines[-1]


needs_cli = pytest.mark.skipif(not HAS_STACK_CLI, reason="processing/commands/stack.py not written yet")


@needs_cli
@pytest.mark.parametrize(("case", "entry", "expected"), CLI_ROWS, ids=[_id(r) for r in CLI_ROWS])
def test_cli_stack(case: str, entry: str, expected: str, tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    bad = BUILDERS[case](folder)
    good = _good(folder, "b_good.png", seed=0, shift=3)
    if case.startswith("unreadable") and IS_ROOT:
        pytest.skip("root reads mode-000 files; covered in-process by test_cli_unreadable_in_process")
    out = tmp_path / "out.tif"
    r = _run_cli(folder, out)
    if expected == "ok":
        _record(case, entry, expected, "ok" if r.returncode == 0 else f"exit {r.returncode}: {r.stderr[-300:]}")
        assert r.returncode == 0, r.stderr[-2000:]
        info = imageio.probe(out)
        assert (info.width, info.height) == (256, 192)
        assert good.exists()
        return
    line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    _record(case, entry, expected, f"exit {r.returncode}: {line}")
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr[-2000:]}"
    line = _stderr_line(r)
    assert line.startswith("error:")
    pattern = expected.removeprefix("error: ")
    assert re.search(pattern, line, re.IGNORECASE), f"{line!r} does not give the reason {pattern!r}"
    assert bad.name in line, f"{line!r} does not name the bad file {bad.name}"
    assert not out.exists(), "a failed run left an output"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "temporary files left behind"


@needs_cli
def test_cli_one_frame_folder(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    _good(folder, "only.png")
    r = _run_cli(folder, tmp_path / "out.tif")
    line = _stderr_line(r)
    _record("folder with one frame", "cli", "error: at least 2 frames", f"exit {r.returncode}: {line}")
    assert r.returncode == 2
    assert "stack" in line and re.search(r"at least 2 .*frames", line)


@needs_cli
def test_cli_empty_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = _run_cli(tmp_path / "empty", tmp_path / "out.tif")
    line = _stderr_line(r)
    _record("empty folder", "cli", "error: no images", f"exit {r.returncode}: {line}")
    assert r.returncode == 2 and "empty" in line and "no images" in line
    r = _run_cli(tmp_path / "nosuch", tmp_path / "out.tif")
    line = _stderr_line(r)
    _record("missing folder", "cli", "error: not a folder", f"exit {r.returncode}: {line}")
    assert r.returncode == 2 and "nosuch" in line


def _two_good(folder: Path) -> None:
    folder.mkdir()
    _good(folder, "f1.png", seed=0)
    _good(folder, "f2.png", seed=0, shift=2)


@needs_cli
@pytest.mark.skipif(IS_ROOT, reason="root ignores mode 000; see test_cli_unreadable_in_process")
def test_cli_unreadable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    _two_good(folder)
    folder.chmod(0)
    try:
        r = _run_cli(folder, tmp_path / "out.tif")
    finally:
        folder.chmod(stat.S_IRWXU)
    line = _stderr_line(r)
    assert r.returncode == 2 and "stack" in line and re.search("permission denied", line, re.I)


def test_cli_unreadable_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """chmod 000 on a folder, simulated for root: listing it raises EACCES."""
    if not HAS_STACK_CLI:
        pytest.skip("processing/commands/stack.py not written yet")
    from processing.__main__ import main

    folder = tmp_path / "stack"
    _two_good(folder)
    real_iterdir = Path.iterdir
    real_scandir = os.scandir
    real_listdir = os.listdir

    def denied(p: object) -> bool:
        return Path(os.fspath(p)).resolve() == folder.resolve()  # type: ignore[arg-type]

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    def scandir(p: object = "."):  # type: ignore[no-untyped-def]
        if denied(p):
            raise PermissionError(13, "Permission denied", os.fspath(p))  # type: ignore[arg-type]
        return real_scandir(p)  # type: ignore[arg-type]

    def listdir(p: object = "."):  # type: ignore[no-untyped-def]
        if denied(p):
            raise PermissionError(13, "Permission denied", os.fspath(p))  # type: ignore[arg-type]
        return real_listdir(p)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "iterdir", iterdir)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    try:
        rc = main(["stack", str(folder), "-o", str(tmp_path / "out.tif"), "--scale", "2", "--no-upscale-model"])
    except OSError as e:  # escaped the CLI: a traceback for the user
        _record("unreadable folder (mode 000)", "cli", "error: permission denied", f"traceback: {e!r}")
        raise AssertionError(f"the CLI let {e!r} escape instead of a one-line error") from e
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    _record("unreadable folder (mode 000)", "cli", "error: permission denied", f"exit {rc}: {' | '.join(lines)}")
    assert rc == 2 and len(lines) == 1, err
    assert "stack" in lines[0] and re.search("permission denied", lines[0], re.I)


@needs_cli
def test_cli_symlink_escaping_the_folder(tmp_path: Path) -> None:
    """A frame that is a symlink to a file outside the stack folder is refused, by name."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = _good(outside, "secret.png", seed=5)
    folder = tmp_path / "stack"
    _two_good(folder)
    (folder / "f3.png").symlink_to(secret)
    r = _run_cli(folder, tmp_path / "out.tif")
    line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    _record("symlink in the stack folder pointing outside", "cli", "error: outside", f"exit {r.returncode}: {line}")
    assert r.returncode == 2, f"the escaping symlink was followed (exit {r.returncode})"
    line = _stderr_line(r)
    assert "f3.png" in line and re.search("outside|symlink", line, re.I)


@needs_cli
def test_cli_fifo_never_blocks(tmp_path: Path) -> None:
    """A FIFO among the frames is not a frame: never opened (a read would hang)."""
    folder = tmp_path / "stack"
    _two_good(folder)
    os.mkfifo(folder / "f0.png")
    r = _run_cli(folder, tmp_path / "out.tif", timeout=60)
    _record("FIFO named .png beside 2 good frames", "cli", "ok (FIFO ignored)", f"exit {r.returncode}")
    assert r.returncode == 0, r.stderr[-1500:]


@needs_cli
def test_cli_failure_keeps_existing_output(tmp_path: Path) -> None:
    """A failing run to an existing -o path leaves that file byte-identical."""
    folder = tmp_path / "stack"
    folder.mkdir()
    _zero("jpg")(folder)
    _good(folder, "b_good.png")
    out = tmp_path / "out.tif"
    write_tiff(out, texture(32, 32, seed=9))
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    mtime = out.stat().st_mtime_ns
    r = _run_cli(folder, out)
    ok = r.returncode != 0 and hashlib.sha256(out.read_bytes()).hexdigest() == before
    _record("existing output after a failing run", "cli", "unchanged", "unchanged" if ok else "CHANGED")
    assert r.returncode == 2
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert out.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "stack"], "temporary files left behind"


@needs_cli
@pytest.mark.parametrize("case", ["zero-byte JPEG", "truncated real DNG (50 %)"])
def test_cli_error_is_one_line(case: str, tmp_path: Path) -> None:
    """The CLI contract: bad input -> non-zero exit and ONE stderr line: no
    progress bar when stderr is not a terminal, no LibRaw chatter on fd 2."""
    folder = tmp_path / "stack"
    folder.mkdir()
    BUILDERS[case](folder)
    _good(folder, "b_good.png")
    r = _run_cli(folder, tmp_path / "out.tif")
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert r.returncode == 2
    assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{r.stderr[-1500:]}"


def test_table_covers_every_case() -> None:
    """Every builder appears in the table and every row has a builder."""
    cases = {c for c, _, _ in TABLE}
    assert cases == set(BUILDERS)
    assert {e for _, e, _ in TABLE} == {"probe", "load_image", "develop", "cli"}
    assert sys.version_info >= (3, 11)
