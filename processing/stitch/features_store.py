"""Registration features stored beside an image, so the layout job only matches and adjusts.

A stack job (on the worker that has the stack's pixels) writes
``<output>.features.npz``: the SIFT features of its grey proxy, the proxy's
factor, the exposure thumbnail and the EXIF focal length, keyed by the
settings that made them. ``stitch_files`` uses a stored file whose key
matches instead of decoding the image; any mismatch or damage and it
computes them as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..io.imageio import load_image
from .exposure import thumbnail
from .registration import Features, detect, exif_focal_px, proxy_gray

FORMAT = 1


def features_path(image: str | Path) -> Path:
    p = Path(image)
    return p.with_name(p.name + ".features.npz")


def settings_for(n_images: int, proxy_mp: float, nfeatures: int) -> tuple[float, int, float]:
    """(proxy_mp, features per image, thumbnail pixels) as stitch_files picks them for N images."""
    nfeat = nfeatures if n_images <= 300 else max(500, nfeatures * 300 // n_images)
    return float(proxy_mp), int(nfeat), float(min(0.25e6, 8e6 / max(1, n_images)))


def store_features(image: str | Path, n_images: int, proxy_mp: float = 0.5, nfeatures: int = 2000) -> Path:
    """Compute and write IMAGE's features for a panorama of N_IMAGES images."""
    pm, nfeat, thumb_px = settings_for(n_images, proxy_mp, nfeatures)
    img, info = load_image(image)
    g, f = proxy_gray(img, pm)
    thumb = thumbnail(img, thumb_px)
    del img
    ft = detect(g, f, info.width, info.height, nfeat)
    focal = exif_focal_px(Path(image), info.width, info.height)
    out = features_path(image)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.array([FORMAT, pm, nfeat, thumb_px], np.float64),
            size=np.array([ft.width, ft.height], np.int64),
            pts=ft.pts,
            desc=ft.desc,
            factor=np.array(f, np.float64),
            thumb=thumb,
            exif_focal=np.array(np.nan if focal is None else focal, np.float64),
        )
    return out


def load_features(
    image: str | Path, n_images: int, proxy_mp: float, nfeatures: int
) -> tuple[Features, float, np.ndarray] | None:
    """(features, proxy factor, thumbnail) stored for IMAGE with the same settings, else None."""
    p = features_path(image)
    if not p.is_file() or p.stat().st_mtime_ns < Path(image).stat().st_mtime_ns:
        return None
    pm, nfeat, thumb_px = settings_for(n_images, proxy_mp, nfeatures)
    try:
        with np.load(p, allow_pickle=False) as z:
            if not np.allclose(z["key"], [FORMAT, pm, nfeat, thumb_px]):
                return None
            w, h = (int(v) for v in z["size"])
            focal = float(z["exif_focal"])
            ft = Features(w, h, z["pts"], z["desc"], None if np.isnan(focal) else focal)
            return ft, float(z["factor"]), z["thumb"]
    except (OSError, ValueError, KeyError):
        return None
