"""IIIF Image API 3.0 request parsing (https://iiif.io/api/image/3.0/).

Only the string grammar and its arithmetic live here; the pixels come from
processing.tiles.region_export. Bad requests raise IIIFError(400, reason), features
this service does not offer raise IIIFError(501 or 400 as the spec asks).
"""

from __future__ import annotations

import math
import re
from typing import Any

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROTOCOL = "http://iiif.io/api/image"
PROFILE_URI = "http://iiif.io/api/image/3/level0.json"
QUALITIES = ("default",)
FORMATS = {"jpg": "image/jpeg"}

Rect = tuple[int, int, int, int]

_NUM = r"\d+(?:\.\d+)?"
_XYWH = re.compile(rf"^({_NUM}),({_NUM}),({_NUM}),({_NUM})$")


class IIIFError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def info(
    service_id: str, width: int, height: int, tile_size: int, levels: int, max_area: int, max_side: int
) -> dict[str, Any]:
    """info.json of a level-0 service whose tiles are the pyramid's tiles."""
    scale_factors = [1 << k for k in range(levels)]
    sizes = []
    for k in reversed(range(levels)):
        w, h = math.ceil(width / (1 << k)), math.ceil(height / (1 << k))
        if w * h <= max_area and max(w, h) <= max_side and w <= 4096 and h <= 4096:
            sizes.append({"width": w, "height": h})
    body: dict[str, Any] = {
        "@context": CONTEXT,
        "id": service_id,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": "level0",
        "width": width,
        "height": height,
        "tiles": [{"width": tile_size, "height": tile_size, "scaleFactors": scale_factors}],
        "sizes": sizes,
    }
    if width * height > max_area:
        body["maxArea"] = max_area
    if width > max_side:
        body["maxWidth"] = max_side
    if height > max_side:
        body["maxHeight"] = max_side
    return body


def parse_region(raw: str, width: int, height: int) -> Rect:
    """Region parameter -> (x, y, w, h) in image pixels, clipped to the image."""
    if raw == "full":
        return 0, 0, width, height
    if raw == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    pct = raw.startswith("pct:")
    m = _XYWH.match(raw[4:] if pct else raw)
    if not m:
        raise IIIFError(400, f"region {raw!r} is not full, square, x,y,w,h or pct:x,y,w,h")
    x, y, w, h = (float(v) for v in m.groups())
    if pct:
        x, y, w, h = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    elif not all(float(v).is_integer() for v in (x, y, w, h)):
        raise IIIFError(400, f"region {raw!r}: pixel regions are integers")
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise IIIFError(400, f"region {raw[:60]!r} has a number too large")
    x0, y0 = round(x), round(y)
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    if w <= 0 or h <= 0:
        raise IIIFError(400, f"region {raw!r} has zero width or height")
    if x0 >= width or y0 >= height or x1 <= x0 or y1 <= y0:
        raise IIIFError(400, f"region {raw!r} lies outside the {width}x{height} image")
    return x0, y0, x1 - x0, y1 - y0


def _fit_limits(w: float, h: float, max_area: int, max_side: int) -> tuple[int, int]:
    f = min(1.0, max_side / w, max_side / h, math.sqrt(max_area / (w * h)))
    return max(1, math.floor(w * f)), max(1, math.floor(h * f))


def parse_size(raw: str, rw: int, rh: int, max_area: int, max_side: int) -> tuple[int, int]:
    """Size parameter -> output (w, h) for a region of RW x RH pixels."""
    up = raw.startswith("^")
    s = raw[1:] if up else raw
    if s == "max":
        w, h = (
            (rw, rh) if (rw * rh <= max_area and max(rw, rh) <= max_side) else _fit_limits(rw, rh, max_area, max_side)
        )
        return w, h
    if s.startswith("pct:"):
        try:
            n = float(s[4:])
        except ValueError as e:
            raise IIIFError(400, f"size {raw!r}: pct:n needs a number") from e
        if not math.isfinite(n) or n <= 0:
            raise IIIFError(400, f"size {raw[:60]!r} must be a finite number above zero")
        w, h = round(rw * n / 100), round(rh * n / 100)
    else:
        confined = s.startswith("!")
        m = re.match(r"^(\d*),(\d*)$", s[1:] if confined else s)
        if not m or (not m.group(1) and not m.group(2)) or (confined and not (m.group(1) and m.group(2))):
            raise IIIFError(400, f"size {raw!r} is not max, w,, ,h, w,h, !w,h or pct:n")
        bw = int(m.group(1)) if m.group(1) else None
        bh = int(m.group(2)) if m.group(2) else None
        if confined:
            assert bw is not None and bh is not None
            f = min(bw / rw, bh / rh)
            w, h = max(1, math.floor(rw * f + 1e-9)), max(1, math.floor(rh * f + 1e-9))
        elif bw is not None and bh is not None:
            w, h = bw, bh
        elif bw is not None:
            w, h = bw, max(1, round(rh * bw / rw))
        else:
            assert bh is not None
            w, h = max(1, round(rw * bh / rh)), bh
    if w < 1 or h < 1:
        raise IIIFError(400, f"size {raw!r} gives an empty image")
    if not up and (w > rw or h > rh):
        raise IIIFError(400, f"size {raw!r} is larger than the region ({rw}x{rh}); upscaling needs ^")
    if up and (w > rw or h > rh):
        raise IIIFError(501, "this level-0 service does not upscale")
    if w * h > max_area or w > max_side or h > max_side:
        raise IIIFError(400, f"size {w}x{h} exceeds this service's limits (maxArea {max_area}, maxWidth {max_side})")
    return w, h


def check_rotation(raw: str) -> None:
    if raw != "0":
        if re.match(r"^!?\d+(\.\d+)?$", raw):
            raise IIIFError(501, f"rotation {raw!r}: this level-0 service serves rotation 0 only")
        raise IIIFError(400, f"rotation {raw!r} is not a number")


def check_quality_format(quality: str, fmt: str) -> str:
    if quality not in QUALITIES and quality not in ("color", "gray", "bitonal"):
        raise IIIFError(400, f"quality {quality!r} is not default, color, gray or bitonal")
    if quality not in QUALITIES:
        raise IIIFError(501, f"quality {quality!r}: this service serves default only")
    if fmt not in FORMATS:
        raise IIIFError(501 if fmt in ("png", "tif", "gif", "webp", "jp2", "pdf") else 400, f"format {fmt!r}: jpg only")
    return FORMATS[fmt]
