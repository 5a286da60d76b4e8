"""The RQ worker class of Terapan: each job's forked work horse is hardened
(decoder limits, blocked libvips loaders) and capped in memory and CPU time, so
a runaway decoder fails its own job and never the worker or the machine."""

from __future__ import annotations

import os

from django.conf import settings
from rq import Worker
from rq.job import Job
from rq.queue import Queue


class TerapanWorker(Worker):
    def main_work_horse(self, job: Job, queue: Queue):  # noqa: ANN201 - RQ's signature
        from processing.safety import harden, limit_resources

        harden()
        mem_mb = settings.TERAPAN_JOB_MAX_MEMORY_MB
        timeout = job.timeout if job.timeout and job.timeout > 0 else 3600
        # CPU seconds accrue on every core: allow the wall-clock timeout on all of them.
        limit_resources(
            max_rss_bytes=mem_mb * 1024 * 1024 if mem_mb else None,
            max_seconds=timeout * (os.cpu_count() or 1) + 60,
        )
        return super().main_work_horse(job, queue)
