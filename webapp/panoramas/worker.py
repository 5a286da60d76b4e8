"""The RQ worker class of Terapan: each job's forked work horse is hardened
(decoder limits, blocked libvips loaders) and capped in memory and CPU time, so
a runaway decoder fails its own job and never the worker or the machine.

Every Terapan worker also keeps the database and RQ in agreement
(reconcile.py): at start and every MAINTENANCE_SECONDS, so a job lost by a
Redis crash or a dead worker is queued again without anyone's help. It
listens in short rounds (WORKER_TTL) so that the periodic work happens even
while idle, and it heartbeats its jobs often, so a job whose worker died is
seen as abandoned (and retried) within about a minute and a half.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.queue import Queue

MAINTENANCE_SECONDS = 30
WORKER_TTL = 45
JOB_MONITORING_SECONDS = 10

log = logging.getLogger(__name__)


class ReconcilingWorker:
    """Mixin: short listening rounds, frequent maintenance, reconcile at start and periodically."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.worker_ttl = min(int(self.worker_ttl), WORKER_TTL)
        self.maintenance_interval = MAINTENANCE_SECONDS
        self.job_monitoring_interval = JOB_MONITORING_SECONDS

    def _reconcile(self, at_start: bool = False) -> None:
        from django.db import connections

        from .reconcile import reconcile_once_among_workers

        try:
            report = reconcile_once_among_workers()
            if report is not None and (report.requeued or report.failed):
                log.warning("reconcile%s: %s", " at start" if at_start else "", report.as_dict())
        except Exception:  # never let repair work stop the worker
            log.exception("reconcile failed")
        finally:
            connections.close_all()  # no connection shared with a forked work horse

    def run_maintenance_tasks(self) -> None:
        # RQ runs this first when the worker starts, then every maintenance_interval.
        at_start = self.last_cleaned_at is None
        super().run_maintenance_tasks()
        self._reconcile(at_start=at_start)


class TerapanWorker(ReconcilingWorker, Worker):
    def main_work_horse(self, job: Job, queue: Queue):  # noqa: ANN201 - RQ's signature
        from processing.io.safety import harden, limit_resources

        harden()
        mem_mb = settings.TERAPAN_JOB_MAX_MEMORY_MB
        timeout = job.timeout if job.timeout and job.timeout > 0 else 3600
        # CPU seconds accrue on every core: allow the wall-clock timeout on all of them.
        limit_resources(
            max_rss_bytes=mem_mb * 1024 * 1024 if mem_mb else None,
            max_seconds=timeout * (os.cpu_count() or 1) + 60,
        )
        return super().main_work_horse(job, queue)


class TerapanGPUWorker(ReconcilingWorker, SimpleWorker):
    """The GPU queue's worker: each job runs in the worker process itself.

    A forked work horse starts cold every time: a new CUDA context, CuPy's
    kernels compiled again, the EDSR model loaded and compiled again. On an
    H100 a 20 x 45 MP stack to x4 took 55.9 s in a fresh process and 23.0 s
    warm (docs/gpu.md), so the GPU worker keeps one process. Decoders are
    hardened once (idempotent); there is no address-space cap, because CUDA
    reserves virtual memory far past any useful cap; RQ's job timeout still
    applies. CuPy's cached blocks go back after every job so memory does not
    creep from stack to stack. A crash ends the worker: run it under a
    supervisor (compose restarts it) and RQ's retries re-run the job.
    """

    def execute_job(self, job: Job, queue: Queue):  # noqa: ANN201 - RQ's signature
        from processing.io.safety import harden

        harden()
        try:
            return super().execute_job(job, queue)
        finally:
            release_device_memory()


def release_device_memory() -> None:
    """Free CuPy's cached device and pinned blocks, where CuPy is in use."""
    import sys

    from processing.device.backend import release_pool

    cupy = sys.modules.get("cupy")
    if cupy is not None:
        release_pool(cupy)
