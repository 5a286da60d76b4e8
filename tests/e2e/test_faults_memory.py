"""Issue 15, fault injection: images that would take gigabytes once decoded.

Valid, tiny PNGs (zeros compress ~1000:1) that declare 15000 x 15000 16-bit
RGBA (225 MP: under the pixel limit, 4.2 GiB decoded). Each case runs in a
child process whose own peak memory (VmHWM) is measured, through the same
code as `python -m processing bench limits`. The decoders refuse the file
from the header; `stack` drops it beside good frames and names it; the import
scan reads headers only; a stack whose frames each pass but together cannot
fit the job's memory cap is refused with the figures, before decoding.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from processing.bench.limits import estimate_case, probe_case, scan_case, stack_case, zero_png

pytestmark = pytest.mark.e2e

PEAK_LIMIT_MB = 500


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:  # noqa: ANN001
    return zero_png(tmp_path_factory.mktemp("bomb") / "huge16.png", 15000, 15000)


def test_decoders_refuse_from_the_header(bomb: Path) -> None:
    out = probe_case(bomb)
    err = out["error"]
    assert err.startswith("InputError") and str(bomb) in err
    assert "15000 x 15000 x 4 channels of 16 bits" in err and "refused before decoding" in err
    assert out["peak_mb"] < PEAK_LIMIT_MB, out
    print(
        f"\n15000x15000 16-bit RGBA PNG ({bomb.stat().st_size / 1e6:.1f} MB): refused, child peak {out['peak_mb']} MB"
    )


def test_stack_drops_the_bomb_and_names_it(bomb: Path, tmp_path: Path) -> None:
    out = stack_case(bomb, tmp_path / "stack")
    assert "error" not in out, out.get("error")
    huge = next(f for f in out["frames"] if f["file"] == "b_huge.png")
    assert "refused before decoding" in huge["reason"]
    assert out["peak_mb"] < PEAK_LIMIT_MB, out
    print(f"stack of 2 good frames and the bomb under a 16 GiB cap: dropped and named, child peak {out['peak_mb']} MB")


def test_import_scan_reads_headers_only(bomb: Path, tmp_path: Path) -> None:
    out = scan_case(bomb, tmp_path / "capture")
    assert "error" not in out, out.get("error")
    assert len(out["skipped"]) == 2 and all(s and "refused before decoding" in s for s in out["skipped"]), out
    assert out["peak_mb"] < PEAK_LIMIT_MB, out
    print(f"import plan of two such files: both skipped from the header, child peak {out['peak_mb']} MB")


def test_stack_that_cannot_fit_the_cap_is_refused_with_the_figures(tmp_path: Path) -> None:
    # Each 8000 x 8000 8-bit RGB frame passes on its own (64 MP); fusing three at x2 cannot fit 3 GiB.
    out = estimate_case(tmp_path / "estimate")
    err = out.get("error", "")
    assert err.startswith("InputError") and "GiB" in err and "refused before decoding" in err, out
    assert "3 frames of 8000 x 8000" in err
    assert out["peak_mb"] < PEAK_LIMIT_MB, out
    print(f"3 x 8000x8000 at x2 under a 3 GiB cap: {err.split(': ', 2)[-1]}; child peak {out['peak_mb']} MB")
