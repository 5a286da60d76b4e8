"""python -m processing farm plan|job|run: render and tile a panorama as block and reduce jobs.

farm plan LAYOUT.json WORK --pyramid DIR   the job graph (WORK/plan.json)
farm job WORK ID                           one job (as an RQ worker runs it)
farm run WORK --workers N                  every job on N local worker slots
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    pl = sub.add_parser("plan", help="write WORK/plan.json for a saved layout")
    pl.add_argument("layout", help="<panorama>.layout.json written by the stitcher")
    pl.add_argument("work", help="work folder (shared by every worker)")
    pl.add_argument("--pyramid", required=True, help="pyramid staging folder (shared by every worker)")
    pl.add_argument("--tile-size", type=int, default=254)
    pl.add_argument("--overlap", type=int, default=1)
    pl.add_argument("--block-tiles", type=int, default=8, help="block side in tiles (a power of two)")
    pl.add_argument("--format", choices=("jpg",), default="jpg")
    pl.add_argument("--quality", type=int, default=85)
    jb = sub.add_parser("job", help="run one job of the plan")
    jb.add_argument("work")
    jb.add_argument("id", help="STAGE_COL_ROW")
    jb.add_argument("--slow-tiles", type=float, default=0.0, help="pause (s) after each tile written")
    rn = sub.add_parser("run", help="run every job on local worker slots")
    rn.add_argument("work")
    rn.add_argument("--workers", type=int, default=2)
    rn.add_argument("--threads", type=int, default=1, help="threads per job")


def run(args: argparse.Namespace) -> int:
    from ..stitch.blocks import plan_farm, run_farm_job

    if args.action == "plan":
        try:
            plan = plan_farm(
                args.layout,
                args.work,
                args.pyramid,
                tile_size=args.tile_size,
                overlap=args.overlap,
                block_tiles=args.block_tiles,
                format=args.format,
                quality=args.quality,
            )
        except ValueError as e:
            raise InputError(args.layout, str(e)) from e
        print(json.dumps({"jobs": len(plan["jobs"]), "grid": plan["grid"]}))
    elif args.action == "job":
        print(json.dumps(run_farm_job(args.work, args.id, tile_delay=args.slow_tiles)))
    else:
        from ..tiles.blocks import read_plan
        from ..tiles.workers import run_local

        work = Path(args.work)
        jobs = read_plan(work)["jobs"]
        recs = run_local(jobs, functools.partial(run_farm_job, work), workers=args.workers, threads=args.threads)
        print(json.dumps({"jobs": len(recs), "cpu_s": round(sum(r["cpu_s"] for r in recs), 2)}))
    return 0
