"""The GPU queue's worker runs jobs in its own process, so state (the CUDA
context, compiled kernels, the loaded model) survives from one job to the
next; the CPU worker still forks a capped work horse per job."""

from __future__ import annotations

import os

import django_rq
from rq import Queue, SimpleWorker

from webapp.panoramas.worker import TerapanGPUWorker, TerapanWorker, release_device_memory

from . import _gpu_worker_jobs


def test_gpu_worker_keeps_one_warm_process(monkeypatch) -> None:
    from processing.io import safety

    # harden() changes process-wide decoder state (tested in subprocesses in
    # tests/processing/io/test_safety.py): here, only that each job calls it.
    hardened = []
    monkeypatch.setattr(safety, "harden", lambda *a, **k: hardened.append(os.getpid()))
    conn = django_rq.get_connection("default")
    q = Queue("test-gpu-worker", connection=conn)  # plain RQ: a queue of its own
    q.empty()
    try:
        jobs = [q.enqueue(_gpu_worker_jobs.where) for _ in range(2)]
        w = TerapanGPUWorker([q], connection=conn)
        assert isinstance(w, SimpleWorker) and not isinstance(w, TerapanWorker)
        assert w.work(burst=True)
        got = [j.latest_result().return_value for j in jobs]
        # both ran here, one after the other, each after harden()
        assert [g["pid"] for g in got] == [os.getpid(), os.getpid()]
        assert got[1]["calls"] == got[0]["calls"] + 1
        assert hardened == [os.getpid(), os.getpid()]
    finally:
        q.empty()


def test_release_device_memory_without_cupy_is_a_no_op(monkeypatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    release_device_memory()  # nothing to free, nothing imported
    assert "cupy" not in sys.modules
