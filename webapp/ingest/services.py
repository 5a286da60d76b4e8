"""Import a capture folder into Panorama / SubPanorama / Stack / Frame rows.

The image side (scan, bursts, repeats, placement) is processing.capture.ingest; here
rows are written. Originals are only read. Every burst is written in its own
transaction with unique keys (sub-panorama name, stack name, frame path), so
an import killed half-way leaves whole bursts only, and running it again
adds what is missing and changes nothing else.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from processing.capture.ingest import (
    Burst,
    IngestParams,
    ScanCache,
    frame_checksum,
    plan_capture,
    reason_category,
    sha256_file,
)
from webapp.panoramas.models import Frame, Panorama, Stack, SubPanorama

#: progress(stage, done, total): stage is "count", "scan", "bursts", "repeats" or "import".
Progress = Callable[[str, int, int], None]


class ImportInterrupted(RuntimeError):
    """Raised by the stop_after test hook: the import stopped between bursts."""


class ImportRootError(ValueError):
    """A folder outside settings.TERAPAN_IMPORT_ROOTS, or not a folder."""


def import_roots() -> list[Path]:
    """The folders imports may read from (symlinks resolved)."""
    roots = getattr(settings, "TERAPAN_IMPORT_ROOTS", None)
    if roots is None:
        roots = [Path(settings.MEDIA_ROOT) / "imports", Path(settings.BASE_DIR).parent / "shared" / "data"]
    return [Path(os.path.realpath(r)) for r in roots]


def resolve_import_dir(folder: str | Path) -> Path:
    """FOLDER (absolute, or relative to an import root) as a real path inside
    one of the import roots; refuses anything that escapes them, symlinks included."""
    raw = str(folder).strip()
    if not raw or "\x00" in raw:
        raise ImportRootError("no folder given")
    roots = import_roots()
    candidates = [Path(raw)] if os.path.isabs(raw) else [r / raw for r in roots]
    for cand in candidates:
        real = Path(os.path.realpath(cand))
        inside = any(real == r or real.is_relative_to(r) for r in roots)
        if not inside:
            continue
        if not real.is_dir():
            raise ImportRootError(f"{raw}: not a folder")
        return real
    allowed = ", ".join(str(r) for r in roots)
    raise ImportRootError(f"{raw}: outside the allowed import folders ({allowed})")


def cache_path() -> Path:
    p = getattr(settings, "TERAPAN_INGEST_CACHE", None)
    return Path(p) if p else Path(settings.VAR_DIR) / "ingest-cache.sqlite3"


def count_files(root: str | Path) -> int:
    """Number of non-hidden files under ROOT (names only: a fast progress total)."""
    n = 0
    stack = [os.fspath(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    else:
                        n += 1
        except OSError:
            continue
    return n


def make_params(*, columns: int | None = None, gap: float | None = None, base: dict | None = None) -> IngestParams:
    p = IngestParams.from_dict(base or {})
    changes: dict[str, Any] = {}
    if columns is not None:
        if columns < 1:
            raise ValueError("columns must be at least 1")
        changes["columns"] = int(columns)
    if gap is not None:
        if not gap > 0:
            raise ValueError("gap must be positive seconds")
        changes["gap_s"] = float(gap)
    return p.replace(**changes) if changes else p


def _aware(t: float | None) -> dt.datetime | None:
    # EXIF local time without an offset is stored as if it were UTC (see docs/ingest.md).
    return dt.datetime.fromtimestamp(t, tz=dt.UTC) if t is not None else None


def _frame_row(stack: Stack, fm: Any) -> Frame:
    exposure = dict(fm.exposure)
    exposure["time_source"] = fm.time_source
    if fm.tz_offset_min is not None:
        exposure["tz_offset_min"] = fm.tz_offset_min
    return Frame(
        stack=stack,
        original_path=fm.path,
        checksum=fm.checksum,
        size_bytes=fm.size,
        width=fm.width or None,
        height=fm.height or None,
        capture_time=_aware(fm.time),
        exposure=exposure,
    )


_PLACEMENT = ("row", "col", "yaw", "pitch", "focal_px", "candidate_group")


def _write_burst(
    sp: SubPanorama, b: Burst, known: dict[str, str], cache: ScanCache | None, checksums: bool
) -> tuple[int, int, list[dict[str, str]]]:
    """One burst in one transaction: (frames created, frames already there, not placed)."""
    not_placed: list[dict[str, str]] = []
    frames = []
    key = f"{sp.name}/{b.name}"
    for fm in b.frames:
        other = known.get(fm.path)
        if other is not None and other != key:
            not_placed.append({"path": fm.rel, "reason": f"already imported: in stack {other}"})
            continue
        frames.append(fm)
    if checksums:  # outside the transaction: hashing is the slow part
        for fm in list(frames):
            try:
                frame_checksum(fm, cache)
            except OSError as e:
                frames.remove(fm)
                not_placed.append({"path": fm.rel, "reason": f"unreadable: {e.strerror}"})
    if not frames:
        return 0, 0, not_placed
    placement = {"row": b.row, "col": b.col, "yaw": b.yaw, "pitch": b.pitch, "focal_px": b.focal_px}
    placement["candidate_group"] = b.candidate_group
    with transaction.atomic():
        stack, created = Stack.objects.get_or_create(subpanorama=sp, name=b.name, defaults=placement)
        if not created:
            changed = [f for f in _PLACEMENT if getattr(stack, f) != placement[f]]
            if changed:
                for f in changed:
                    setattr(stack, f, placement[f])
                stack.save(update_fields=[*changed, "updated"])
        before = stack.frames.count()
        Frame.objects.bulk_create([_frame_row(stack, fm) for fm in frames], ignore_conflicts=True)
        after = stack.frames.count()
    for fm in frames:
        known[fm.path] = key
    return after - before, len(frames) - (after - before), not_placed


def import_capture(
    slug: str,
    root: str | Path,
    *,
    subpanorama: str | None = None,
    dry_run: bool = False,
    angles_csv: str | Path | None = None,
    params: IngestParams | None = None,
    progress: Progress | None = None,
    stop_after: int | None = None,
    checksums: bool = True,
    title: str | None = None,
) -> dict[str, Any]:
    """Scan ROOT, plan the stacks and (unless dry_run) write the rows.

    Returns the plan (processing.capture.ingest.CapturePlan.to_dict) plus, for a real
    import, what was created. stop_after=N raises ImportInterrupted after N
    bursts were written (a test hook for resuming).
    """
    params = params or IngestParams()
    root = Path(os.path.realpath(root))
    if not root.is_dir():
        raise ImportRootError(f"{root}: not a folder")
    total_files = count_files(root) if progress else 0
    if progress:
        progress("count", total_files, total_files)

    def plan_progress(stage: str, n: int, _msg: str) -> None:
        if progress:
            progress(stage, n, total_files if stage == "scan" else 0)

    with ScanCache(cache_path()) as cache:
        plan = plan_capture(
            root,
            params=params,
            cache=cache,
            subpanorama=subpanorama,
            angles_csv=angles_csv,
            progress=plan_progress,
        )
        result = plan.to_dict()
        result.update(slug=slug, dry_run=dry_run, params=params.to_dict())
        if dry_run:
            return result

        pano, pano_created = Panorama.objects.get_or_create(slug=slug, defaults={"title": title or slug})
        known: dict[str, str] = {}
        for path, sp_name, st_name in Frame.objects.filter(stack__subpanorama__panorama=pano).values_list(
            "original_path", "stack__subpanorama__name", "stack__name"
        ):
            known[path] = f"{sp_name}/{st_name}"
        existing_subs = {s.name: s for s in pano.subpanoramas.all()}
        next_order = max((s.order for s in existing_subs.values()), default=-1) + 1
        frames_total = result["frames_placed"]
        done = created_frames = existing_frames = bursts_written = 0
        extra_not_placed: list[dict[str, str]] = []
        created_stacks_before = Stack.objects.filter(subpanorama__panorama=pano).count()
        for sp_name, bursts in plan.subpanoramas.items():
            sp = existing_subs.get(sp_name)
            if sp is None:
                sp, _ = SubPanorama.objects.get_or_create(panorama=pano, name=sp_name, defaults={"order": next_order})
                existing_subs[sp_name] = sp
                next_order += 1
            for b in bursts:
                if stop_after is not None and bursts_written >= stop_after:
                    raise ImportInterrupted(f"stopped after {bursts_written} bursts")
                c, e, bad = _write_burst(sp, b, known, cache, checksums)
                created_frames += c
                existing_frames += e
                extra_not_placed.extend(bad)
                bursts_written += 1
                done += len(b.frames)
                if progress:
                    progress("import", done, frames_total)
        stacks_after = Stack.objects.filter(subpanorama__panorama=pano).count()
    result["not_placed"].extend(extra_not_placed)
    for item in extra_not_placed:
        k = reason_category(item["reason"])
        result["not_placed_counts"][k] = result["not_placed_counts"].get(k, 0) + 1
    result.update(
        panorama_id=pano.pk,
        panorama_created=pano_created,
        created={
            "stacks": stacks_after - created_stacks_before,
            "frames": created_frames,
        },
        unchanged_frames=existing_frames,
    )
    return result


def verify_frames(stack: Stack) -> list[str]:
    """Originals of STACK that are missing or whose size/checksum changed since
    import (streamed SHA-256 of every file that has a recorded checksum)."""
    bad: list[str] = []
    for f in stack.frames.all().only("original_path", "size_bytes", "checksum"):
        p = f.original_path
        try:
            size = os.stat(p).st_size
        except OSError:
            bad.append(p)
            continue
        if f.size_bytes and size != f.size_bytes:
            bad.append(p)
            continue
        if f.checksum:
            try:
                if sha256_file(p) != f.checksum:
                    bad.append(p)
            except OSError:
                bad.append(p)
    return bad


def plan_rows(result: dict[str, Any], limit: int = 500) -> list[dict[str, Any]]:
    """The first LIMIT stacks of a plan, for the admin table."""
    return list(result.get("stacks", [])[:limit])
