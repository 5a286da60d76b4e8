"""Jobs for the GPU worker test: they report the process they ran in and
state kept between jobs (as a warm CUDA context and model would be)."""

from __future__ import annotations

import os

_calls = {"n": 0}


def where() -> dict:
    _calls["n"] += 1
    return {"pid": os.getpid(), "calls": _calls["n"]}
