"""Parse and validate W3C Web Annotation selectors (no XML parser on user input).

Accepted: FragmentSelector "xywh=pixel:x,y,w,h" and SvgSelector holding one
<polygon points="...">. The server rebuilds the selector from the parsed
numbers, so nothing the client sent is stored verbatim.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_POINTS = 500
MAX_SELECTOR_CHARS = 20_000
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_XYWH = re.compile(rf"^xywh=(?:pixel:)?({_NUM}),({_NUM}),({_NUM}),({_NUM})$")
_POLY = re.compile(
    r"""^\s*<svg[^>]*>\s*<polygon\s+points\s*=\s*(["'])([-+0-9.eE,\s]*)\1\s*/?>\s*(?:</polygon>)?\s*</svg>\s*$"""
)
_PAIR = re.compile(rf"({_NUM})\s*,\s*({_NUM})")


class GeometryError(ValueError):
    pass


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def parse_target(target: Any, width: int, height: int) -> tuple[dict[str, Any], tuple[int, int, int, int]]:
    """Return (clean target, integer bbox x, y, w, h) clipped to the panorama.

    Raises GeometryError with a human reason for anything malformed, empty,
    or entirely outside the WIDTHxHEIGHT panorama.
    """
    if not isinstance(target, dict):
        raise GeometryError("target must be an object")
    sel = target.get("selector")
    if isinstance(sel, list):
        if len(sel) != 1:
            raise GeometryError("target must have exactly one selector")
        sel = sel[0]
    if not isinstance(sel, dict):
        raise GeometryError("target.selector must be an object")
    kind, value = sel.get("type"), sel.get("value")
    if not isinstance(value, str) or len(value) > MAX_SELECTOR_CHARS:
        raise GeometryError(f"selector value must be a string of at most {MAX_SELECTOR_CHARS} characters")
    if kind == "FragmentSelector":
        m = _XYWH.match(value.strip())
        if not m:
            raise GeometryError("FragmentSelector value must be xywh=pixel:x,y,w,h")
        x, y, w, h = (float(g) for g in m.groups())
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise GeometryError("rectangle must have a positive width and height")
        x0, y0, x1, y1 = (
            max(0.0, x),
            max(0.0, y),
            min(float(width), x + w),
            min(float(height), y + h),
        )
        if x0 >= x1 or y0 >= y1:
            raise GeometryError(f"rectangle lies outside the {width}x{height} panorama")
        clean_sel = {
            "type": "FragmentSelector",
            "conformsTo": "http://www.w3.org/TR/media-frags/",
            "value": f"xywh=pixel:{_fmt(x0)},{_fmt(y0)},{_fmt(x1 - x0)},{_fmt(y1 - y0)}",
        }
    elif kind == "SvgSelector":
        m = _POLY.match(value)
        if not m:
            raise GeometryError("SvgSelector must hold a single <polygon points=...>")
        pts = [(float(a), float(b)) for a, b in _PAIR.findall(m.group(2))]
        if not 3 <= len(pts) <= MAX_POINTS:
            raise GeometryError(f"polygon needs 3 to {MAX_POINTS} points")
        if not all(math.isfinite(v) for p in pts for v in p):
            raise GeometryError("polygon points must be finite numbers")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if min(xs) >= width or min(ys) >= height or max(xs) <= 0 or max(ys) <= 0:
            raise GeometryError(f"polygon lies outside the {width}x{height} panorama")
        pts = [(min(max(px, 0.0), float(width)), min(max(py, 0.0), float(height))) for px, py in pts]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise GeometryError("polygon has no area")
        points = " ".join(f"{_fmt(px)},{_fmt(py)}" for px, py in pts)
        clean_sel = {
            "type": "SvgSelector",
            "value": f'<svg><polygon points="{points}"></polygon></svg>',
        }
    else:
        raise GeometryError("selector type must be FragmentSelector or SvgSelector")
    bx0, by0 = math.floor(x0), math.floor(y0)
    bx1, by1 = math.ceil(x1), math.ceil(y1)
    return {"selector": clean_sel}, (bx0, by0, max(1, bx1 - bx0), max(1, by1 - by0))
