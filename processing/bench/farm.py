"""bench farm: block and reduce jobs on 1, 2, ... local workers against one render + dzsave.

A synthetic 360-degree panorama of --gp gigapixels (12 procedural views
round a cylinder, rendered at the scale that gives that area) is laid out
once; then for each worker count the farm's whole graph runs on that many
worker processes (one thread each, TERAPAN_THREADS=1's setting), and with
--baseline the single-job path runs too (render_to_file with one thread, then
build_pyramid's dzsave). Efficiency = CPU seconds of the single job / CPU
seconds of all block and reduce jobs. --sample N runs only N block jobs spread
over the panorama (for peak memory per job at sizes whose whole run does not
fit the time). --rates-file stores the measured rates for `manage.py plan`;
--model prints the Holmenkollen model (14,000 stacks, 2,000 GP) from them.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .common import emit


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gp", type=float, default=1.0, help="panorama size in gigapixels")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--block-tiles", type=int, default=8)
    p.add_argument("--baseline", action="store_true", help="also time one render_to_file + dzsave job")
    p.add_argument("--sample", type=int, default=0, help="run only N block jobs (memory per job)")
    p.add_argument("--work", default="/tmp/terapan-bench-farm", help="work folder (deleted at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--rates-file", default="", help="store the measured rates here (JSON)")
    p.add_argument("--model", default="", help="print the Holmenkollen model from this rates file and exit")
    p.add_argument("--stack-s", type=float, default=0.0, help="seconds of one stack job (for the model)")
    p.add_argument("--layout-s-per-stack", type=float, default=0.0, help="layout job seconds per stack")
    p.add_argument("--stack-s-gpu", type=float, default=0.0, help="seconds of one stack job on a GPU worker (model)")


def synthetic_layout(work: Path, gp: float, n_views: int = 12, size: tuple[int, int] = (1600, 1000)) -> Path:
    """Views round a cylinder, canvas scaled to GP gigapixels; returns the layout file."""
    from ..io.imageio import write_image
    from ..stitch.blend import Layer
    from ..stitch.pipeline import Layout, layout_to_json
    from ..stitch.project import Camera, footprint, make_canvas, rotation_from_ypr

    work.mkdir(parents=True, exist_ok=True)
    w, h = size
    focal = float(w)
    cams = [Camera.make(w, h, focal, rotation_from_ypr(360.0 * k / n_views, 0.0, 0.0)) for k in range(n_views)]
    probe = make_canvas(cams, "cylindrical", focal, True)
    s = focal * math.sqrt(gp * 1e9 / (probe.width * probe.height))
    canvas = make_canvas(cams, "cylindrical", s, True)
    rng = np.random.default_rng(7)
    layers = []
    for k, cam in enumerate(cams):
        img = np.zeros((h, w, 3), np.float32)
        for octave in range(1, 8):  # value noise: detail at every scale
            g = rng.random((max(2, h >> (8 - octave)), max(2, w >> (8 - octave)), 3)).astype(np.float32)
            img += cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) / (1.6**octave)
        img = np.clip(img / img.max(), 0, 1)
        p = work / f"view{k:02d}.png"
        write_image(p, img)
        layers.append(Layer(str(p), cam, footprint(cam, canvas)))
    return layout_to_json(Layout(canvas, layers, 6, 1024), work / "pano.layout.json")


def _baseline_job(layout_path: str, out: str, _jid: str) -> dict[str, Any]:
    from ..stitch.blocks import load_layout
    from ..stitch.pipeline import render_to_file
    from ..tiles.pyramid import build_pyramid

    t0 = time.perf_counter()
    comp = Path(out) / "composite.tif"
    render_to_file(load_layout(layout_path), comp, threads=1)
    t1 = time.perf_counter()
    info = build_pyramid(comp, Path(out) / "pyramid")
    return {"render_s": round(t1 - t0, 2), "dzsave_s": round(time.perf_counter() - t1, 2), "tiles": info["tiles"]}


def compare_pyramids(farm: Path, ref: Path) -> dict[str, Any]:
    """Tile by tile, byte for byte: the farm's pyramid against dzsave's of the same composite."""
    got = {p.relative_to(farm): p for p in farm.rglob("*.jpg")}
    want = {p.relative_to(ref): p for p in ref.rglob("*.jpg")}
    common = got.keys() & want.keys()
    differ = sum(1 for k in common if got[k].read_bytes() != want[k].read_bytes())
    return {
        "tiles": len(want),
        "missing": len(want.keys() - got.keys()),
        "extra": len(got.keys() - want.keys()),
        "differing": differ,
        "identical": differ == 0 and got.keys() == want.keys(),
    }


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def run_farm(layout_path: Path, work: Path, workers: int, block_tiles: int, sample: int = 0) -> dict[str, Any]:
    from ..stitch.blocks import plan_farm, run_farm_job
    from ..tiles.workers import run_local

    shutil.rmtree(work, ignore_errors=True)
    plan = plan_farm(layout_path, work, work / "pyramid", block_tiles=block_tiles)
    only = None
    blocks = [j["id"] for j in plan["jobs"] if j["stage"] == 0]
    if sample:
        only = {blocks[int(i)] for i in np.linspace(0, len(blocks) - 1, min(sample, len(blocks)))}
    t0 = time.perf_counter()
    recs = run_local(plan["jobs"], functools.partial(run_farm_job, work), workers, work / "tmp", only, threads=1)
    wall = time.perf_counter() - t0
    blk = [r for r in recs if r["job"].startswith("0_")]
    red = [r for r in recs if not r["job"].startswith("0_")]
    px = sum(r["result"].get("pixels", 0) for r in blk)
    out = {
        "workers": workers,
        "jobs": len(recs),
        "block_jobs": len(blk),
        "reduce_jobs": len(red),
        "wall_s": round(wall, 1),
        "block_cpu_s": round(sum(r["cpu_s"] for r in blk), 1),
        "reduce_cpu_s": round(sum(r["cpu_s"] for r in red), 1),
        "block_mp_per_cpu_s": round(px / 1e6 / max(1e-9, sum(r["cpu_s"] for r in blk)), 3),
        "block_peak_mb": max((r["peak_rss_mb"] for r in blk), default=0.0),
        "reduce_peak_mb": max((r["peak_rss_mb"] for r in red), default=0.0),
        "reduce_cpu_s_mean": round(sum(r["cpu_s"] for r in red) / len(red), 3) if red else 0.0,
        "jobs_per_worker": {str(w): sum(1 for r in recs if r["worker"] == w) for w in range(workers)},
    }
    if not sample:
        out["pyramid_bytes"] = _dir_bytes(work / "pyramid")
        out["tiles"] = sum(1 for _ in (work / "pyramid").rglob("*.jpg"))
    return out


def run(args: argparse.Namespace) -> int:
    if args.model:
        return _model(args)
    from ..stitch.blocks import load_layout

    work = Path(args.work)
    counts = [int(x) for x in args.workers.split(",") if x]
    t0 = time.perf_counter()
    lp = synthetic_layout(work / "src", args.gp)
    cv = load_layout(lp).canvas
    result: dict[str, Any] = {
        "bench": "farm",
        "gigapixels": round(cv.width * cv.height / 1e9, 3),
        "canvas": [cv.width, cv.height],
        "block_tiles": args.block_tiles,
        "threads_per_job": 1,
        "setup_s": round(time.perf_counter() - t0, 1),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "runs": [],
    }
    try:
        for n in counts:
            r = run_farm(lp, work / f"farm{n}", n, args.block_tiles, args.sample)
            result["runs"].append(r)
            emit({"partial": r})
            if not (args.baseline and n == counts[-1] and not args.sample):
                shutil.rmtree(work / f"farm{n}", ignore_errors=True)  # the last is compared below
        if args.baseline:
            from ..tiles.workers import run_local

            bdir = work / "baseline"
            shutil.rmtree(bdir, ignore_errors=True)
            bdir.mkdir(parents=True)
            t1 = time.perf_counter()
            rec = run_local(
                [{"id": "single", "after": []}],
                functools.partial(_baseline_job, str(lp), str(bdir)),
                1,
                bdir / "tmp",
                threads=1,
            )[0]
            result["baseline"] = {
                "wall_s": round(time.perf_counter() - t1, 1),
                "cpu_s": rec["cpu_s"],
                "peak_rss_mb": rec["peak_rss_mb"],
                **rec["result"],
            }
            if counts and not args.sample:
                result["farm_vs_dzsave"] = compare_pyramids(work / f"farm{counts[-1]}" / "pyramid", bdir / "pyramid")
            full = [r for r in result["runs"] if not args.sample]
            for r in full:
                r["efficiency_vs_single_job"] = round(rec["cpu_s"] / (r["block_cpu_s"] + r["reduce_cpu_s"]), 3)
                r["speedup_vs_single_job"] = round(result["baseline"]["wall_s"] / r["wall_s"], 3)
        full = [r for r in result["runs"] if r.get("tiles")]
        if len(full) >= 2:
            result["speedup_vs_one_worker"] = {
                str(r["workers"]): round(full[0]["wall_s"] / r["wall_s"], 3) for r in full
            }
        if args.rates_file:
            _store_rates(Path(args.rates_file), result, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    emit(result)
    return 0


def _store_rates(path: Path, result: dict[str, Any], args: argparse.Namespace) -> None:
    from ..io.atomic import atomic_path

    data = json.loads(path.read_text()) if path.is_file() else {}
    rates = data.setdefault("rates", {})
    runs = result["runs"]
    one = runs[0]
    rates["block_mp_per_s"] = one["block_mp_per_cpu_s"]
    rates["block_peak_mb"] = max(r["block_peak_mb"] for r in runs)
    if one["reduce_jobs"]:
        rates["reduce_cpu_s"] = one["reduce_cpu_s_mean"]
        rates["reduce_peak_mb"] = max(r["reduce_peak_mb"] for r in runs)
    if one.get("pyramid_bytes"):
        rates["tile_bytes_per_mp"] = round(one["pyramid_bytes"] / (result["gigapixels"] * 1e3) * 3 / 4, 1)
    if args.stack_s:
        rates["stack_s"] = args.stack_s
    if args.layout_s_per_stack:
        rates["layout_s_per_stack"] = args.layout_s_per_stack
    data.setdefault("sources", {})["bench"] = {"gigapixels": result["gigapixels"], "at": time.strftime("%FT%T")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _model(args: argparse.Namespace) -> int:
    from ..tiles.estimate import estimate, grid_for_gigapixels, scaling

    rates = json.loads(Path(args.model).read_text())["rates"]
    if args.stack_s:
        rates["stack_s"] = args.stack_s
    if args.layout_s_per_stack:
        rates["layout_s_per_stack"] = args.layout_s_per_stack
    if args.stack_s_gpu:
        rates["stack_s_gpu"] = args.stack_s_gpu
    grid = grid_for_gigapixels(2000.0, block_tiles=args.block_tiles)
    counts = [1, 8, 64, 512, 4096]
    out = {"bench": "farm-model", "panorama": "Holmenkollen (modelled)", "stacks": 14000, "rates": rates}
    out["cpu_workers"] = scaling(grid, rates, counts, stacks=14000)
    if rates.get("stack_s_gpu"):
        out["cpu_workers_each_with_a_gpu"] = [{**estimate(grid, rates, n, n, 14000), "workers": n} for n in counts]
    emit(out)
    return 0
