import json
import shutil

import numpy as np
import pytest

from processing.io.errors import InputError
from processing.io.imageio import load_image, write_image
from processing.io.metrics import psnr
from processing.stack.flow import FlowParams
from processing.stack.fuse import FuseParams
from processing.stack.pipeline import StackParams, list_frames, process_stack
from processing.synth.synth import make_burst, write_burst

from .._sr_helpers import gt_image


@pytest.fixture(scope="module")
def burst_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("burst")
    b = make_burst(gt_image(256), 8, 2.0, seed=7, noise=0.004)
    write_burst(b, d)
    return d


def test_params_roundtrip():
    p = StackParams().replace(fuse=FuseParams(method="naive"), flow=FlowParams(method="none"))
    d = json.loads(json.dumps(p.to_dict()))
    assert StackParams.from_dict(d) == p
    with pytest.raises(ValueError):
        StackParams.from_dict({"nope": {}})


def test_stack_output_geometry_and_quality(burst_dir):
    gt, _ = load_image(burst_dir / "truth" / "gt.png")
    res = process_stack(list_frames(burst_dir), 2.0, upscale_model=False)
    assert res.image.shape == (256, 256, 3) and res.image.dtype == np.float32
    assert res.metrics["reference"] == "frame_000.png"
    assert sum(f["kept"] for f in res.frames) == 6  # 2 least sharp dropped
    assert all(set(f) >= {"file", "sharpness", "kept", "reason", "transform", "reg_error"} for f in res.frames)
    import cv2

    ref, _ = load_image(burst_dir / "frame_000.png")
    bic = cv2.resize(ref, (256, 256), interpolation=cv2.INTER_CUBIC)
    assert psnr(res.image, gt, 8) > psnr(bic, gt, 8)
    # Non-integer scale: exact rounding of S x reference size.
    res = process_stack(list_frames(burst_dir), 1.3, StackParams(flow=FlowParams(method="none")), upscale_model=False)
    assert res.image.shape == (166, 166, 3)
    assert set(res.metrics["seconds"]) >= {"develop", "align", "master", "fuse"}
    assert res.recipe["scale"] == 1.3


def test_reference_choice_is_kept(burst_dir):
    res = process_stack(
        list_frames(burst_dir),
        1.0,
        StackParams(flow=FlowParams(method="none")),
        reference="frame_003.png",
        upscale_model=False,
    )
    assert res.metrics["reference"] == "frame_003.png"
    rec = {f["file"]: f for f in res.frames}
    assert rec["frame_003.png"]["kept"] and np.allclose(rec["frame_003.png"]["transform"], np.eye(3))
    with pytest.raises(InputError, match="not among"):
        process_stack(list_frames(burst_dir), 1.0, reference="zzz.png")


def test_corrupt_file_skipped_and_odd_frames(burst_dir, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(burst_dir, d, ignore=shutil.ignore_patterns("truth*"))
    (d / "frame_002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    rng = np.random.default_rng(0)
    write_image(d / "frame_009.png", rng.random((128, 128, 3)).astype(np.float32))  # unalignable
    write_image(d / "frame_010.png", np.zeros((60, 60, 3), np.float32) + 0.5)  # wrong size
    res = process_stack(list_frames(d), 1.0, StackParams(flow=FlowParams(method="none")), upscale_model=False)
    rec = {f["file"]: f for f in res.frames}
    assert not rec["frame_002.png"]["kept"] and "unreadable" in rec["frame_002.png"]["reason"]
    assert not rec["frame_009.png"]["kept"] and rec["frame_009.png"]["reason"]
    assert not rec["frame_010.png"]["kept"] and "size" in rec["frame_010.png"]["reason"]
    assert res.image.shape == (128, 128, 3)


def test_frames_of_slightly_different_size(burst_dir, tmp_path):
    import cv2

    d = tmp_path / "c"
    d.mkdir()
    for i in range(4):
        img, _ = load_image(burst_dir / f"frame_{i:03d}.png")
        if i == 2:
            img = cv2.resize(img, (136, 134), interpolation=cv2.INTER_AREA)  # ~6 % larger
        write_image(d / f"f{i}.png", img)
    res = process_stack(list_frames(d), 1.0, StackParams(flow=FlowParams(method="none")), upscale_model=False)
    rec = {f["file"]: f for f in res.frames}
    assert res.image.shape == (128, 128, 3)
    assert rec["f2.png"]["kept"] or "sharpness" in rec["f2.png"]["reason"]


def test_bad_stacks(tmp_path, burst_dir):
    with pytest.raises(InputError, match="no images"):
        list_frames(tmp_path)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(burst_dir / "frame_000.png", one)
    with pytest.raises(InputError, match="at least 2 frames") as e:
        process_stack(list_frames(one), 2.0)
    assert str(one) in str(e.value)
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(burst_dir / "frame_000.png", two)
    (two / "frame_001.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="at least 2"):
        process_stack(list_frames(two), 2.0)


def test_model_route_above_x2(burst_dir, monkeypatch):
    """S > 2 fuses at x2 and hands the rest to processing.upscale.upscale (faked here:
    the real model is tested by its owner)."""
    import sys
    import types

    import cv2

    calls = []

    def upscale_array(img, scale, device=False):
        calls.append((img.shape, scale))
        h, w = img.shape[:2]
        return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)

    monkeypatch.setitem(sys.modules, "processing.upscale.upscale", types.SimpleNamespace(upscale_array=upscale_array))
    res = process_stack(list_frames(burst_dir), 3.0, StackParams(flow=FlowParams(method="none")))
    assert calls == [((256, 256, 3), 1.5)]
    assert res.image.shape == (384, 384, 3) and res.metrics["upscale_model"] and res.metrics["fuse_scale"] == 2.0
    res = process_stack(list_frames(burst_dir), 3.0, StackParams(flow=FlowParams(method="none")), upscale_model=False)
    assert len(calls) == 1 and res.image.shape == (384, 384, 3) and not res.metrics["upscale_model"]


def test_colour_options_run_in_pipeline(burst_dir):
    from processing.stack.color import ColorParams

    p = StackParams(flow=FlowParams(method="none"), color=ColorParams(tca=True, dehaze=True))
    res = process_stack(list_frames(burst_dir), 1.0, p, upscale_model=False)
    assert res.image.shape == (128, 128, 3) and np.isfinite(res.image).all()
    assert "tca" in res.metrics and "dehaze" in res.metrics["seconds"]
    assert res.recipe["stack"]["color"]["tca"] is True


@pytest.mark.parametrize("threads", ["1", "3"])
def test_alignment_starts_during_develop_only_for_frames_that_stay(burst_dir, monkeypatch, threads):
    """Alignments are queued while frames still decode, but only for frames
    the sharpness ranking can no longer drop: every alignment run is used,
    and the result is the one the stage-by-stage order gives."""
    from processing.stack import align as al

    calls: list[int] = []
    real = al.coarse_align

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(al, "coarse_align", counting)
    monkeypatch.setenv("TERAPAN_THREADS", threads)
    res = process_stack(list_frames(burst_dir), 2.0, upscale_model=False)
    dropped = [f for f in res.frames if f["reason"].startswith("sharpness")]
    assert len(dropped) == StackParams().sharpness.drop_worst
    assert all(f["transform"] is None for f in dropped)
    n_others = sum(1 for f in res.frames if f["sharpness"] is not None) - 1 - len(dropped)
    assert len(calls) == n_others  # nothing aligned in vain
    assert 0 < res.metrics["aligned_during_develop"] <= n_others
