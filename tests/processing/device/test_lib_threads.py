"""OpenCV and BLAS run single-threaded inside the stack's frame-parallel
stages (the stages bring their own threads), results do not depend on it,
and `bench sr` compares both settings in one run."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from processing.device import backend
from processing.io.errors import ProcessingError
from processing.stack import pipeline as stackpipe
from processing.synth.synth import make_burst, write_burst

from .._sr_helpers import SHARED, texture

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _keep_cv2_threads():
    prev = cv2.getNumThreads()
    yield
    cv2.setNumThreads(prev)


def _blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"]


def test_frame_parallel_libraries_limits_and_restores() -> None:
    cv2.setNumThreads(2)
    before_blas = _blas_threads()
    with backend.frame_parallel_libraries():
        assert cv2.getNumThreads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert cv2.getNumThreads() == 2 and _blas_threads() == before_blas
    with pytest.raises(RuntimeError), backend.frame_parallel_libraries():
        raise RuntimeError("a failing stage")
    assert cv2.getNumThreads() == 2  # restored on errors too


def _stack(tmp_path, monkeypatch, lib: str) -> tuple[np.ndarray, list[int]]:
    monkeypatch.setenv("TERAPAN_DEVICE", "cpu")
    monkeypatch.setenv("TERAPAN_LIB_THREADS", lib)
    seen: list[int] = []
    res = stackpipe.process_stack(
        stackpipe.list_frames(tmp_path),
        2.0,
        upscale_model=False,
        progress=lambda f, m: seen.append(cv2.getNumThreads()),
    )
    assert res.metrics["library_threads"] == lib
    return res.image, seen


def test_results_do_not_depend_on_library_threads(tmp_path, monkeypatch) -> None:
    write_burst(make_burst(texture(96, 6), 5, 2.0, seed=6, noise=0.004), tmp_path)
    cv2.setNumThreads(2)
    one, seen_one = _stack(tmp_path, monkeypatch, "one")
    native, seen_native = _stack(tmp_path, monkeypatch, "native")
    assert np.array_equal(one, native)
    assert 1 in seen_one and set(seen_native) == {2}  # the limit was on during the frame stages
    assert cv2.getNumThreads() == 2  # and is lifted after the stack
    monkeypatch.setenv("TERAPAN_LIB_THREADS", "some")
    with pytest.raises(ProcessingError, match="TERAPAN_LIB_THREADS"):
        stackpipe.process_stack(stackpipe.list_frames(tmp_path), 2.0, upscale_model=False)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_bench_sr_compares_library_threads_in_one_run() -> None:
    cmd = [sys.executable, "-m", "processing", "bench", "sr", "--device", "cpu", "--megapixels", "0.3"]
    cmd += ["--frames", "3", "--scale", "2", "--threads", "2", "--lib-threads", "one,native", "--no-write"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    speed = [r for r in rows if r["bench"] == "sr-speed"]
    assert [r["library_threads"] for r in speed] == ["one", "native"]
    for r in speed:
        assert r["result_dtype"] == "uint16" and r["peak_rss_mb_child"] > 0 and r["seconds_total"] > 0
        host = sum(v for k, v in r["seconds"].items() if k in ("develop", "sharpness", "align", "color", "flow"))
        assert r["seconds_host_stages"] == pytest.approx(host, abs=2e-3) and r["seconds_device_stages"] == 0.0
    ratio = next(r for r in rows if r["bench"] == "sr-lib-threads")
    assert ratio["baseline"] == "one" and ratio["ratios"]["cpu:one"]["total"] == 1.0
    assert ratio["ratios"]["cpu:native"]["total"] > 0


@pytest.mark.parametrize("lib", ["one", "native"])
def test_stitching_runs_with_the_same_library_setting(monkeypatch, lib) -> None:
    from processing.stitch import pipeline as stitch

    seen: list[int] = []
    monkeypatch.setattr(stitch, "_stitch_files", lambda *a: seen.append(cv2.getNumThreads()) or "done")
    monkeypatch.setenv("TERAPAN_LIB_THREADS", lib)
    cv2.setNumThreads(2)
    assert stitch.stitch_files(["a.jpg"], "out.tif") == "done"
    assert seen == [1 if lib == "one" else 2] and cv2.getNumThreads() == 2
