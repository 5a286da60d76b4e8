"""Run a farm plan on this machine: N worker processes taking jobs as their dependencies finish.

The shape of RQ workers without a queue server, for the benchmark and the
tests: each worker is a separate process started fresh (spawn, so no lock
of the parent's libraries is inherited) with its own temporary folder
(TMPDIR), as a worker on another host would have. A job's CPU seconds are
its process's CPU time over the job; its peak memory is the process's
high-water mark, reset before the job (/proc/self/clear_refs).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RunOne = Callable[[str], dict[str, Any]]


def run_local(
    jobs: list[dict[str, Any]],
    run_one: RunOne,
    workers: int = 1,
    tmp_root: str | Path | None = None,
    only: set[str] | None = None,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Run JOBS (dicts with 'id' and 'after') on WORKERS processes; one record per job run.

    RUN_ONE must be picklable (a module-level function or a functools.partial of one).
    ONLY: run just these ids (their other dependencies are taken as done).
    A failed job raises RuntimeError once the jobs in flight have finished.
    """
    tmp_root = Path(tmp_root or tempfile.gettempdir())
    todo = {j["id"]: set(j["after"]) for j in jobs if only is None or j["id"] in only}
    for deps in todo.values():
        deps.intersection_update(todo)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    inboxes, procs = [], []
    for slot in range(workers):
        slot_tmp = tmp_root / f"worker{slot}"
        slot_tmp.mkdir(parents=True, exist_ok=True)
        inbox = ctx.Queue()
        p = ctx.Process(target=_worker, args=(slot, inbox, results, run_one, str(slot_tmp), threads), daemon=True)
        p.start()
        inboxes.append(inbox)
        procs.append(p)
    free = list(range(workers))
    running: set[str] = set()
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    first_error = ""
    try:
        while todo or running:
            ready = [jid for jid, deps in todo.items() if not deps] if not failed else []
            while ready and free:
                jid = ready.pop(0)
                del todo[jid]
                running.add(jid)
                inboxes[free.pop(0)].put(jid)
            if not running:
                if todo and not failed:
                    raise RuntimeError(f"farm: jobs wait on each other: {sorted(todo)[:5]}")
                break
            rec = _next_result(results, procs)
            running.discard(rec["job"])
            free.append(rec["worker"])
            records.append(rec)
            if not rec["ok"]:
                failed.append(rec["job"])
                first_error = first_error or rec.get("error", "")
                continue
            for deps in todo.values():
                deps.discard(rec["job"])
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    if failed:
        raise RuntimeError(f"farm: job(s) failed: {', '.join(failed[:5])}\n{first_error}")
    return records


def _next_result(results: Any, procs: list[Any]) -> dict[str, Any]:
    import queue

    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                raise RuntimeError(f"farm: a worker process died (exit code {dead[0].exitcode})") from None


def _worker(slot: int, inbox: Any, results: Any, run_one: RunOne, tmp: str, threads: int) -> None:
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = None
    limit_threads(threads)
    while (jid := inbox.get()) is not None:
        _reset_peak()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        rec: dict[str, Any] = {"job": jid, "worker": slot, "pid": os.getpid()}
        try:
            rec["result"] = run_one(jid)
            rec["ok"] = True
        except Exception:
            rec["ok"] = False
            rec["error"] = traceback.format_exc(limit=5)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rec["wall_s"] = round(time.perf_counter() - t0, 3)
        rec["cpu_s"] = round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 3)
        rec["peak_rss_mb"] = _peak_mb()
        results.put(rec)


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def limit_threads(n: int) -> None:
    """One job, N threads: OpenCV, BLAS and libvips."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VIPS_CONCURRENCY"):
        os.environ[var] = str(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:
        pass
    try:
        import pyvips

        pyvips.concurrency_set(n)
    except (ImportError, AttributeError):
        pass
