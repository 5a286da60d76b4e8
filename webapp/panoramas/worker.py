"""The RQ worker class of Terapan: each job's forked work horse is hardened
(decoder limits, blocked libvips loaders) and capped in memory and CPU time, so
a runaway decoder fails its own job and never the worker or the machine."""

from __future__ import annotations

import os

from django.conf import settings
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.queue import Queue


class TerapanWorker(Worker):
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


class TerapanGPUWorker(SimpleWorker):
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
