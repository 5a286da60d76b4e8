"""Why P1060388 of durlach sits 5 degrees from Hugin's placement (docs/stitch.md).

PYTHONPATH=. python docs/bench/durlach_p1060388.py HUGIN_PROJECT.pto   (from the repository root)

Registers durlach as the stitcher does (default parameters), lists the pairs
the registration keeps for P1060388, then matches P1060388 with every other
image (the registration's own match_pair and thresholds) and gives, for
each accepted pair, the median angle between its matched rays through
Terapan's cameras and through Hugin's (the project given). One JSON line.
"""

import json
import sys
from pathlib import Path

import numpy as np

from processing.bench.hugin import hugin_image_rays, read_pto
from processing.bench.stitch import SHARED
from processing.io.imageio import load_image
from processing.stitch.pipeline import StitchParams, list_images
from processing.stitch.project import camera_rays
from processing.stitch.registration import detect, exif_focal_px, match_pair, proxy_gray, register

p = StitchParams()
files = list_images(SHARED / "panoramas" / "durlach", "P*.JPG")
names = [f.name for f in files]
feats, pf = [], []
for f in files:
    img, info = load_image(f)
    g, s = proxy_gray(img, p.proxy_mp)
    ft = detect(g, s, info.width, info.height, p.nfeatures)
    ft.exif_focal = exif_focal_px(f, info.width, info.height)
    feats.append(ft)
    pf.append(s)
reg = register(feats, names, None, proxy_factors=pf, estimate_k1=p.lens_k1)
pto = read_pto(Path(sys.argv[1]))
hn = [Path(im["n"]).name for im in pto.images]
k = names.index("P1060388.JPG")


def median_deg(rays, i, j, pi, pj):
    return round(float(np.degrees(np.median(np.arccos(np.clip((rays(i, pi) * rays(j, pj)).sum(1), -1, 1))))), 3)


def ours(i, q):
    return camera_rays(reg.cameras[i], q[:, 0], q[:, 1])


def hugin(i, q):
    return hugin_image_rays(pto, hn.index(names[i]), q[:, 0], q[:, 1])


kept = sorted(names[q.j if q.i == k else q.i] for q in reg.pairs if k in (q.i, q.j))
pairs = {}
for j in range(len(files)):
    if j == k:
        continue
    m = match_pair(
        feats[k], feats[j], k, j, p.ratio, proxy_factor=pf[k], min_inliers=p.min_inliers, conf_thresh=p.conf_thresh
    )
    if m is not None:
        pairs[names[j]] = {
            "inliers": m.n_inliers,
            "kept": names[j] in kept,
            "median_deg_terapan_cameras": median_deg(ours, k, j, m.pi, m.pj),
            "median_deg_hugin_cameras": median_deg(hugin, k, j, m.pi, m.pj),
        }
print(json.dumps({"image": names[k], "kept_pairs": kept, "accepted_matches": pairs}))
