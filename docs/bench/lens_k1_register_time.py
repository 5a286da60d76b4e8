"""Registration seconds with and without k1, alternated (docs/stitch.md).

PYTHONPATH=. python docs/bench/lens_k1_register_time.py   (from the repository root)
"""

import json
import time

from processing.bench.stitch import SHARED
from processing.stitch.pipeline import StitchParams, list_images, stitch_files
from processing.stitch.registration import load_placements

d = SHARED / "panoramas" / "parrington"
files = list_images(d, "*.jpg")
for _rep in range(2):
    for k1 in (False, True):
        p = StitchParams(projection="cylindrical", gain_compensation=False, seams="voronoi", lens_k1=k1)
        t = time.process_time()
        res = stitch_files(
            files, "/tmp/lens_k1_register_time.tif", p, load_placements(d / "image_list.txt"), render=False
        )
        print(
            json.dumps(
                {
                    "lens_k1": k1,
                    "register_s": round(res.timings["register"], 2),
                    "cpu_s": round(time.process_time() - t, 2),
                    "pair_rms_px": round(res.rms_px, 3),
                }
            )
        )
