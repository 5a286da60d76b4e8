"""Capture ingest: from the folders a camera wrote to bursts placed on a grid.

A capture is hundreds of thousands of frames: bursts of ~20 frames a second,
one burst per rig position, a few sub-panoramas (top-level folders), some
areas shot twice. This module only reads: it never modifies originals.

- scan_capture walks the tree and reads headers only (size, EXIF time and
  exposure); a SQLite cache keyed by path + size + mtime_ns makes re-scans fast.
- split_bursts cuts the time-ordered frames at time gaps; gaps that are
  neither clearly short nor clearly long are decided by comparing tiny
  thumbnails (normalised correlation).
- find_repeats groups bursts that show the same place far apart in time.
- place_bursts gives each burst a grid position (serpentine rows) and, where
  known, rig angles (metadata or a photographer's CSV).

Memory is bounded by the frame metadata (a few hundred bytes a frame); image
data is only ever one tiny thumbnail per burst.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import sqlite3
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from PIL import Image

from ..io.errors import InputError
from ..io.imageio import IMAGE_EXTS, probe
from ..io.params import StageParams

#: Bump when what is extracted from a header changes: old cache rows are ignored.
CACHE_SCHEMA = 2
THUMB_SIDE = 24  # similarity thumbnails: 24 x 24 grey, 576 bytes

# EXIF tags (ids) read from headers.
T_DATETIME = 0x0132
T_MAKE, T_MODEL = 0x010F, 0x0110
T_EXIF_IFD = 0x8769
T_DATETIME_ORIGINAL = 0x9003
T_SUBSEC_ORIGINAL = 0x9291
T_OFFSET_ORIGINAL = 0x9011
T_EXPOSURE_TIME = 0x829A
T_FNUMBER = 0x829D
T_ISO = 0x8827
T_FOCAL_LENGTH = 0x920A
T_FOCAL_35MM = 0xA405
T_FOCAL_PLANE_XRES = 0xA20E
T_FOCAL_PLANE_UNIT = 0xA210

_DT_RE = re.compile(rb"(\d{4})\D(\d{2})\D(\d{2})\D(\d{2})\D(\d{2})\D(\d{2})")
_OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})")
# Rig / gimbal angles some heads and drones write as XMP attributes.
_XMP_YAW = re.compile(rb"(?:PoseHeadingDegrees|GimbalYawDegree|Camera:Yaw|Yaw)\s*=\s*\"([-+0-9.eE]+)\"")
_XMP_PITCH = re.compile(rb"(?:PosePitchDegrees|GimbalPitchDegree|Camera:Pitch|Pitch)\s*=\s*\"([-+0-9.eE]+)\"")


@dataclass(frozen=True)
class IngestParams(StageParams):
    """How a capture is cut into bursts, grouped and placed."""

    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "ingest"

    gap_s: float = 1.0  # a gap longer than this starts a new burst ...
    ambiguous_lo: float = 0.5  # ... but gaps in [lo, hi] x gap_s are decided by similarity
    ambiguous_hi: float = 2.0
    same_threshold: float = 0.8  # thumbnail correlation: same burst
    repeat_threshold: float = 0.9  # thumbnail correlation: same place shot again
    repeat_min_separation_s: float = 120.0  # a repeat is at least this far apart in time
    subpanorama_gap_s: float = 1800.0  # files in the root folder: split sub-panoramas at gaps this long
    min_side: int = 32  # smaller images are not frames of a capture
    min_frames: int = 1  # bursts shorter than this are not stacks
    columns: int | None = None  # grid columns (None: one row)
    serpentine: bool = True  # odd rows run right to left, as a rig shoots


# --------------------------------------------------------------------------- frames


@dataclass(slots=True)
class FrameMeta:
    """One file of the capture, as read from its header (or why it is skipped)."""

    path: str  # absolute
    rel: str  # relative to the scanned root, POSIX separators
    size: int
    mtime_ns: int
    kind: str = ""  # raw / jpeg / tiff / png / ... ; "" when skipped
    width: int = 0
    height: int = 0
    time: float | None = None  # seconds since the epoch (EXIF local time read as UTC unless an offset is given)
    time_source: str = ""  # exif / exif-datetime / raw / mtime
    tz_offset_min: int | None = None
    exposure: dict[str, Any] = field(default_factory=dict)
    yaw: float | None = None
    pitch: float | None = None
    skipped: str = ""  # reason this file is not a usable frame
    checksum: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped

    @property
    def top(self) -> str:
        """Top-level folder under the root ("" for files in the root itself)."""
        head, sep, _ = self.rel.partition("/")
        return head if sep else ""

    def header_dict(self) -> dict[str, Any]:
        """What the cache stores: everything read from the header."""
        return {
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "time": self.time,
            "time_source": self.time_source,
            "tz": self.tz_offset_min,
            "exposure": self.exposure,
            "yaw": self.yaw,
            "pitch": self.pitch,
            "skipped": self.skipped,
        }

    def apply_header(self, d: dict[str, Any]) -> None:
        self.kind = d.get("kind", "")
        self.width = d.get("width", 0)
        self.height = d.get("height", 0)
        self.time = d.get("time")
        self.time_source = d.get("time_source", "")
        self.tz_offset_min = d.get("tz")
        self.exposure = d.get("exposure") or {}
        self.yaw = d.get("yaw")
        self.pitch = d.get("pitch")
        self.skipped = d.get("skipped", "")


# --------------------------------------------------------------------------- cache


class ScanCache:
    """SQLite cache of header metadata, thumbnails and checksums.

    Rows are keyed by absolute path and only trusted while size and mtime_ns
    match. Rows of one folder are read with one query, so memory follows the
    largest folder, not the capture.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS frames (path TEXT PRIMARY KEY, dir TEXT NOT NULL, size INTEGER NOT NULL,"
            " mtime_ns INTEGER NOT NULL, schema INTEGER NOT NULL, meta TEXT, thumb BLOB, sha256 TEXT)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS frames_dir ON frames(dir)")
        self._pending: list[tuple[Any, ...]] = []

    def folder(self, dirpath: str) -> dict[str, tuple[int, int, str]]:
        """{path: (size, mtime_ns, meta json)} of the valid rows of one folder."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, meta FROM frames WHERE dir = ? AND schema = ?",
            (dirpath, CACHE_SCHEMA),
        )
        return {p: (s, m, meta) for p, s, m, meta in rows}

    def put(self, fm: FrameMeta) -> None:
        row = (
            fm.path,
            os.path.dirname(fm.path),
            fm.size,
            fm.mtime_ns,
            CACHE_SCHEMA,
            json.dumps(fm.header_dict()),
        )
        self._pending.append(row)
        if len(self._pending) >= 2000:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with self.db:
            self.db.execute("BEGIN")
            # Upsert keeps a thumbnail/checksum only if the file is unchanged.
            self.db.executemany(
                "INSERT INTO frames (path, dir, size, mtime_ns, schema, meta) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET"
                " thumb = CASE WHEN size = excluded.size AND mtime_ns = excluded.mtime_ns THEN thumb END,"
                " sha256 = CASE WHEN size = excluded.size AND mtime_ns = excluded.mtime_ns THEN sha256 END,"
                " dir = excluded.dir, size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " schema = excluded.schema, meta = excluded.meta",
                self._pending,
            )
        self._pending.clear()

    def _get(self, col: str, fm: FrameMeta) -> Any:
        self.flush()
        row = self.db.execute(
            f"SELECT {col} FROM frames WHERE path = ? AND size = ? AND mtime_ns = ?",
            (fm.path, fm.size, fm.mtime_ns),
        ).fetchone()
        return row[0] if row else None

    def _set(self, col: str, fm: FrameMeta, value: Any) -> None:
        self.flush()
        cur = self.db.execute(
            f"UPDATE frames SET {col} = ? WHERE path = ? AND size = ? AND mtime_ns = ?",
            (value, fm.path, fm.size, fm.mtime_ns),
        )
        if cur.rowcount == 0:
            self.put(fm)
            self.flush()
            self.db.execute(f"UPDATE frames SET {col} = ? WHERE path = ?", (value, fm.path))

    def get_thumb(self, fm: FrameMeta) -> bytes | None:
        return self._get("thumb", fm)

    def set_thumb(self, fm: FrameMeta, data: bytes) -> None:
        self._set("thumb", fm, data)

    def get_sha256(self, fm: FrameMeta) -> str | None:
        return self._get("sha256", fm)

    def set_sha256(self, fm: FrameMeta, digest: str) -> None:
        self._set("sha256", fm, digest)

    def close(self) -> None:
        self.flush()
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cache(cache: ScanCache | str | Path | None) -> tuple[ScanCache | None, bool]:
    """(cache, owned): a path opens a cache this caller must close."""
    if cache is None or isinstance(cache, ScanCache):
        return cache, False
    return ScanCache(cache), True


# --------------------------------------------------------------------------- metadata


def _parse_exif_time(raw: Any) -> tuple[int, int, int, int, int, int] | None:
    if raw is None:
        return None
    b = raw.encode("latin-1", "replace") if isinstance(raw, str) else bytes(raw)
    m = _DT_RE.search(b)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups())
    if y < 1900 or not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        return None
    return y, mo, d, h, mi, s


def _subsec(raw: Any) -> float:
    s = str(raw or "").strip().strip("\x00").strip()
    digits = "".join(ch for ch in s if ch.isdigit())
    return int(digits) / 10 ** len(digits) if digits else 0.0


def _offset_min(raw: Any) -> int | None:
    m = _OFFSET_RE.search(str(raw or ""))
    if not m:
        return None
    sign = -1 if m.group(1) == "-" else 1
    return sign * (int(m.group(2)) * 60 + int(m.group(3)))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _text(v: Any) -> str:
    return str(v).strip("\x00 ").strip() if v is not None else ""


def _from_exif(exif: Image.Exif) -> dict[str, Any]:
    """Capture time and exposure from a parsed EXIF block."""
    out: dict[str, Any] = {}
    try:
        sub = exif.get_ifd(T_EXIF_IFD)
    except Exception:  # an Exif IFD offset beyond what was read
        sub = {}
    # Some RAW formats (e.g. Kodak KDC) keep the Exif tags in IFD0 itself.
    sub = {**{k: v for k, v in exif.items() if k >= 0x8000}, **sub}
    when = _parse_exif_time(sub.get(T_DATETIME_ORIGINAL))
    source = "exif"
    if when is None:
        when = _parse_exif_time(exif.get(T_DATETIME))
        source = "exif-datetime"
    if when is not None:
        t = calendar.timegm((*when, 0, 0, 0)) + _subsec(sub.get(T_SUBSEC_ORIGINAL))
        off = _offset_min(sub.get(T_OFFSET_ORIGINAL))
        if off is not None:
            t -= off * 60
        out.update(time=t, time_source=source, tz=off)
    exp: dict[str, Any] = {}
    for key, tag in (
        ("exposure_time", T_EXPOSURE_TIME),
        ("f_number", T_FNUMBER),
        ("focal_length_mm", T_FOCAL_LENGTH),
        ("focal_35mm", T_FOCAL_35MM),
    ):
        v = _num(sub.get(tag))
        if v is not None:
            exp[key] = round(v, 6)
    iso = sub.get(T_ISO)
    if isinstance(iso, tuple | list):
        iso = iso[0] if iso else None
    if _num(iso) is not None:
        exp["iso"] = int(float(iso))
    xres = _num(sub.get(T_FOCAL_PLANE_XRES))
    unit = sub.get(T_FOCAL_PLANE_UNIT, 2)
    if xres is not None:
        per_mm = {2: 1 / 25.4, 3: 1 / 10.0, 4: 1.0}.get(int(unit) if _num(unit) else 2)
        if per_mm:
            exp["focal_plane_px_per_mm"] = round(xres * per_mm, 6)
    for key, tag in (("make", T_MAKE), ("model", T_MODEL)):
        s = _text(exif.get(tag))
        if s:
            exp[key] = s[:64]
    out["exposure"] = exp
    return out


def _xmp_angles(xmp: bytes | str | None) -> tuple[float | None, float | None]:
    if not xmp:
        return None, None
    b = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    yaw = _XMP_YAW.search(b)
    pitch = _XMP_PITCH.search(b)
    return (
        _float_or_none(yaw.group(1)) if yaw else None,
        _float_or_none(pitch.group(1)) if pitch else None,
    )


def _float_or_none(b: bytes | str) -> float | None:
    try:
        v = float(b)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _read_pil_header(path: str) -> dict[str, Any]:
    """EXIF of a JPEG/TIFF/PNG/WebP: Pillow reads only the header here."""
    out: dict[str, Any] = {}
    with Image.open(path) as im:
        if im.format == "PNG" and "exif" not in im.info:
            return out  # PNG's getexif would decode the whole image to find a late eXIf chunk
        out.update(_from_exif(im.getexif()))
        yaw, pitch = _xmp_angles(im.info.get("xmp") or im.info.get("XML:com.adobe.xmp"))
        if yaw is not None:
            out["yaw"] = yaw
        if pitch is not None:
            out["pitch"] = pitch
    return out


_RAW_HEADS = (64 << 10, 1 << 20)  # TIFF-based RAW: IFD0 and the Exif IFD sit near the start


def _read_raw_header(path: str) -> dict[str, Any]:
    """EXIF of a RAW file: TIFF-structured ones (DNG, NEF, CR2, ARW, PEF...) from
    their first 64 KB (1 MB if the tags lie further); others from LibRaw's
    parsed header (whole seconds only)."""
    with open(path, "rb") as f:
        for size in _RAW_HEADS:
            f.seek(0)
            head = f.read(size)
            if head[:4] not in (b"II*\x00", b"MM\x00*"):
                break
            try:
                exif = Image.Exif()
                exif.load(head)
                out = _from_exif(exif)
            except Exception:  # an offset beyond what was read: try more, then LibRaw
                out = {}
            if "time" in out:
                return out
            if len(head) < size:
                break
    import rawpy

    out = {}
    with rawpy.imread(path) as raw:
        o = raw.other
        ts = getattr(o, "timestamp", None)
        if ts is not None and ts.year > 1970:
            out.update(time=calendar.timegm(ts.timetuple()), time_source="raw", tz=None)
        exp: dict[str, Any] = {}
        for key, v in (
            ("exposure_time", o.shutter_speed),
            ("f_number", o.aperture),
            ("focal_length_mm", o.focal_length),
        ):
            if _num(v) is not None:
                exp[key] = round(float(v), 6)
        if _num(o.iso_speed) is not None:
            exp["iso"] = int(o.iso_speed)
        out["exposure"] = exp
    return out


_EXPOSURES: dict[tuple, dict[str, Any]] = {}


def _intern_exposure(exp: dict[str, Any]) -> dict[str, Any]:
    """One shared dict per distinct exposure: a burst's frames all have the
    same, and 380,000 copies would dominate the scan's memory. Treat as read-only."""
    try:
        key = tuple(sorted(exp.items()))
    except TypeError:
        return exp
    got = _EXPOSURES.get(key)
    if got is None:
        if len(_EXPOSURES) > 4096:
            _EXPOSURES.clear()
        got = _EXPOSURES[key] = exp
    return got


def read_frame_meta(path: str, rel: str, size: int, mtime_ns: int, params: IngestParams | None = None) -> FrameMeta:
    """Read one file's header. Never raises for bad files: sets .skipped."""
    params = params or IngestParams()
    fm = FrameMeta(path=path, rel=rel, size=size, mtime_ns=mtime_ns)
    try:
        info = probe(path)
    except InputError as e:
        fm.skipped = _reason(e.reason)
        return fm
    except Exception as e:  # a decoder crash is a corrupt file
        fm.skipped = f"corrupt: {type(e).__name__}: {e}"[:300]
        return fm
    if min(info.width, info.height) < params.min_side:
        fm.skipped = f"too small: {info.width} x {info.height} px (less than {params.min_side} px a side)"
        return fm
    fm.kind, fm.width, fm.height = info.kind, info.width, info.height
    try:
        hdr = _read_raw_header(path) if info.kind == "raw" else _read_pil_header(path)
    except Exception:  # unreadable metadata: the mtime will do
        hdr = {}
    fm.exposure = _intern_exposure(hdr.get("exposure", {}))
    fm.yaw, fm.pitch = hdr.get("yaw"), hdr.get("pitch")
    if hdr.get("time") is not None:
        fm.time, fm.time_source, fm.tz_offset_min = (
            hdr["time"],
            hdr["time_source"],
            hdr.get("tz"),
        )
    else:
        fm.time, fm.time_source = mtime_ns / 1e9, "mtime"
    return fm


def reason_category(reason: str) -> str:
    """'corrupt', 'not an image', 'too small'...: a reason's first words."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


def _reason(reason: str) -> str:
    """Prefix probe's reasons with a short category for the plan."""
    low = reason.lower()
    if "smaller than" in low:
        return f"too small: {reason}"
    if "empty file" in low:
        return f"empty: {reason}"
    if "permission" in low:
        return f"unreadable: {reason}"
    if "above the limit" in low or "bomb" in low:
        return f"too large: {reason}"
    return f"corrupt: {reason}"


# --------------------------------------------------------------------------- scan


def _walk(root: str, rel: str) -> Iterator[tuple[str, str, os.DirEntry[str] | None, str]]:
    """(dir, rel dir, entry, skip reason) for every file, folders in name order."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield root, rel, None, f"unreadable folder: {e.strerror}"
        return
    subdirs = []
    for e in entries:
        if e.name.startswith("."):
            continue  # hidden files and folders (.DS_Store, ._IMG AppleDouble, .thumbnails)
        if e.is_symlink():
            yield root, rel, e, "symbolic link (not followed)"
        elif e.is_dir(follow_symlinks=False):
            subdirs.append(e)
        else:
            yield root, rel, e, ""
    for d in subdirs:
        yield from _walk(d.path, f"{rel}/{d.name}" if rel else d.name)


def scan_capture(
    root: str | Path,
    *,
    cache_path: str | Path | None = None,
    cache: ScanCache | None = None,
    progress: Callable[[int, str], None] | None = None,
    params: IngestParams | None = None,
) -> Iterator[FrameMeta]:
    """Every file under ROOT, in folder-then-name order, with header metadata.

    Files that are not usable frames come back with .skipped set to a reason.
    Only headers are read; a cache (cache_path or an open ScanCache) remembers
    what was read, keyed by path, size and mtime_ns.
    """
    params = params or IngestParams()
    root_s = os.path.realpath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise InputError(root, "not a folder")
    if cache is None and cache_path is not None:
        cache = ScanCache(cache_path)
        owned = True
    else:
        owned = False
    n = 0
    cur_dir: str | None = None
    cached: dict[str, tuple[int, int, str]] = {}
    try:
        for dirpath, reldir, entry, skip in _walk(root_s, ""):
            if entry is None:
                yield FrameMeta(path=dirpath, rel=reldir, size=0, mtime_ns=0, skipped=skip)
                continue
            rel = f"{reldir}/{entry.name}" if reldir else entry.name
            path = entry.path
            n += 1
            if progress is not None and n % 500 == 0:
                progress(n, rel)
            if skip:
                yield FrameMeta(path=path, rel=rel, size=0, mtime_ns=0, skipped=skip)
                continue
            ext = os.path.splitext(entry.name)[1].lower()
            if ext not in IMAGE_EXTS:
                yield FrameMeta(
                    path=path,
                    rel=rel,
                    size=0,
                    mtime_ns=0,
                    skipped=f"not an image (extension {ext or 'none'})",
                )
                continue
            try:
                st = entry.stat()
            except OSError as e:
                yield FrameMeta(
                    path=path,
                    rel=rel,
                    size=0,
                    mtime_ns=0,
                    skipped=f"unreadable: {e.strerror}",
                )
                continue
            if cache is not None and dirpath != cur_dir:
                cache.flush()
                cached = cache.folder(dirpath)
                cur_dir = dirpath
            hit = cached.get(path)
            if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                fm = FrameMeta(path=path, rel=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)
                fm.apply_header(json.loads(hit[2]))
                fm.exposure = _intern_exposure(fm.exposure)
                yield fm
                continue
            fm = read_frame_meta(path, rel, st.st_size, st.st_mtime_ns, params)
            if cache is not None:
                cache.put(fm)
            yield fm
        if progress is not None:
            progress(n, "")
    finally:
        if cache is not None:
            cache.flush()
            if owned:
                cache.close()


# --------------------------------------------------------------------------- pixels


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def frame_checksum(fm: FrameMeta, cache: ScanCache | None = None) -> str:
    """The frame's SHA-256 (cached while size and mtime are unchanged)."""
    if fm.checksum:
        return fm.checksum
    digest = cache.get_sha256(fm) if cache is not None else None
    if not digest:
        digest = sha256_file(fm.path)
        if cache is not None:
            cache.set_sha256(fm, digest)
    fm.checksum = digest
    return digest


def preview_image(path: str | Path, kind: str, max_side: int = 256) -> Image.Image:
    """A small RGB preview, decoding as little as the format allows
    (JPEG DCT scaling, a RAW's embedded thumbnail)."""
    path = str(path)
    if kind == "raw":
        import rawpy

        with rawpy.imread(path) as raw:
            try:
                th = raw.extract_thumb()
            except (
                rawpy.LibRawNoThumbnailError,
                rawpy.LibRawUnsupportedThumbnailError,
            ):
                th = None
            if th is not None and th.format == rawpy.ThumbFormat.JPEG:
                im = Image.open(io.BytesIO(th.data))
                im.draft("RGB", (max_side, max_side))
                im = im.convert("RGB")
            elif th is not None:
                im = Image.fromarray(np.asarray(th.data, dtype=np.uint8)).convert("RGB")
            else:
                rgb = raw.postprocess(
                    half_size=True,
                    use_camera_wb=True,
                    output_bps=8,
                    no_auto_bright=False,
                )
                im = Image.fromarray(rgb)
    else:
        try:
            with Image.open(path) as src:
                if src.format == "JPEG":
                    src.draft("RGB", (max_side, max_side))
                im = src.convert("RGB")
        except Exception:  # 16-bit/float TIFFs Pillow cannot convert
            from ..io.imageio import load_image, to_uint8

            arr, _ = load_image(path)
            im = Image.fromarray(to_uint8(arr))
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return im


def frame_thumb(fm: FrameMeta, cache: ScanCache | None = None) -> np.ndarray | None:
    """THUMB_SIDE x THUMB_SIDE grey uint8 thumbnail for similarity (None if undecodable)."""
    data = cache.get_thumb(fm) if cache is not None else None
    if data is not None:
        if len(data) == THUMB_SIDE * THUMB_SIDE:
            return np.frombuffer(data, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE)
        return None  # a remembered failure (empty blob)
    try:
        im = preview_image(fm.path, fm.kind, max_side=THUMB_SIDE * 4)
        arr = np.asarray(
            im.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX),
            dtype=np.uint8,
        )
    except Exception:  # corrupt pixel data behind a good header
        arr = None
    if cache is not None:
        cache.set_thumb(fm, arr.tobytes() if arr is not None else b"")
    return arr


def _normalise(t: np.ndarray) -> np.ndarray:
    v = t.astype(np.float32).ravel()
    v -= v.mean()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-3 else np.zeros_like(v)


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Normalised correlation of two thumbnails in [-1, 1] (None if either is missing)."""
    if a is None or b is None:
        return None
    return float(np.dot(_normalise(a), _normalise(b)))


# --------------------------------------------------------------------------- bursts


@dataclass
class Burst:
    """Consecutive frames of one rig position: one stack."""

    subpanorama: str
    frames: list[FrameMeta]
    name: str = ""
    index: int = 0  # 0-based order within its sub-panorama
    row: int = 0
    col: int = 0
    yaw: float | None = None
    pitch: float | None = None
    focal_px: float | None = None
    candidate_group: str = ""
    placed_by: str = ""  # grid / repeat-of:<name> / csv / metadata

    @property
    def start(self) -> float:
        return self.frames[0].time or 0.0

    @property
    def end(self) -> float:
        return self.frames[-1].time or 0.0

    @property
    def representative(self) -> FrameMeta:
        return self.frames[len(self.frames) // 2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subpanorama": self.subpanorama,
            "name": self.name,
            "index": self.index,
            "row": self.row,
            "col": self.col,
            "frames": len(self.frames),
            "start": self.start,
            "end": self.end,
            "yaw": self.yaw,
            "pitch": self.pitch,
            "focal_px": self.focal_px,
            "candidate_group": self.candidate_group,
            "placed_by": self.placed_by,
            "time_sources": sorted({f.time_source for f in self.frames}),
        }


def _time_key(fm: FrameMeta) -> tuple[float, str]:
    return (fm.time if fm.time is not None else fm.mtime_ns / 1e9, fm.rel)


def group_subpanoramas(
    frames: Iterable[FrameMeta],
    params: IngestParams | None = None,
    name: str | None = None,
) -> dict[str, list[FrameMeta]]:
    """Sub-panoramas: one per top-level folder; files lying in the root itself
    are cut at time gaps longer than params.subpanorama_gap_s ("main", "main-2"...).
    NAME puts everything into one sub-panorama. Each list is in time order."""
    params = params or IngestParams()
    groups: dict[str, list[FrameMeta]] = {}
    loose: list[FrameMeta] = []
    for fm in frames:
        if name:
            groups.setdefault(name, []).append(fm)
        elif fm.top:
            groups.setdefault(fm.top, []).append(fm)
        else:
            loose.append(fm)
    for lst in groups.values():
        lst.sort(key=_time_key)
    if loose:
        loose.sort(key=_time_key)
        parts: list[list[FrameMeta]] = [[loose[0]]]
        for prev, fm in itertools.pairwise(loose):
            if _time_key(fm)[0] - _time_key(prev)[0] > params.subpanorama_gap_s:
                parts.append([])
            parts[-1].append(fm)
        for i, part in enumerate(parts):
            key = "main" if i == 0 else f"main-{i + 1}"
            while key in groups:
                key = f"_{key}"
            groups[key] = part
    return dict(sorted(groups.items()))


def split_bursts(
    frames: Iterable[FrameMeta],
    gap_s: float | None = None,
    *,
    params: IngestParams | None = None,
    thumb: Callable[[FrameMeta], np.ndarray | None] | None = None,
    subpanorama: str = "",
) -> list[Burst]:
    """Cut time-ordered frames into bursts.

    A gap below ambiguous_lo x gap_s never splits, one above ambiguous_hi x gap_s
    always does; in between (and whenever a time is only a file mtime, which a
    copy may have reset) the two frames' thumbnails decide: correlation at least
    same_threshold keeps them together. Without a thumb function the plain gap
    rule applies.
    """
    params = params or IngestParams()
    gap = params.gap_s if gap_s is None else gap_s
    lo, hi = params.ambiguous_lo * gap, params.ambiguous_hi * gap
    bursts: list[Burst] = []
    cur: list[FrameMeta] = []
    prev_thumb: np.ndarray | None = None
    prev_thumb_of: FrameMeta | None = None
    for fm in frames:
        if not cur:
            cur = [fm]
            continue
        prev = cur[-1]
        dt = _time_key(fm)[0] - _time_key(prev)[0]
        trusted = prev.time_source != "mtime" and fm.time_source != "mtime"
        if dt > hi:
            split = True
        elif trusted and dt < lo:
            split = False
        elif thumb is None:
            split = dt > gap
        else:
            if prev_thumb_of is not prev:
                prev_thumb, prev_thumb_of = thumb(prev), prev
            t = thumb(fm)
            s = similarity(prev_thumb, t)
            split = (dt > gap) if s is None else s < params.same_threshold
            prev_thumb, prev_thumb_of = t, fm
        if split:
            bursts.append(Burst(subpanorama, cur))
            cur = [fm]
        else:
            cur.append(fm)
    if cur:
        bursts.append(Burst(subpanorama, cur))
    for i, b in enumerate(bursts):
        b.index = i
        b.name = _burst_name(b)
    return bursts


def _burst_name(b: Burst) -> str:
    """Stable stack name: the first frame's path under its sub-panorama folder, no extension."""
    rel = b.frames[0].rel
    top = b.frames[0].top
    if top and rel.startswith(top + "/") and top == b.subpanorama:
        rel = rel[len(top) + 1 :]
    stem = os.path.splitext(rel)[0]
    return stem[-200:]


def find_repeats(
    bursts: list[Burst],
    *,
    params: IngestParams | None = None,
    thumb: Callable[[FrameMeta], np.ndarray | None] | None = None,
    block: int = 2048,
) -> list[list[Burst]]:
    """Groups of bursts showing the same place, shot at least
    repeat_min_separation_s apart: similar representative thumbnails. Sets
    each member's candidate_group; returns the groups (in time order).

    One 576-byte thumbnail per burst is held; correlations are computed in
    blocks, so memory stays at block x bursts floats.
    """
    params = params or IngestParams()
    thumb = thumb or (lambda fm: frame_thumb(fm))
    n = len(bursts)
    if n < 2:
        return []
    side = THUMB_SIDE * THUMB_SIDE
    mat = np.zeros((n, side), dtype=np.uint8)
    valid = np.zeros(n, dtype=bool)
    for i, b in enumerate(bursts):
        t = thumb(b.representative)
        if t is not None and t.size == side:
            mat[i] = t.ravel()
            valid[i] = True
    mids = np.array([(b.start + b.end) / 2 for b in bursts])
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def norm_rows(rows: np.ndarray) -> np.ndarray:
        f = rows.astype(np.float32)
        f -= f.mean(axis=1, keepdims=True)
        nn = np.linalg.norm(f, axis=1, keepdims=True)
        return np.where(nn > 1e-3, f / np.maximum(nn, 1e-3), 0.0)

    for a0 in range(0, n, block):
        A = norm_rows(mat[a0 : a0 + block])
        for b0 in range(a0, n, block):
            B = norm_rows(mat[b0 : b0 + block])
            C = A @ B.T
            ii, jj = np.nonzero(params.repeat_threshold <= C)
            for i, j in zip(ii + a0, jj + b0, strict=False):
                if j <= i or not (valid[i] and valid[j]):
                    continue
                if abs(mids[i] - mids[j]) < params.repeat_min_separation_s:
                    continue
                ri, rj = find(int(i)), find(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    groups = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        grp = sorted((bursts[i] for i in idx), key=lambda b: (b.start, b.subpanorama, b.name))
        first = grp[0]
        gid = "g-" + hashlib.sha1(f"{first.subpanorama}/{first.name}".encode()).hexdigest()[:12]
        for b in grp:
            b.candidate_group = gid
        groups.append(grp)
    groups.sort(key=lambda g: g[0].start)
    return groups


@dataclass(frozen=True)
class GridSpec:
    columns: int | None = None  # None: one row
    serpentine: bool = True


def read_angles_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a photographer's CSV: columns stack, yaw, pitch (optional subpanorama)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if not {"stack", "yaw", "pitch"} <= set(cols):
                raise InputError(
                    path,
                    f"angles CSV needs columns stack, yaw, pitch (found {sorted(cols)})",
                )
            rows = []
            for n, r in enumerate(reader, start=2):
                stack = (r.get(cols["stack"]) or "").strip()
                if not stack:
                    continue
                try:
                    yaw = float(r[cols["yaw"]]) if (r.get(cols["yaw"]) or "").strip() else None
                    pitch = float(r[cols["pitch"]]) if (r.get(cols["pitch"]) or "").strip() else None
                except ValueError as e:
                    raise InputError(path, f"line {n}: {e}") from e
                sub = (r.get(cols["subpanorama"]) or "").strip() if "subpanorama" in cols else ""
                rows.append({"stack": stack, "yaw": yaw, "pitch": pitch, "subpanorama": sub})
            return rows
    except OSError as e:
        raise InputError(path, f"cannot read angles CSV: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InputError(path, "angles CSV is not UTF-8 text") from e


def _focal_px(b: Burst) -> float | None:
    fm = b.representative
    long_side = max(fm.width, fm.height)
    e = fm.exposure
    if e.get("focal_length_mm") and e.get("focal_plane_px_per_mm"):
        return round(e["focal_length_mm"] * e["focal_plane_px_per_mm"], 2)
    if e.get("focal_35mm") and long_side:
        return round(e["focal_35mm"] / 36.0 * long_side, 2)
    return None


def place_bursts(
    bursts: list[Burst],
    grid: GridSpec | int | None = None,
    angles_csv: str | Path | list[dict[str, Any]] | None = None,
) -> list[Burst]:
    """Grid position of each burst of one sub-panorama (bursts in shooting order).

    Bursts that repeat an earlier one (same candidate_group) take its place
    and use no grid slot; the others fill rows of `columns`, every other row
    right to left when serpentine. Yaw/pitch come from the CSV (matched by
    stack name, first file name or stem, or 1-based burst number), else from
    the frames' metadata (median).
    """
    if not isinstance(grid, GridSpec):
        grid = GridSpec(columns=grid)
    primaries = [b for b in bursts if not _is_repeat(b, bursts)]
    cols = grid.columns or max(1, len(primaries))
    first_of: dict[str, Burst] = {}
    slot = 0
    for b in bursts:
        if b.candidate_group and b.candidate_group in first_of:
            src = first_of[b.candidate_group]
            b.row, b.col, b.placed_by = src.row, src.col, f"repeat-of:{src.name}"
            continue
        r, c = divmod(slot, cols)
        if grid.serpentine and r % 2 == 1:
            c = cols - 1 - c
        b.row, b.col, b.placed_by = r, c, "grid"
        slot += 1
        if b.candidate_group:
            first_of[b.candidate_group] = b
    rows = read_angles_csv(angles_csv) if isinstance(angles_csv, str | Path) else (angles_csv or [])
    for b in bursts:
        b.focal_px = _focal_px(b)
        yaws = [f.yaw for f in b.frames if f.yaw is not None]
        pitches = [f.pitch for f in b.frames if f.pitch is not None]
        if yaws or pitches:
            b.yaw = statistics.median(yaws) if yaws else None
            b.pitch = statistics.median(pitches) if pitches else None
            b.placed_by += "+metadata"
        match = _csv_match(b, rows)
        if match is not None:
            b.yaw = match["yaw"] if match["yaw"] is not None else b.yaw
            b.pitch = match["pitch"] if match["pitch"] is not None else b.pitch
            b.placed_by += "+csv"
    return bursts


def _is_repeat(b: Burst, bursts: list[Burst]) -> bool:
    if not b.candidate_group:
        return False
    for o in bursts:
        if o.candidate_group == b.candidate_group:
            return o is not b
    return False


def _csv_match(b: Burst, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not rows:
        return None
    first = os.path.basename(b.frames[0].rel)
    keys = {b.name, first, os.path.splitext(first)[0], str(b.index + 1)}
    for r in rows:
        if r["subpanorama"] and r["subpanorama"] != b.subpanorama:
            continue
        if r["stack"] in keys:
            return r
    return None


# --------------------------------------------------------------------------- plan


@dataclass
class CapturePlan:
    """What an import will create: sub-panoramas of placed bursts, and the
    files that will not become frames, with reasons."""

    root: str
    subpanoramas: dict[str, list[Burst]]
    skipped: list[FrameMeta]
    scanned: int = 0
    repeats: list[list[Burst]] = field(default_factory=list)

    @property
    def bursts(self) -> Iterator[Burst]:
        for lst in self.subpanoramas.values():
            yield from lst

    def to_dict(self, max_skipped: int = 10_000) -> dict[str, Any]:
        stacks = [b.to_dict() for b in self.bursts]
        reasons: dict[str, int] = {}
        for s in self.skipped:
            key = reason_category(s.skipped)
            reasons[key] = reasons.get(key, 0) + 1
        return {
            "root": self.root,
            "files_scanned": self.scanned,
            "frames_placed": sum(s["frames"] for s in stacks),
            "stacks_found": len(stacks),
            "subpanoramas": [
                {"name": k, "stacks": len(v), "frames": sum(len(b.frames) for b in v)}
                for k, v in self.subpanoramas.items()
            ],
            "stacks": stacks,
            "candidate_groups": {g[0].candidate_group: [f"{b.subpanorama}/{b.name}" for b in g] for g in self.repeats},
            "not_placed": [{"path": s.rel, "reason": s.skipped} for s in self.skipped[:max_skipped]],
            "not_placed_truncated": len(self.skipped) > max_skipped,
            "not_placed_counts": reasons,
        }


def plan_capture(
    root: str | Path,
    *,
    params: IngestParams | None = None,
    cache: ScanCache | str | Path | None = None,
    subpanorama: str | None = None,
    angles_csv: str | Path | None = None,
    progress: Callable[[str, int, str], None] | None = None,
    use_similarity: bool = True,
) -> CapturePlan:
    """Scan ROOT and work out sub-panoramas, bursts, repeats and placement."""
    params = params or IngestParams()
    angles = read_angles_csv(angles_csv) if angles_csv else []
    cache_obj, owned = open_cache(cache)
    try:
        frames: list[FrameMeta] = []
        skipped: list[FrameMeta] = []
        scanned = 0
        scan_progress = (lambda n, rel: progress("scan", n, rel)) if progress else None
        for fm in scan_capture(root, cache=cache_obj, progress=scan_progress, params=params):
            scanned += 1
            (frames if fm.ok else skipped).append(fm)
        thumb = (lambda fm: frame_thumb(fm, cache_obj)) if use_similarity else None
        subs: dict[str, list[Burst]] = {}
        for k, (name, lst) in enumerate(group_subpanoramas(frames, params, subpanorama).items()):
            if progress:
                progress("bursts", k, name)
            bursts = split_bursts(lst, params=params, thumb=thumb, subpanorama=name)
            keep = [b for b in bursts if len(b.frames) >= params.min_frames]
            for b in bursts:
                if len(b.frames) < params.min_frames:
                    for fm in b.frames:
                        fm.skipped = f"short burst: {len(b.frames)} frame(s), fewer than {params.min_frames}"
                        skipped.append(fm)
            for i, b in enumerate(keep):
                b.index = i
            subs[name] = keep
        del frames
        all_bursts = [b for lst in subs.values() for b in lst]
        if progress:
            progress("repeats", len(all_bursts), "")
        repeats = find_repeats(all_bursts, params=params, thumb=thumb) if thumb else []
        for lst in subs.values():
            place_bursts(lst, GridSpec(params.columns, params.serpentine), angles)
        skipped.sort(key=lambda s: s.rel)
        return CapturePlan(os.path.realpath(os.fspath(root)), subs, skipped, scanned, repeats)
    finally:
        if owned and cache_obj is not None:
            cache_obj.close()


def params_from_dict(d: dict[str, Any] | None) -> IngestParams:
    return IngestParams.from_dict(d)


__all__ = [
    "Burst",
    "CapturePlan",
    "FrameMeta",
    "GridSpec",
    "IngestParams",
    "ScanCache",
    "find_repeats",
    "frame_checksum",
    "frame_thumb",
    "group_subpanoramas",
    "place_bursts",
    "plan_capture",
    "preview_image",
    "read_angles_csv",
    "read_frame_meta",
    "scan_capture",
    "sha256_file",
    "similarity",
    "split_bursts",
]
