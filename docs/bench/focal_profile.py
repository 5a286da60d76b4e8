"""Pair RMS (px) of a shared photo set with the focal held at given values
(issue 17, docs/stitch.md: is the focal of a set without EXIF pinned down?).

PYTHONPATH=. python docs/bench/focal_profile.py SET [FOCAL ...]   (from the repository root)

Features and matches as the stitcher makes them (default parameters), the
main component's pairs, rotations from the spanning tree, then the bundle
adjustment with every image's focal held at each value (one lens, pinhole)
and the RMS of the per-pair residuals in pixels. A minimum inside the range
pins the focal down; falling towards long focals (an affine camera) means
the rotations cannot fit the matches at any focal. One JSON line.
"""

import json
import sys

import numpy as np

from processing.bench.stitch import SHARED, _files
from processing.io.imageio import load_image
from processing.stitch.pipeline import StitchParams
from processing.stitch.registration import (
    _components,
    _spanning_tree_rotations,
    bundle_adjust,
    candidate_pairs,
    detect,
    match_pairs,
    proxy_gray,
)

name = sys.argv[1]
values = [float(x) for x in sys.argv[2:]] or [700, 1000, 1429, 2000, 2668, 3200, 4222, 8000, 17241, 40000]
p = StitchParams()
feats, pf = [], []
for f in _files(SHARED / "panoramas" / name):
    img, info = load_image(f)
    g, s = proxy_gray(img, p.proxy_mp)
    feats.append(detect(g, s, info.width, info.height, p.nfeatures))
    pf.append(s)
pairs = match_pairs(feats, candidate_pairs(len(feats), {}), pf, p.ratio, p.min_inliers, p.conf_thresh)
main = _components(list(range(len(feats))), pairs)[0]
sub = [q for q in pairs if q.i in main and q.j in main]
out = {}
for f in values:
    foc = dict.fromkeys(main, f)
    rots = _spanning_tree_rotations(main, sub, feats, foc, main[0])
    _r, _f, rms, _k = bundle_adjust(main, sub, feats, rots, foc, main[0], optimize_focal=False)
    out[str(f)] = round(float(np.sqrt(np.mean(np.square(list(rms.values()))))), 3)
print(json.dumps({"set": name, "images": len(main), "pairs": len(sub), "pair_rms_px_at_focal": out}))
