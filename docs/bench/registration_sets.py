"""Registration on the shared photo sets: focal, its source, pair RMS, and for
durlach the cameras against the Hugin project beside the set (issue 17,
docs/stitch.md "Terapan against Hugin").

PYTHONPATH=. python docs/bench/registration_sets.py WORK [SET ...] [--render SET,...]
(from the repository root; sets: durlach, parrington, budapest, weir,
exposure_error; default all). Stitches each set as ``bench stitch`` does
(its projection, allow_partial), without rendering unless named in
--render; a rendered set also gets Terapan's ghost measure
(stitch_measures.seam_measures at hugin_compare's sampling, Terapan only).
One JSON line per set.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from processing.bench.hugin_cameras import compare_cameras
from processing.bench.stitch import PHOTO_SETS, SHARED, _files
from processing.bench.stitch_measures import seam_measures, shrink, terapan_layers, to_float
from processing.stitch.pipeline import StitchParams, layout_from_json, stitch_files
from processing.stitch.registration import load_placements

MEASURE_MP = 8.0  # as processing/bench/hugin_compare.py


def ghost(out: Path, layout_path: str) -> dict:
    from processing.bench.hugin_compare import _read_rgba

    layout = layout_from_json(layout_path)
    cv = layout.canvas
    a = _read_rgba(out)
    f = float(np.median([L.cam.focal for L in layout.layers]))
    r = min(cv.su / f, math.sqrt(MEASURE_MP * 1e6 / (cv.width * cv.height)) * cv.su / f)
    pc, layers = terapan_layers(layout, r * f / cv.su)
    o_rgb, o_alpha = to_float(shrink(a, (pc.width, pc.height)))
    return seam_measures(o_rgb, o_alpha, layers, wrap=cv.wrap)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("sets", nargs="*", default=list(PHOTO_SETS))
    ap.add_argument("--render", default="")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        d = SHARED / "panoramas" / name
        placements = load_placements(d / "image_list.txt") if name == "parrington" else None
        params = StitchParams(**PHOTO_SETS[name], allow_partial=True)
        render = name in args.render.split(",")
        out = work / f"{name}.tif"
        res = stitch_files(_files(d), out, params, placements, render=render)
        foc = [c["focal"] for c in res.cameras]
        rec_f = {c["file"]: round(c["focal"], 1) for c in res.cameras} if len(foc) <= 6 else None
        rec: dict = {
            "set": name,
            "placed": res.placed,
            "total": res.total,
            "pair_rms_px": round(res.rms_px, 3),
            "focal_median_px": round(float(np.median(foc)), 1),
            "focal_source": res.focal_source,
            "focals": rec_f,
            "layout": res.layout_path,
        }
        pto = d / "panorama_hugin_durlach.pto"
        if name == "durlach" and pto.is_file():
            cams = compare_cameras(res.layout_path, pto)
            rec["vs_hugin_project"] = {k: cams[k] for k in ("rms_deg", "median_deg", "worst_image_deg") if k in cams}
            rec["P1060388_deg"] = cams["per_image_deg"].get("P1060388.JPG")
            rec["per_image_deg"] = cams["per_image_deg"]
        if render:
            rec["ghost"] = ghost(out, res.layout_path)
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
