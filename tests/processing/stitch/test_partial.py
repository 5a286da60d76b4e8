"""A failed panorama fails: too few images in the main component -> an error
naming the dropped images (CLI: exit 2), unless allow_partial."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processing.io.imageio import write_image
from processing.stitch.pipeline import IncompletePanorama, StitchParams, stitch_files
from processing.synth.synth_pano import make_cylinder_views
from tests.processing._stitch_helpers import texture

ROOT = Path(__file__).resolve().parents[3]


def _set(tmp_path: Path, n_blank: int) -> list[Path]:
    views, _, _ = make_cylinder_views(texture(160, 1200, seed=11), n_views=8, overlap=0.4)
    paths = []
    for k, v in enumerate(views[:2]):
        paths.append(tmp_path / f"v{k}.png")
        write_image(paths[-1], v)
    for k in range(n_blank):  # featureless: matches nothing
        paths.append(tmp_path / f"blank{k}.png")
        write_image(paths[-1], np.full_like(views[0], 0.3 + 0.1 * k))
    return paths


def test_too_few_joined_raises_naming_the_dropped(tmp_path):
    paths = _set(tmp_path, 3)
    out = tmp_path / "pano.png"
    out.write_bytes(b"previous result")
    with pytest.raises(IncompletePanorama) as e:
        stitch_files(paths, out, StitchParams(projection="cylindrical", wrap=False))
    msg = str(e.value)
    assert "only 2 of 5" in msg and all(f"blank{k}.png" in msg for k in range(3)), msg
    assert "v0.png" not in msg
    assert out.read_bytes() == b"previous result"  # nothing already made is lost
    res = stitch_files(paths, out, StitchParams(projection="cylindrical", wrap=False, allow_partial=True))
    assert res.placed == 2 and len(res.dropped) == 3


def test_share_is_configurable(tmp_path):
    paths = _set(tmp_path, 1)  # 2 of 3 join
    stitch_files(paths, tmp_path / "a.png", StitchParams(projection="cylindrical", wrap=False))
    with pytest.raises(IncompletePanorama):
        stitch_files(paths, tmp_path / "b.png", StitchParams(projection="cylindrical", wrap=False, min_share=0.9))


def test_cli_exits_non_zero_unless_allow_partial(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    _set(d, 3)
    cmd = [sys.executable, "-m", "processing", "stitch", str(d), "-o", str(tmp_path / "p.png")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "blank0.png" in r.stderr and "--allow-partial" in r.stderr
    assert not (tmp_path / "p.png").exists()
    r = subprocess.run([*cmd, "--allow-partial"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").is_file()
