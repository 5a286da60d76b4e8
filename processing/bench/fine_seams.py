"""Colour differences along the seams, proxy labels against full-resolution seams.

python -m processing.bench.fine_seams OUT.tif.layout.json

From a stitched layout with full-resolution seams (``.seams_fine.npz``): in
every refined band, the pixels on either side of a change of owner between
the band's two images (where both are valid), once with the proxy labels
alone and once with the refinement; at those pixels the two images are
sampled as the renderer shows them. Prints one JSON object: per variant the
seam pixels, the mean of the max-channel |difference|, the share above the
ghost guard's threshold (blend.DISAGREE) and the 99th percentile.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from processing.stitch.blend import DISAGREE, SourceCache
from processing.stitch.fine_seams import _sample_at
from processing.stitch.pipeline import Layout, layout_from_json
from processing.stitch.project import block_map
from processing.stitch.seam_patches import labels_at


def _seam_pixels(lab: np.ndarray, i: int, j: int) -> np.ndarray:
    """Pixels with a 4-neighbour of the other image of the pair (both sides)."""
    s = np.zeros(lab.shape, bool)
    pair = (lab == i) | (lab == j)
    d = pair[:, :-1] & pair[:, 1:] & (lab[:, :-1] != lab[:, 1:])
    s[:, :-1] |= d
    s[:, 1:] |= d
    d = pair[:-1] & pair[1:] & (lab[:-1] != lab[1:])
    s[:-1] |= d
    s[1:] |= d
    return s


def seam_differences(layout: Layout, cache: SourceCache | None = None) -> dict[str, dict[str, float]]:
    assert layout.labels is not None and layout.fine is not None
    cache = cache or SourceCache(1200 << 20)
    cv, labels, fine = layout.canvas, layout.labels, layout.fine
    W, H = cv.width, cv.height
    diffs: dict[str, list[np.ndarray]] = {"proxy": [], "fine": []}
    for p in fine.patches:
        x0, y0, x1, y1 = p.rect
        lp = labels_at(labels, W, H, cv.wrap, p.rect)
        lf = lp.copy()
        fine.apply(lf, x0, y0, W, cv.wrap)
        mi, ni, vi = block_map(layout.layers[p.i].cam, cv, x0, y0, x1 - x0, y1 - y0)
        mj, nj, vj = block_map(layout.layers[p.j].cam, cv, x0, y0, x1 - x0, y1 - y0)
        for name, lab in (("proxy", lp), ("fine", lf)):
            s = _seam_pixels(lab, p.i, p.j) & vi & vj & p.upd
            if s.any():
                a = _sample_at(layout.layers[p.i], cache, mi[s], ni[s])
                b = _sample_at(layout.layers[p.j], cache, mj[s], nj[s])
                diffs[name].append(np.abs(a - b).max(1))
    out = {}
    for name, v in diffs.items():
        d = np.concatenate(v) if v else np.zeros(1, np.float32)
        out[name] = {
            "seam_px": int(d.size),
            "mean_diff": round(float(d.mean()), 4),
            "disagree_share": round(float((d > DISAGREE).mean()), 4),
            "p99_diff": round(float(np.percentile(d, 99)), 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("layout", help="OUT.tif.layout.json of a stitch with full-resolution seams")
    args = ap.parse_args()
    print(json.dumps(seam_differences(layout_from_json(args.layout))))


if __name__ == "__main__":
    main()
