"""processing.capture.ingest: scan, cache, bursts, repeats, placement on a synthetic capture."""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from PIL import Image

from processing.capture import ingest
from processing.capture.ingest import (
    FrameMeta,
    GridSpec,
    IngestParams,
    find_repeats,
    group_subpanoramas,
    place_bursts,
    plan_capture,
    scan_capture,
    sha256_file,
    split_bursts,
)

from .._ingest_helpers import T0, make_capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory):
    return make_capture(tmp_path_factory.mktemp("ingest") / "capture")


def _by_rel(root: Path, **kw) -> dict[str, FrameMeta]:
    return {fm.rel: fm for fm in scan_capture(root, **kw)}


def test_scan_reads_headers_and_reasons(capture) -> None:
    metas = _by_rel(capture.root)
    ok = [m for m in metas.values() if m.ok]
    assert len(ok) == capture.frames
    first = metas["A/100CAM/IMG_0001.jpg"]
    assert first.kind == "jpeg" and (first.width, first.height) == (96, 64)
    assert first.time_source == "exif" and first.time == pytest.approx(T0)
    assert metas["A/100CAM/IMG_0002.jpg"].time == pytest.approx(T0 + 0.05)  # SubSecTimeOriginal
    assert first.exposure["iso"] == 200
    assert first.exposure["exposure_time"] == pytest.approx(1 / 500)
    assert first.exposure["f_number"] == 8.0 and first.exposure["focal_length_mm"] == 600.0
    # no EXIF: the file's mtime, recorded as such
    png = metas["B/P0001.png"]
    assert png.time_source == "mtime" and png.time == pytest.approx(T0 + 1000.0)
    assert metas["B/P0004.tif"].kind == "tiff"
    for rel, reason in capture.skipped.items():
        assert metas[rel].skipped.startswith(reason), (rel, metas[rel].skipped)


def test_scan_skips_hidden_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "a" / "x.jpg")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / ".hidden" / "y.jpg")
    os.symlink("/etc/hostname", tmp_path / "a" / "link.jpg")
    metas = _by_rel(tmp_path)
    assert set(metas) == {"a/link.jpg", "a/x.jpg"}
    assert metas["a/link.jpg"].skipped.startswith("symbolic link")
    assert metas["a/x.jpg"].ok and metas["a/x.jpg"].time_source == "mtime"


def test_cache_makes_rescans_header_free(capture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache.sqlite3"
    cold = _by_rel(capture.root, cache_path=cache)

    def boom(*a, **k):
        raise AssertionError("header read despite a valid cache entry")

    monkeypatch.setattr(ingest, "read_frame_meta", boom)
    warm = _by_rel(capture.root, cache_path=cache)
    assert {k: (v.time, v.skipped, v.exposure) for k, v in warm.items()} == {
        k: (v.time, v.skipped, v.exposure) for k, v in cold.items()
    }
    monkeypatch.undo()
    # a changed file (new mtime) is read again, not taken from the cache
    p = capture.root / "B/P0002.png"
    st = p.stat()
    try:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        seen = []
        real = ingest.read_frame_meta
        monkeypatch.setattr(ingest, "read_frame_meta", lambda *a, **k: seen.append(a[1]) or real(*a, **k))
        again = _by_rel(capture.root, cache_path=cache)
        assert seen == ["B/P0002.png"]
        assert again["B/P0002.png"].time == pytest.approx(T0 + 1005.05)
    finally:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_plan_finds_the_expected_stacks(capture, tmp_path: Path) -> None:
    plan = plan_capture(capture.root, cache=tmp_path / "c.sqlite3", params=IngestParams(columns=2))
    got = [(b.subpanorama, b.name, len(b.frames)) for b in plan.bursts]
    assert got == capture.stacks
    d = plan.to_dict()
    assert d["stacks_found"] == len(capture.stacks) and d["frames_placed"] == capture.frames
    assert [s["name"] for s in d["subpanoramas"]] == ["A", "B"]
    assert {n["path"] for n in d["not_placed"]} == set(capture.skipped)
    assert d["not_placed_counts"] == {"corrupt": 1, "not an image": 1, "too small": 1}
    json.dumps(d)  # serialisable as is
    # the repeated area: first and last bursts of A share one candidate group, placed together
    a = {b.name: b for b in plan.subpanoramas["A"]}
    r1, r2 = (a[n] for n in capture.repeat)
    assert r1.candidate_group and r1.candidate_group == r2.candidate_group
    assert sum(1 for b in plan.bursts if b.candidate_group) == 2
    assert (r2.row, r2.col) == (r1.row, r1.col) == (0, 0)
    assert r2.placed_by.startswith("repeat-of:")
    # serpentine: A's three distinct places fill (0,0), (0,1), then (1,1)
    assert [(b.row, b.col) for b in plan.subpanoramas["A"][:3]] == [(0, 0), (0, 1), (1, 1)]
    assert a[capture.repeat[0]].focal_px == pytest.approx(900 / 36 * 96)


def test_ambiguous_gaps_need_the_pictures(capture) -> None:
    frames = sorted((m for m in scan_capture(capture.root) if m.ok and m.top == "A"), key=lambda m: m.time)
    with_pictures = split_bursts(frames, gap_s=1.0, thumb=ingest.frame_thumb, subpanorama="A")
    assert [len(b.frames) for b in with_pictures] == [6, 4, 4, 4]
    # time alone: a gap of 1.2 s (a new place, ambiguous) is merged at gap 1.5 ...
    by_time = split_bursts(frames, gap_s=1.5, subpanorama="A")
    assert [len(b.frames) for b in by_time] == [6, 8, 4]
    # ... and the 1.0 s buffer stall (same place) is split at gap 0.8
    assert [len(b.frames) for b in split_bursts(frames, gap_s=0.8, subpanorama="A")] == [3, 3, 4, 4, 4]
    # with the thumbnails both come out right at either setting
    for gap in (0.8, 1.5):
        got = split_bursts(frames, gap_s=gap, thumb=ingest.frame_thumb, subpanorama="A")
        assert [len(b.frames) for b in got] == [6, 4, 4, 4], gap


def test_find_repeats_needs_time_apart(capture) -> None:
    frames = sorted((m for m in scan_capture(capture.root) if m.ok and m.top == "A"), key=lambda m: m.time)
    bursts = split_bursts(frames, thumb=ingest.frame_thumb, subpanorama="A")
    groups = find_repeats(bursts, thumb=ingest.frame_thumb)
    assert [[b.name for b in g] for g in groups] == [list(capture.repeat)]
    for b in bursts:
        b.candidate_group = ""
    assert find_repeats(bursts, params=IngestParams(repeat_min_separation_s=10_000), thumb=ingest.frame_thumb) == []


def _fake(rel: str, t: float, **kw) -> FrameMeta:
    return FrameMeta(path="/x/" + rel, rel=rel, size=1, mtime_ns=0, kind="jpeg", width=6000, height=4000, time=t,
                     time_source="exif", **kw)  # fmt: skip


def test_place_bursts_serpentine_and_csv(tmp_path: Path) -> None:
    frames = [_fake(f"S/IMG_{i:04d}.CR2", 100 + i * 5 + (i % 3) * 0.05) for i in range(21)]
    bursts = split_bursts(frames, subpanorama="S")
    assert len(bursts) == 21
    bursts = [b for b in bursts if b.frames[0].time % 5 < 0.01]  # one frame each: fine for placement
    assert len(bursts) == 7
    for i, b in enumerate(bursts):
        b.index = i
    csv_path = tmp_path / "angles.csv"
    csv_path.write_text("Stack,Yaw,Pitch\nIMG_0003,30.5,-2\n7,90,5\n")
    place_bursts(bursts, GridSpec(columns=3), csv_path)
    assert [(b.row, b.col) for b in bursts] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0), (2, 0)]
    assert (bursts[1].yaw, bursts[1].pitch) == (30.5, -2.0)  # matched by file stem
    assert (bursts[6].yaw, bursts[6].pitch) == (90.0, 5.0)  # matched by burst number
    assert bursts[0].yaw is None
    place_bursts(bursts, GridSpec(columns=3, serpentine=False))
    assert bursts[3].col == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("name,yaw\nx,1\n")
    with pytest.raises(ingest.InputError, match="columns stack, yaw, pitch"):
        place_bursts(bursts, 3, bad)


def test_rig_angles_from_metadata() -> None:
    frames = [_fake(f"S/{i}.jpg", float(i) * 0.05, yaw=10.0 + i * 0.01, pitch=-5.0) for i in range(5)]
    (b,) = place_bursts(split_bursts(frames, subpanorama="S"))
    assert b.yaw == pytest.approx(10.02) and b.pitch == -5.0 and "metadata" in b.placed_by


def test_subpanoramas_from_folders_or_long_gaps() -> None:
    frames = [_fake("A/1.jpg", 0), _fake("B/1.jpg", 5), _fake("2.jpg", 10), _fake("3.jpg", 10 + 4000)]
    groups = group_subpanoramas(frames, IngestParams(subpanorama_gap_s=1800))
    assert {k: [f.rel for f in v] for k, v in groups.items()} == {
        "A": ["A/1.jpg"],
        "B": ["B/1.jpg"],
        "main": ["2.jpg"],
        "main-2": ["3.jpg"],
    }
    assert list(group_subpanoramas(frames, name="all")) == ["all"]


def test_exif_time_parsing() -> None:
    assert ingest._parse_exif_time("2024:03:01 10:00:07") == (2024, 3, 1, 10, 0, 7)
    assert ingest._parse_exif_time("2021.01.11 11.18.19") == (2021, 1, 11, 11, 18, 19)
    assert ingest._parse_exif_time("0000:00:00 00:00:00") is None
    assert ingest._subsec("05") == pytest.approx(0.05)
    assert ingest._offset_min("+02:00") == 120 and ingest._offset_min("-0530") == -330
    ex = Image.Exif()
    ifd = ex.get_ifd(0x8769)
    ifd[0x9003] = "2024:03:01 12:00:00"
    ifd[0x9011] = "+02:00"
    assert ingest._from_exif(ex)["time"] == T0  # 12:00 at +02:00 is 10:00 UTC


def test_sha256_streamed(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    p.write_bytes(data)
    assert sha256_file(p, bufsize=65536) == hashlib.sha256(data).hexdigest()


def test_raw_header_from_shared_data(shared_data: Path) -> None:
    kdc = shared_data / "raw" / "RAW_KODAK_DC50.KDC"
    if not kdc.exists():
        pytest.skip("no KDC sample")
    st = kdc.stat()
    fm = ingest.read_frame_meta(str(kdc), kdc.name, st.st_size, st.st_mtime_ns)
    assert fm.ok and fm.kind == "raw" and (fm.width, fm.height) == (768, 512)
    assert fm.time_source in ("exif", "exif-datetime", "raw")
    assert ingest.calendar.timegm((1997, 4, 23, 8, 0, 47, 0, 0, 0)) == fm.time
    assert fm.exposure.get("f_number") == pytest.approx(6.2)


def test_bench_runs_small(tmp_path: Path) -> None:
    from processing.__main__ import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["bench", "ingest", "--files", "120", "--dir", str(tmp_path)])
    assert rc == 0
    out = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert out["frames_ok"] == 120 and out["stacks_found"] == out["bursts_written"] == 8
    assert out["subpanoramas"] == 4 and out["cached_frames_per_s"] > 0
    assert list(tmp_path.iterdir()) == []  # cleaned up
