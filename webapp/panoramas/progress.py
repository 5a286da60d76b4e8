"""Progress of a running job: its Job row and RQ's job.meta, throttled."""

from __future__ import annotations

import time

from django.utils import timezone

from .models import Job, Stack, Status


class Reporter:
    """Callable progress(fraction 0-1, message) for processing functions."""

    def __init__(
        self,
        job: Job,
        *,
        stack: Stack | None = None,
        lo: float = 0.0,
        hi: float = 100.0,
    ) -> None:
        self.job = job
        self.stack = stack
        self.lo, self.hi = lo, hi
        self._last = 0.0
        self._t0 = time.monotonic()

    def start(self) -> None:
        import rq

        rq_job = rq.get_current_job()
        Job.objects.filter(pk=self.job.pk).update(
            status=Status.RUNNING,
            started=timezone.now(),
            ended=None,
            error="",
            rq_id=rq_job.id if rq_job else self.job.rq_id,
            attempts=self.job.attempts + 1,
        )
        self.job.refresh_from_db()
        if self.stack is not None:
            Stack.objects.filter(pk=self.stack.pk).update(status=Status.RUNNING, progress=0.0, error="")
        import os
        import socket

        # The pid names the process to look at (or to kill) when a job hangs.
        self.log(f"started (attempt {self.job.attempts}, pid {os.getpid()} on {socket.gethostname()})")

    def __call__(self, fraction: float, message: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        pct = self.lo + (self.hi - self.lo) * max(0.0, min(1.0, fraction))
        elapsed = now - self._t0
        eta = elapsed * (100.0 - pct) / pct if pct > 1 else None
        stage = message.split(":", 1)[0][:100]
        Job.objects.filter(pk=self.job.pk).update(progress=pct, stage=stage, message=message[:500], eta_seconds=eta)
        if self.stack is not None:
            Stack.objects.filter(pk=self.stack.pk).update(progress=pct)
        try:
            import rq

            rq_job = rq.get_current_job()
            if rq_job is not None:
                rq_job.meta.update(progress=pct, message=message)
                rq_job.save_meta()
        except Exception:
            pass

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        job = Job.objects.get(pk=self.job.pk)
        job.log = (job.log + f"[{stamp}] {line}\n")[-20000:]
        job.save(update_fields=["log"])

    def finish(self, result: dict | None = None, timings: dict | None = None) -> None:
        Job.objects.filter(pk=self.job.pk).update(
            status=Status.DONE,
            progress=100.0,
            ended=timezone.now(),
            eta_seconds=0,
            result=result or {},
            timings=timings or {},
            message="done",
        )
        self.log("done")

    def fail(self, error: str, final: bool = True) -> None:
        """Record a failure; a failure that RQ will retry leaves the job queued."""
        status = Status.FAILED if final else Status.QUEUED
        msg = "failed" if final else "failed, will retry"
        Job.objects.filter(pk=self.job.pk).update(status=status, ended=timezone.now(), error=error[:5000], message=msg)
        if self.stack is not None:
            Stack.objects.filter(pk=self.stack.pk).update(status=status, error=error[:5000])
        self.log(f"{msg}: {error}")
