"""The progress page groups a panorama's jobs per run (one enqueue_render:
stack jobs, then the composite, then the pyramid) and estimates when each
run will finish from the durations of earlier jobs of the same kind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Avg, F

from .models import Job, Panorama, Status

ACTIVE = (Status.QUEUED, Status.RUNNING, Status.PENDING)
DEFAULT_SECONDS = {"stack": 30.0, "composite": 30.0, "pyramid": 10.0}


def group_runs(jobs: Iterable[Job]) -> list[list[Job]]:
    """Jobs in creation order, cut into runs: a run ends with its pyramid job.

    enqueue_render creates a run's rows one after the other (stacks, composite,
    pyramid), so consecutive ids up to a pyramid job form one run; jobs of
    other kinds (ingest, thumbnails) are runs of their own. Newest run first.
    """
    runs: list[list[Job]] = []
    current: list[Job] = []
    for job in sorted(jobs, key=lambda j: j.pk):
        if job.kind not in ("stack", "composite", "pyramid"):
            if current:
                runs.append(current)
                current = []
            runs.append([job])
            continue
        if job.kind == "stack" and current and current[-1].kind != "stack":
            runs.append(current)  # a new run's first stack after a run without pyramid
            current = []
        current.append(job)
        if job.kind == "pyramid":
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return list(reversed(runs))


def average_seconds(pano: Panorama) -> dict[str, float]:
    """Mean duration of finished jobs per kind on this panorama (defaults when none)."""
    out = dict(DEFAULT_SECONDS)
    rows = (
        Job.objects.filter(panorama=pano, status=Status.DONE, started__isnull=False, ended__isnull=False)
        .values("kind")
        .annotate(a=Avg(F("ended") - F("started")))
    )
    for row in rows:
        if row["a"] is not None:
            out[row["kind"]] = max(0.1, row["a"].total_seconds())
    return out


def _remaining(job: Job, avg: dict[str, float]) -> float:
    if job.status == Status.RUNNING:
        if job.eta_seconds is not None:
            return float(job.eta_seconds)
        return avg.get(job.kind, 30.0) * (1 - job.progress / 100.0)
    if job.status in (Status.QUEUED, Status.PENDING):
        return avg.get(job.kind, 30.0)
    return 0.0


def summarize(run: list[Job], avg: dict[str, float], workers: dict[str, int]) -> dict[str, Any]:
    """Status counts, overall percent and ETA (seconds, None when no worker would run it)."""
    counts: dict[str, int] = {}
    for j in run:
        counts[j.status] = counts.get(j.status, 0) + 1
    active = [j for j in run if j.status in ACTIVE]
    progress = sum(100.0 if j.status in (Status.DONE,) else j.progress for j in run) / max(1, len(run))
    eta: float | None = None
    stalled = False
    if active:
        stack_left = sum(_remaining(j, avg) for j in active if j.kind == "stack")
        rest = sum(_remaining(j, avg) for j in active if j.kind != "stack")
        gpu = workers.get("gpu", 0)
        default = workers.get("default", 0)
        if (stack_left and gpu <= 0) or (rest and default <= 0):
            stalled = True
        else:
            # Stacks run in parallel on the gpu workers; composite and pyramid one after the other.
            eta = round(stack_left / max(1, gpu) + rest)
    if any(j.status == Status.FAILED for j in run) and not active:
        state = "failed"
    elif active:
        state = "running" if any(j.status == Status.RUNNING for j in run) else "queued"
    elif all(j.status == Status.CANCELED for j in run):
        state = "canceled"
    else:
        state = "done"
    first, last = run[0], run[-1]
    region = next((j.params.get("region") for j in run if j.params.get("region")), None)
    return {
        "ids": [j.pk for j in run],
        "state": state,
        "counts": counts,
        "progress": round(progress, 1),
        "eta": eta,
        "stalled": stalled,
        "created": first.created.isoformat(),
        "kind": "partial re-render" if region else ("render" if last.kind == "pyramid" else first.kind),
        "region": region,
        "stacks": sum(1 for j in run if j.kind == "stack"),
    }
