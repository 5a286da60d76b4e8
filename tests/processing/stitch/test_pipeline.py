import json
from pathlib import Path

import numpy as np
import pytest

from processing.bench.stitch import read_rgba
from processing.io.imageio import write_image
from processing.stitch.pipeline import StitchParams, layout_from_json, render_region, stitch_files
from processing.synth.synth_pano import make_cylinder_views
from tests.processing._stitch_helpers import SHARED, texture


def test_stitch_synthetic_cylinder_wraps(tmp_path):
    photo = texture(200, 1300, seed=7)
    views, _, _ = make_cylinder_views(photo, n_views=7, overlap=0.4)
    # exposure differences between views
    paths = []
    for k, v in enumerate(views):
        p = tmp_path / f"v{k}.png"
        write_image(p, np.clip(v * (1.0 + 0.15 * (-1) ** k), 0, 1))
        paths.append(p)
    out = tmp_path / "pano.tif"
    res = stitch_files(paths, out, StitchParams(projection="cylindrical", wrap=True, block=256))
    assert res.placed == 7 and res.dropped == []
    rgb, alpha = read_rgba(out)
    assert rgb.shape[:2] == (res.height, res.width)
    rows = (alpha[:, 0] > 0) & (alpha[:, -1] > 0)
    assert rows.sum() > 0.5 * res.height
    edge = np.abs(rgb[rows, 0] - rgb[rows, -1]).mean()
    inner = np.abs(rgb[rows, res.width // 3] - rgb[rows, res.width // 3 + 1]).mean()
    assert edge < 2.5 * inner + 0.01
    # exposure compensated: brightness of alternating views evens out
    gains = np.array([c["gain"] for c in res.cameras]).mean(1)
    assert gains[1] / gains[0] > 1.15
    # the layout re-renders any rectangle alone
    lay = layout_from_json(res.layout_path)
    x0, y0 = res.width // 2, res.height // 4
    part, pa = render_region(lay, (x0, y0, x0 + 100, y0 + 60))
    assert np.abs(part - rgb[y0 : y0 + 60, x0 : x0 + 100]).max() < 2 / 255 + 1e-6
    assert json.loads(Path(res.layout_path).read_text())["canvas"]["wrap"] is True
    assert any(c["bbox"]["wraps"] for c in res.cameras)


def test_parrington_all_placed(tmp_path):
    d = SHARED / "panoramas" / "parrington"
    if not d.is_dir():
        pytest.skip("shared data absent")
    from processing.stitch.registration import load_placements

    files = sorted(d.glob("*.jpg"))
    params = StitchParams(projection="cylindrical", wrap=True, proxy_mp=0.2, nfeatures=1000, max_output_mp=0.6)
    res = stitch_files(files, tmp_path / "p.png", params, load_placements(d / "image_list.txt"))
    assert res.placed == 18 and not res.dropped
    rgb, alpha = read_rgba(tmp_path / "p.png")
    rows = (alpha[:, 0] > 0) & (alpha[:, -1] > 0)
    assert rows.mean() > 0.8
    edge = np.abs(rgb[rows, 0] - rgb[rows, -1]).mean()
    inner = np.abs(rgb[rows, 100] - rgb[rows, 101]).mean()
    assert edge < 2.5 * inner + 0.01
