"""The stack as a sequence of stages (pipeline.STAGES): the metrics follow the
sequence, each stage reports inside its own share of the progress, and a
stage added to the sequence in that one place runs, is timed and reports."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from processing.stack import pipeline
from processing.stack.color import ColorParams
from processing.stack.pipeline import STAGES, StackParams, StackRun, StackState, Stage, list_frames, process_stack
from processing.synth.synth import make_burst, write_burst

from .._sr_helpers import texture


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    d = tmp_path_factory.mktemp("stages")
    write_burst(make_burst(texture(128, seed=2), 5, 2.0, seed=5), d)
    return list_frames(d)


def test_stage_names_are_unique_and_timed_ones_appear_in_order(burst) -> None:
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names))
    params = StackParams().replace(color=ColorParams(dehaze=True))
    res = process_stack(burst, 2.0, params, upscale_model=False, result_dtype="uint16")
    ran = [s.name for s in STAGES if s.timed and s.name in res.metrics["seconds"]]
    assert list(res.metrics["seconds"]) == ran == list(res.metrics["cpu_seconds"])
    # every timed stage whose condition holds on this CPU run is there
    cpu_run = ["develop", "sharpness", "align", "color", "master", "flow", "fuse", "dehaze", "deblur", "sharpen"]
    assert ran == [*cpu_run, "quantize"]


def test_frame_stages_come_first() -> None:
    flags = [s.frame_parallel for s in STAGES]
    assert flags == sorted(flags, reverse=True), "a frame-parallel stage after the frame threads ended"


def test_each_stage_reports_inside_its_span(burst, monkeypatch) -> None:
    seen: list[tuple[str, float]] = []
    current = {"name": ""}

    def tracing(stage: Stage) -> Stage:
        def run(r: StackRun, s: StackState, report):  # noqa: ANN202
            current["name"] = stage.name
            return stage.run(r, s, report)

        return dataclasses.replace(stage, run=run)

    monkeypatch.setattr(pipeline, "STAGES", tuple(tracing(s) for s in STAGES))
    process_stack(burst, 2.0, progress=lambda f, m: seen.append((current["name"], f)), upscale_model=False)
    spans = {s.name: s.progress for s in STAGES}
    reported = {name for name, _ in seen}
    assert {"develop", "align", "master", "flow", "fuse"} <= reported
    for name, f in seen[:-1]:  # the last is "done", after the stages
        lo, span = spans[name]
        assert lo - 1e-9 <= f <= lo + span + 1e-9, (name, f)
    assert seen[-1][1] == 1.0


def test_a_stage_added_in_one_place_runs_timed_with_its_progress(burst, monkeypatch) -> None:
    def grey(run: StackRun, s: StackState, report) -> StackState:  # noqa: ANN001
        report(0.5, "grey")
        s.image = np.repeat(s.image.mean(axis=2, keepdims=True), 3, axis=2)
        return s

    at = [s.name for s in STAGES].index("sharpen")
    seq = (*STAGES[:at], Stage("grey", grey, progress=(0.9, 0.1)), *STAGES[at:])
    monkeypatch.setattr(pipeline, "STAGES", seq)
    msgs: list[tuple[float, str]] = []
    res = process_stack(burst, 2.0, progress=lambda f, m: msgs.append((f, m)), upscale_model=False)
    assert list(res.metrics["seconds"])[-2:] == ["grey", "sharpen"]
    assert (pytest.approx(0.95), "grey") in msgs
    assert np.allclose(res.image[..., 0], res.image[..., 1], atol=1e-6)  # sharpening keeps grey grey
