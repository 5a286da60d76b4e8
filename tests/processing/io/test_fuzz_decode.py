"""Fuzzing the decode entry points (imageio.probe/load_image, develop_raw).

Hypothesis mutates small valid seeds (byte flips, truncations, duplicated
chunks, header fields set to extremes) and a persistent worker subprocess
decodes each mutant. Contract: every mutant is either decoded to a finite
float image or refused with an InputError naming the file; anything else -
another exception, a crash in C code (the worker dies by a signal) or a hang
(per-example timeout) - fails the test, and the offending bytes are kept.
Bounded: a fixed number of examples per seed, about 30 s in all.
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._security_helpers import PY, ROOT, SHARED, texture, write_jpeg, write_png, write_tiff

EXAMPLE_TIMEOUT_S = float(os.environ.get("FUZZ_EXAMPLE_TIMEOUT", 20))
STATS: dict[str, dict[str, int]] = {}  # seed -> outcome -> count (printed with -s)
KEEP = Path(os.environ.get("FUZZ_KEEP_DIR", tempfile.gettempdir())) / "terapan-fuzz-failures"


class Worker:
    """A decoding subprocess; restarted after a crash or a hang."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
        code = "from tests.processing._security_helpers import fuzz_worker_main; fuzz_worker_main()"
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        return subprocess.Popen(
            [PY, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, bufsize=1,
        )  # fmt: skip

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-1500:].decode("utf-8", "replace")

    def ask(self, path: Path, entry: str) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"path": str(path), "entry": entry}) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + EXAMPLE_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                self.proc = None
                return f"HANG: no answer within {EXAMPLE_TIMEOUT_S} s"
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if ready:
                line = proc.stdout.readline()
                if line:
                    return json.loads(line)["result"]
            if proc.poll() is not None:
                self.proc = None
                return f"CRASH: worker died with {proc.returncode}: {self._stderr_tail()}"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# ----------------------------------------------------------------- seeds
def _encode(kind: str, img: np.ndarray) -> bytes:
    buf = Path(tempfile.mkstemp(suffix=f".{kind}")[1])
    try:
        {"jpg": write_jpeg, "png": write_png, "tif": write_tiff}[kind](buf, img)
        return buf.read_bytes()
    finally:
        buf.unlink()


def _shared_crop() -> np.ndarray | None:
    src = SHARED / "bursts" / "maitek_lowlight" / "1.jpg"
    if not src.is_file():
        return None
    from PIL import Image

    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))[300:364, 500:580].copy()


def _seeds() -> dict[str, tuple[str, bytes | None]]:
    """name -> (entry, bytes or None when the shared data is absent)."""
    own = texture(48, 64, seed=11)
    crop = _shared_crop()
    kdc = SHARED / "raw" / "RAW_KODAK_DC50.KDC"
    tif_z = io.BytesIO()
    import tifffile

    tifffile.imwrite(tif_z, own, photometric="rgb", compression="zlib", rowsperstrip=8)
    return {
        "own.jpg": ("image", _encode("jpg", own)),
        "own.png": ("image", _encode("png", own)),
        "own.tif": ("image", tif_z.getvalue()),
        "shared.jpg": ("image", _encode("jpg", crop) if crop is not None else None),
        "shared.png": ("image", _encode("png", crop) if crop is not None else None),
        "shared.kdc": ("raw", kdc.read_bytes() if kdc.is_file() else None),
    }


SEEDS = _seeds()
# Examples per seed: about 30 s in all on a loaded 2-core machine.
EXAMPLES = {"raw": int(os.environ.get("FUZZ_RAW_EXAMPLES", 60)), "image": int(os.environ.get("FUZZ_EXAMPLES", 150))}


# ------------------------------------------------------------- mutations
EXTREMES = [b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\x00\x01", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"]

op = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),  # xor one byte
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("dup"), st.floats(0, 1), st.integers(1, 2048)),  # repeat a chunk in place
    st.tuples(st.just("header"), st.integers(0, 127), st.sampled_from(range(len(EXTREMES)))),
    st.tuples(st.just("zero"), st.floats(0, 1), st.integers(1, 512)),  # blank a run
)


def mutate(data: bytes, ops: list[tuple[str, float, int]]) -> bytes:
    b = bytearray(data)
    for kind, where, arg in ops:
        n = len(b)
        if n == 0:
            break
        if kind == "header":
            pos = min(int(where), n - 1)
            v = EXTREMES[arg]
            b[pos : pos + len(v)] = v
            continue
        pos = min(int(where * n), n - 1)
        if kind == "flip":
            b[pos] ^= arg
        elif kind == "truncate":
            del b[max(1, pos) :]
        elif kind == "dup":
            b[pos:pos] = b[pos : pos + arg]
        elif kind == "zero":
            b[pos : pos + arg] = bytes(len(b[pos : pos + arg]))
    return bytes(b)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC so mutations reach past the CRC check into zlib/libpng."""
    import struct
    import zlib

    b = bytearray(data)
    i = 8
    while i + 8 <= len(b):
        (length,) = struct.unpack(">I", b[i : i + 4])
        end = i + 8 + length
        if end + 4 > len(b):
            break
        b[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(b[i + 4 : end])) & 0xFFFFFFFF)
        i = end + 4
    return bytes(b)


def _fuzz(worker: Worker, name: str, ops: list[tuple[str, float, int]], fix_crc: bool, tmp: Path) -> None:
    entry, data = SEEDS[name]
    assert data is not None
    blob = mutate(data, ops)
    if fix_crc and name.endswith(".png"):
        blob = fix_png_crcs(blob)
    path = tmp / f"mutant{Path(name).suffix}"
    path.write_bytes(blob)
    result = worker.ask(path, entry)
    STATS.setdefault(name, {}).setdefault(result, 0)
    STATS[name][result] += 1
    if result not in ("ok", "InputError"):
        KEEP.mkdir(parents=True, exist_ok=True)
        kept = KEEP / f"{Path(name).stem}-{abs(hash(blob)) % 10**8}{Path(name).suffix}"
        kept.write_bytes(blob)
        raise AssertionError(f"{name} mutated by {ops} (CRCs fixed: {fix_crc}): {result} (input kept as {kept})")


@pytest.mark.parametrize("name", list(SEEDS))
def test_fuzz_decode(name: str, worker: Worker) -> None:
    entry, data = SEEDS[name]
    if data is None:
        pytest.skip(f"seed {name} needs ../shared/data")
    tmp = Path(tempfile.mkdtemp(prefix="terapan-fuzz-"))
    # The seed itself must decode: otherwise the fuzzing proves nothing.
    (tmp / f"seed{Path(name).suffix}").write_bytes(data)
    assert worker.ask(tmp / f"seed{Path(name).suffix}", entry) == "ok"

    @settings(
        max_examples=EXAMPLES[entry],
        deadline=None,  # the worker enforces EXAMPLE_TIMEOUT_S per example
        derandomize=True,  # the same examples on every run (CI stays stable)
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ops=st.lists(op, min_size=1, max_size=4), fix_crc=st.booleans())
    def run(ops: list[tuple[str, float, int]], fix_crc: bool) -> None:
        _fuzz(worker, name, ops, fix_crc, tmp)

    try:
        run()
        print(f"fuzz {name}: {STATS.get(name)}")
    finally:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def test_mutations_change_bytes() -> None:
    data = bytes(range(200))
    assert mutate(data, [("truncate", 0.5, 0)]) == data[:100]
    assert mutate(data, [("flip", 0.0, 1)])[0] == 1
    assert len(mutate(data, [("dup", 0.5, 10)])) == 210
    assert mutate(data, [("header", 4, 1)])[4:6] == b"\xff\xff"
    assert mutate(data, [("zero", 0.5, 3)])[100:103] == b"\0\0\0"
    png = _encode("png", texture(8, 8))
    assert fix_png_crcs(png) == png
