"""`python -m processing bench fusion` prints one JSON object with per-case
figures and a summary (one tiny case here; the evaluation itself is docs/sr.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "sr" / "Set14" / "lenna.png").is_file(), reason="shared SR photos not present")
def test_bench_fusion_one_case_rgb_and_raw() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["--photos", "lenna", "--noise", "0.02", "--frames", "6", "--max-side", "192", "--raw"]
    r = subprocess.run(
        [sys.executable, "-m", "processing", "bench", "fusion", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["bench"] == "fusion" and len(out["cases"]) + len(out["failed"]) == 1
    case = out["cases"][0]
    for key in ("bicubic", "median", "seed_tuned", "default"):
        assert 10 < case[key]["psnr"] < 60 and 0 < case[key]["ssim"] <= 1
    # The tuned seed is never below its own untuned median (amount 0 is a candidate).
    assert case["seed_tuned"]["psnr"] >= case["median"]["psnr"]
    assert case["gain_over_seed_db"] == pytest.approx(case["default"]["psnr"] - case["seed_tuned"]["psnr"], abs=2e-3)
    assert out["summary"]["cases"] == 1 and "min_gain_over_seed_db" in out["summary"]
    raw = out["raw_cases"][0]
    assert raw["raw"] and raw["gain_bayer_over_develop_db"] == pytest.approx(
        raw["bayer"]["psnr"] - raw["develop_then_fuse"]["psnr"], abs=2e-3
    )
