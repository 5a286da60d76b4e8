"""What the re-render confirmation and the progress page tell editors beyond
the plan and the job list: missing workers, recipe errors with the valid
parameters, and jobs grouped per run with an overall ETA."""

from __future__ import annotations

from typing import Any

from . import recipe_help, runs, worker_status
from .models import Job, Panorama


def editor_context(plan: Any, recipe_error: str | None) -> dict[str, Any]:
    """Extra context of the re-render confirmation page."""
    kinds = {"stack"} if plan.stacks else set()
    kinds |= {"composite", "pyramid"}
    return {
        "worker_warnings": worker_status.warnings(kinds),
        "recipe_error": recipe_error,
        "recipe_suggestions": recipe_help.suggestions(recipe_error) if recipe_error else [],
        "recipe_parameters": recipe_help.stage_parameters(),
    }


def progress_extras(pano: Panorama, jobs: list[Job]) -> dict[str, Any]:
    """Runs (newest first) with status counts, overall percent and ETA; worker warnings."""
    counts = worker_status.listeners()
    avg = runs.average_seconds(pano)
    grouped = [runs.summarize(r, avg, counts) for r in runs.group_runs(jobs)]
    return {
        "workers": counts,
        "warnings": worker_status.warnings(worker_status.waiting_kinds(jobs), counts),
        "runs": grouped,
    }
