"""Overlap colour differences with and without the camera response model.

python -m processing.bench.response_seams OUT.tif.layout.json [--mp 2]

From a stitched layout (its cameras and source files): the ~2 MP exposure
proxies are rebuilt as the stitcher builds them, the exposure is solved
with the response model and without it (gains on the encoded values), and
every overlap's pixel pairs (neither clipped nor black) are compared as the
renderer outputs them. Prints one JSON object: per model the response kept,
the mean |difference| relative to the mean level and the median |difference|.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from processing.io.imageio import load_image
from processing.stitch.exposure import (
    CLIPPED,
    DARK,
    ProxyWarp,
    _overlap,
    corrected,
    lens_groups,
    proxy_warp,
    solve_exposure,
    thumbnail,
    warp_pairs,
)
from processing.stitch.pipeline import layout_from_json
from processing.stitch.project import Canvas


def overlap_differences(warps: list[ProxyWarp | None], pc: Canvas, out: list[np.ndarray | None]) -> tuple[float, float]:
    """(sum |a - b| / sum (a + b) / 2, median |a - b|) over the overlap pairs
    that neither input clipped or left black; ``out``: the corrected proxies."""
    num = den = 0.0
    ds = []
    for i, j in warp_pairs(warps, pc):
        a_, b_ = warps[i], warps[j]
        assert a_ is not None and b_ is not None
        for sa, sb in _overlap(a_, b_, pc):
            ok = a_.valid[sa] & b_.valid[sb] & (a_.img[sa].max(2) < CLIPPED) & (b_.img[sb].max(2) < CLIPPED)
            ok &= (a_.img[sa].min(2) > DARK) & (b_.img[sb].min(2) > DARK)
            a, b = out[i][sa][ok], out[j][sb][ok]  # type: ignore[index]
            num += float(np.abs(a - b).sum())
            den += float(((a + b) / 2).sum())
            ds.append(np.abs(a - b).mean(1))
    return num / max(den, 1e-12), float(np.median(np.concatenate(ds))) if ds else 0.0


def measure(layout_path: Path, mp: float = 2.0) -> dict:
    lay = layout_from_json(layout_path)
    cv = lay.canvas
    pc = cv.scaled(min(1.0, math.sqrt(mp * 1e6 / (cv.width * cv.height))))
    cams = [L.cam for L in lay.layers]
    px = min(0.25e6, 8e6 / max(1, len(cams)))  # the stitcher's thumbnail size
    warps = [proxy_warp(thumbnail(load_image(L.path)[0], px), L.cam, pc) for L in lay.layers]
    lens = np.asarray(lens_groups(cams))
    rec: dict = {"layout": str(layout_path), "images": len(warps)}
    for name, on in (("power_law", False), ("response", True)):
        ex = solve_exposure(warps, pc, lens, response=on)
        rs = ex.responses()
        output = None
        if rs is not None:
            output = tuple(float(x) for x in np.mean([r.to_list() for r in rs], 0))
        g, vig = ex.gains(), ex.vignetting[lens]
        out = [
            None if w is None else corrected(w.img, w.r2, g[k], vig[k], rs[k] if rs else None, output)
            for k, w in enumerate(warps)
        ]
        rel, med = overlap_differences(warps, pc, out)
        rec[name] = {"response": ex.response_note, "relative_mean_diff": round(rel, 4), "median_diff": round(med, 4)}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layout", type=Path)
    ap.add_argument("--mp", type=float, default=2.0, help="proxy canvas megapixels")
    a = ap.parse_args()
    print(json.dumps(measure(a.layout, a.mp)))


if __name__ == "__main__":
    main()
