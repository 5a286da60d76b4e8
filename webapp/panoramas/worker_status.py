"""Are workers listening? Jobs in a queue nobody listens to wait for ever,
so the admin says so instead of showing "queued 0 %"."""

from __future__ import annotations

import django_rq
from django.conf import settings
from rq import Worker

from .models import Job, Status

#: The queue each kind of job goes to (webapp/panoramas/pipeline.py).
QUEUE_OF_KIND = {Job.Kind.STACK: "gpu", Job.Kind.COMPOSITE: "default", Job.Kind.PYRAMID: "default"}


def listeners() -> dict[str, int]:
    """Number of live workers listening to each configured queue (-1: Redis unreachable)."""
    out: dict[str, int] = {}
    for name in settings.RQ_QUEUES:
        try:
            queue = django_rq.get_queue(name)
            out[name] = len(Worker.all(queue=queue))
        except Exception:  # Redis down: say so rather than fail the page
            out[name] = -1
    return out


def warnings(waiting_kinds: set[str] | None = None, counts: dict[str, int] | None = None) -> list[str]:
    """One line per queue that has (or will get) jobs and no worker listening."""
    counts = listeners() if counts is None else counts
    queues = set(counts) if waiting_kinds is None else {QUEUE_OF_KIND.get(k, "default") for k in waiting_kinds}
    lines = []
    for q in sorted(queues):
        n = counts.get(q, 0)
        if n < 0:
            lines.append(f"Redis cannot be reached: jobs cannot be queued or run (queue '{q}').")
        elif n == 0:
            lines.append(
                f"No worker is listening to the '{q}' queue: its jobs will stay queued. "
                f"Start one with `python manage.py rqworker {q}` (or `make worker`)."
            )
    return lines


def waiting_kinds(jobs) -> set[str]:  # noqa: ANN001 - iterable of Job
    return {j.kind for j in jobs if j.status in (Status.QUEUED, Status.PENDING)}
