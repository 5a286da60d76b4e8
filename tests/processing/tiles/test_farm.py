"""The farm: block jobs and region reduce jobs give dzsave's pyramid, tile by tile.

A small 360-degree panorama (a view straddles the wrap) is cut into many
blocks so every stage of the graph runs; the reference is dzsave of the
farm's composite exported as one file.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from processing.io.imageio import write_image
from processing.stitch.blend import Layer
from processing.stitch.blocks import export_composite, plan_farm, run_farm_job
from processing.stitch.pipeline import Layout, layout_to_json
from processing.stitch.project import Camera, footprint, make_canvas, rotation_from_ypr
from processing.tiles.blocks import FarmGrid
from processing.tiles.pyramid import PyramidParams, build_pyramid
from processing.tiles.reduce import is_done
from processing.tiles.workers import run_local
from tests.processing._stitch_helpers import texture

ROOT = Path(__file__).resolve().parents[3]


def _layout(
    tmp_path: Path, yaws=(-150.0, -60.0, 30.0, 120.0, 180.0), size=(200, 130), focal=150.0, response=False
) -> Path:
    cams, layers = [], []
    for k, y in enumerate(yaws):
        p = tmp_path / f"im{k}.png"
        write_image(p, texture(size[1], size[0], seed=k))
        cams.append((p, Camera.make(size[0], size[1], focal, rotation_from_ypr(y, 0, 0))))
    cv = make_canvas([c for _, c in cams], "cylindrical", wrap=True)
    for k, (p, c) in enumerate(cams):
        if response:  # a fitted camera response, gains and vignetting in linear light (response.py)
            r = (1.6 + 0.2 * k, -0.8, 0.6, -0.2)
            out = (1.8, -0.8, 0.6, -0.2)
            layers.append(
                Layer(str(p), c, footprint(c, cv), (1.3, 1.0, 0.8), (-0.2, 0.05) if k % 2 else (0, 0), 1.0, r, out)
            )
        else:
            layers.append(Layer(str(p), c, footprint(c, cv), (1.0, 1.0, 1.0)))
    return layout_to_json(Layout(cv, layers, 3, 64), tmp_path / "pano.layout.json")


def _files(pyr: Path) -> dict[str, bytes]:
    return {str(p.relative_to(pyr)): p.read_bytes() for p in sorted(pyr.rglob("*")) if p.is_file()}


def _reference(tmp_path: Path, layout_path: Path, block_px: int, params: PyramidParams) -> dict[str, bytes]:
    from processing.stitch.blocks import load_layout

    comp = export_composite(load_layout(layout_path), tmp_path / "composite.tif", block_px)
    build_pyramid(comp, tmp_path / "ref", params)
    return _files(tmp_path / "ref")


def _plan(tmp_path: Path, layout_path: Path, name: str, **kw) -> tuple[Path, dict]:
    work = tmp_path / name
    plan = plan_farm(layout_path, work, work / "pyramid", **kw)
    return work, plan


@pytest.mark.parametrize(("tile", "k", "response"), [(32, 2, False), (16, 4, False), (32, 2, True)])
def test_farm_pyramid_is_dzsave_of_the_composite(tmp_path, tile, k, response):
    fmt = "jpg"
    lp = _layout(tmp_path, response=response)
    work, plan = _plan(tmp_path, lp, "farm", tile_size=tile, overlap=1, block_tiles=k, format=fmt, quality=80)
    grid = FarmGrid.from_dict(plan["grid"])
    assert grid.n_stages() >= 3 and grid.stage_shape(0)[0] >= 8  # several blocks, several reduce stages
    recs = run_local(plan["jobs"], functools.partial(run_farm_job, work), workers=1, tmp_root=tmp_path / "tmp")
    assert all(r["ok"] for r in recs) and len(recs) == len(plan["jobs"])
    ref = _reference(tmp_path, lp, grid.block_px, PyramidParams(tile_size=tile, overlap=1, format=fmt, quality=80))
    got = _files(work / "pyramid")
    assert got.keys() == ref.keys()
    assert [n for n in ref if got[n] != ref[n]] == []
    # the edge bands are gone once their readers are done; each job's one-tile output stays
    assert not any((work / "bands").rglob("*_*.npy"))
    assert len(list((work / "bands").rglob("final.npy"))) == len(plan["jobs"]) - 1


def test_farm_pyramid_with_full_resolution_seams(tmp_path):
    """Proxy seam labels (1/6 scale) refined at full resolution (fine_seams.py):
    every block job applies the same overrides, so the farm's pyramid is still
    dzsave of the composite."""
    from processing.stitch.blend import SourceCache
    from processing.stitch.fine_seams import fine_seams
    from processing.stitch.pipeline import layout_from_json
    from processing.stitch.project import block_map, center_weight

    lay = layout_from_json(_layout(tmp_path))
    pc = lay.canvas.scaled(1 / 6)
    best = np.zeros((pc.height, pc.width), np.float32)
    lab = np.full(best.shape, -1, np.int16)
    for k, L in enumerate(lay.layers):
        mx, my, valid = block_map(L.cam, pc, 0, 0, pc.width, pc.height)
        w = center_weight(L.cam, mx, my, valid)
        lab[w > best] = k
        np.maximum(best, w, out=best)
    lay.labels = lab
    lay.fine = fine_seams(lay.layers, lay.canvas, lab, SourceCache())
    assert lay.fine is not None and lay.fine.patches
    lp = layout_to_json(lay, tmp_path / "fine.layout.json")
    assert layout_from_json(lp).fine is not None
    work, plan = _plan(tmp_path, lp, "farm", tile_size=32, overlap=1, block_tiles=2, format="jpg", quality=80)
    grid = FarmGrid.from_dict(plan["grid"])
    recs = run_local(plan["jobs"], functools.partial(run_farm_job, work), workers=1, tmp_root=tmp_path / "tmp")
    assert all(r["ok"] for r in recs)
    ref = _reference(tmp_path, lp, grid.block_px, PyramidParams(tile_size=32, overlap=1, format="jpg", quality=80))
    got = _files(work / "pyramid")
    assert got.keys() == ref.keys()
    assert [n for n in ref if got[n] != ref[n]] == []


def test_killed_block_job_is_rerun_alone_and_two_workers_match(tmp_path):
    lp = _layout(tmp_path, size=(400, 260), focal=300.0)
    kw = {"tile_size": 32, "overlap": 1, "block_tiles": 4, "format": "jpg"}
    one, plan = _plan(tmp_path, lp, "one", **kw)
    run_local(plan["jobs"], functools.partial(run_farm_job, one), workers=1, tmp_root=tmp_path / "t1")
    reference = _files(one / "pyramid")

    # two workers, separate processes and temporary folders; one block job SIGKILLed mid-way
    two, plan2 = _plan(tmp_path, lp, "two", **kw)
    grid = FarmGrid.from_dict(plan2["grid"])
    nc, nr = grid.stage_shape(0)
    victim = f"0_{nc // 2}_{nr // 2}"
    tile_dir = two / "pyramid" / "image_files" / str(grid.top)
    proc = subprocess.Popen(
        [sys.executable, "-m", "processing", "farm", "job", str(two), victim, "--slow-tiles", "0.2"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    deadline = time.monotonic() + 60
    while not (tile_dir.is_dir() and any(tile_dir.glob("*.jpg"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the block job ended before writing a tile"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not is_done(two, victim)
    written_before = set(p.name for p in tile_dir.glob("*.jpg"))
    assert 0 < len(written_before) < 16
    # the killed job alone, then everything else on two workers
    rec = run_local(
        plan2["jobs"], functools.partial(run_farm_job, two), workers=1, tmp_root=tmp_path / "a", only={victim}
    )
    assert [r["job"] for r in rec] == [victim]
    others = {j["id"] for j in plan2["jobs"]} - {victim}
    recs = run_local(
        plan2["jobs"], functools.partial(run_farm_job, two), workers=2, tmp_root=tmp_path / "b", only=others
    )
    assert {r["worker"] for r in recs} == {0, 1}
    assert _files(two / "pyramid") == reference


def test_partial_rerender_reuses_block_jobs(tmp_path):
    """One source image changes: only the blocks under it (and their ring) and the jobs above
    them run again, and the new version equals a whole farm render of the new layout."""
    import json

    from processing.stitch.blocks import plan_partial
    from processing.stitch.pipeline import layout_from_json

    lp = _layout(tmp_path, size=(400, 260), focal=300.0, yaws=(-150.0, -90.0, -30.0, 30.0, 90.0, 150.0))
    kw = {"tile_size": 32, "overlap": 1, "block_tiles": 2, "format": "jpg"}
    work, plan = _plan(tmp_path, lp, "v1", **kw)
    run_local(plan["jobs"], functools.partial(run_farm_job, work), workers=1, tmp_root=tmp_path / "t1")
    v1 = _files(work / "pyramid")
    # a new version of view 3 (yaw 30): same camera, new pixels
    write_image(tmp_path / "im3b.png", texture(260, 400, seed=42))
    d = json.loads(lp.read_text())
    d["images"][3]["path"] = str(tmp_path / "im3b.png")
    lp2 = tmp_path / "pano2.layout.json"
    lp2.write_text(json.dumps(d))
    full, plan_full = _plan(tmp_path, lp2, "full", **kw)
    run_local(plan_full["jobs"], functools.partial(run_farm_job, full), workers=1, tmp_root=tmp_path / "t2")
    expected = _files(full / "pyramid")
    fx0, fy0, fx1, fy1 = layout_from_json(lp2).layers[3].footprint
    jobs = plan_partial(work, lp2, tmp_path / "v2", work / "pyramid", (fx0, fy0, fx1 - fx0, fy1 - fy0))
    blocks = [j for j in jobs if j["stage"] == 0]
    assert 0 < len(blocks) < 0.7 * sum(1 for j in plan["jobs"] if j["stage"] == 0)
    run_local(jobs, functools.partial(run_farm_job, work), workers=2, tmp_root=tmp_path / "t3")
    got = _files(tmp_path / "v2")
    assert got.keys() == expected.keys()
    assert [k for k in expected if got[k] != expected[k]] == []
    assert got != v1 and _files(work / "pyramid") == v1  # the previous version is untouched


@pytest.mark.slow
def test_bench_farm_checks_its_pyramid_against_dzsave(tmp_path):
    """The benchmark's own proof: the farm's pyramid, tile by tile, against dzsave's."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "processing", "bench", "farm", "--gp", "0.002", "--workers", "2"]
    cmd += ["--block-tiles", "2", "--baseline", "--work", str(tmp_path / "w")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    cmp = res["farm_vs_dzsave"]
    assert cmp["identical"] and cmp["tiles"] > 20 and cmp["differing"] == cmp["missing"] == 0
    assert res["runs"][0]["block_jobs"] >= 4 and set(res["runs"][0]["jobs_per_worker"]) == {"0", "1"}
    assert not (tmp_path / "w").exists()  # the work folder goes unless --keep
