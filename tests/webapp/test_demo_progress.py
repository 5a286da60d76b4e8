"""The demo's progress bar weighs a farm chain's jobs by their cost: with the stacks done and
the farm half done it is not at 95 %."""

from __future__ import annotations

from webapp.panoramas.management.commands.demo import chain_progress
from webapp.panoramas.models import Job, Status


def _rows(stacks_done: int, farm_share: float, total: int | None, layout_done: bool = True) -> list[Job]:
    rows = [Job(kind=Job.Kind.STACK, status=Status.DONE if i < stacks_done else Status.QUEUED) for i in range(16)]
    rows.append(Job(kind=Job.Kind.LAYOUT, status=Status.DONE if layout_done else Status.QUEUED))
    params = {"farm": True, **({"total": total} if total else {})}
    msg = f"farm: {round(farm_share * (total or 0))}/{total} jobs" if total else ""
    rows.append(Job(kind=Job.Kind.PYRAMID, status=Status.QUEUED, progress=100 * farm_share, params=params, message=msg))
    return rows


def test_the_farm_counts_job_by_job() -> None:
    start, _ = chain_progress(_rows(0, 0.0, None, layout_done=False))
    stacks_done, _ = chain_progress(_rows(16, 0.0, 69))
    half, note = chain_progress(_rows(16, 0.5, 69))
    assert start == 0.0
    assert 40 < stacks_done < 55  # 16 stacks x 4 + the layout's 2 of 135 units
    assert 65 < half < 80 and note == "farm: 34/69 jobs"
    done = _rows(16, 1.0, 69)
    done[-1].status = Status.DONE
    assert chain_progress(done)[0] == 100.0
