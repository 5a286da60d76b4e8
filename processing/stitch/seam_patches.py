"""Full-resolution seam overrides of the proxy label map (see fine_seams.py).

A patch is a canvas rectangle, a pair of images (i, j) and two boolean
masks at full resolution: which pixels it overrides and, of those, which go
to i (the rest to j). The renderer upsamples the proxy labels to the block
and applies every patch meeting it, in the stored order, pixel by pixel:
the result at a pixel does not depend on the block, so block renders equal
the whole render. Stored as ``<layout>.seams_fine.npz`` (versioned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path

FINE_VERSION = 1


def proxy_index(start: int, stop: int, full: int, proxy: int) -> np.ndarray:
    """The proxy row (or column) of each full-resolution one in [start, stop):
    nearest, by pixel centres; not clipped (a column past a 360 canvas's width
    runs on past the proxy's)."""
    return np.floor((np.arange(start, stop) + 0.5) * proxy / full).astype(np.int64)


def labels_at(labels: np.ndarray, width: int, height: int, wrap: bool, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The proxy label map looked up at the full-resolution pixels of ``rect``
    (x0, y0, x1, y1) of a width x height canvas: what every block and the
    refinement agree a pixel's proxy owner is."""
    x0, y0, x1, y1 = rect
    Hp, Wp = labels.shape
    px = proxy_index(x0, x1, width, Wp)
    px = np.mod(px, Wp) if wrap else np.clip(px, 0, Wp - 1)
    py = np.clip(proxy_index(y0, y1, height, Hp), 0, Hp - 1)
    return labels[py][:, px]


@dataclass
class SeamPatch:
    rect: tuple[int, int, int, int]  # x0, y0, x1, y1 on the canvas (0 <= x0 < width)
    i: int
    j: int
    upd: np.ndarray  # bool (h, w): pixels this patch decides
    is_i: np.ndarray  # bool (h, w): of those, the ones image i owns


@dataclass
class FineSeams:
    patches: list[SeamPatch] = field(default_factory=list)
    # for reports: layout seconds spent, windows skipped by the size cap
    seconds: float = 0.0
    skipped: int = 0

    def apply(self, lab: np.ndarray, x0: int, y0: int, width: int, wrap: bool) -> None:
        """Override ``lab`` (labels of canvas pixels from (x0, y0), in place)."""
        h, w = lab.shape
        shifts = (-width, 0, width) if wrap else (0,)
        for p in self.patches:
            px0, py0, px1, py1 = p.rect
            a0, a1 = max(py0, y0), min(py1, y0 + h)
            if a1 <= a0:
                continue
            for s in shifts:
                b0, b1 = max(px0 + s, x0), min(px1 + s, x0 + w)
                if b1 <= b0:
                    continue
                src = (slice(a0 - py0, a1 - py0), slice(b0 - px0 - s, b1 - px0 - s))
                dst = lab[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0]
                upd = p.upd[src]
                dst[upd] = np.where(p.is_i[src], p.i, p.j)[upd]

    def save(self, path: Path) -> None:
        rects = np.array([p.rect for p in self.patches], np.int64).reshape(-1, 4)
        pairs = np.array([(p.i, p.j) for p in self.patches], np.int32).reshape(-1, 2)
        bits = [np.packbits(np.stack([p.upd, p.is_i]).ravel()) for p in self.patches]
        sizes = np.array([b.size for b in bits], np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                version=np.array(FINE_VERSION),
                rects=rects,
                pairs=pairs,
                sizes=sizes,
                bits=np.concatenate(bits) if bits else np.zeros(0, np.uint8),
                info=np.array([self.seconds, self.skipped], np.float64),
            )

    @staticmethod
    def load(path: Path) -> FineSeams | None:
        """The overrides, or None for a file of another version."""
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != FINE_VERSION:
                return None
            rects, pairs, sizes, bits = z["rects"], z["pairs"], z["sizes"], z["bits"]
            info = z["info"]
        out = FineSeams(seconds=float(info[0]), skipped=int(info[1]))
        off = 0
        for r, (i, j), n in zip(rects, pairs, sizes, strict=True):
            x0, y0, x1, y1 = (int(v) for v in r)
            h, w = y1 - y0, x1 - x0
            m = np.unpackbits(bits[off : off + n], count=2 * h * w).astype(bool).reshape(2, h, w)
            off += int(n)
            out.patches.append(SeamPatch((x0, y0, x1, y1), int(i), int(j), m[0], m[1]))
        return out
