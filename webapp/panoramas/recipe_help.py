"""What a recipe may say: every stage's parameters, their types, defaults and
the rules its params dataclass enforces, for the re-render confirmation page.

The rules are the stages' own validation messages (their __post_init__),
collected by trying an out-of-range value for each parameter, so this page
never drifts from what processing/ accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from typing import Any

_PROBES: dict[type, list[Any]] = {
    int: [-1, 0, 10**9],
    float: [-1.0, 0.0, 1e9],
    str: ["?"],
}


def _stages() -> dict[str, type]:
    from processing.stack.pipeline import StackParams

    return {f.name: f.default_factory for f in dataclasses.fields(StackParams)}  # type: ignore[misc]


@functools.cache
def stage_parameters() -> list[dict[str, Any]]:
    """[{stage, params: [{name, type, default}], rules: [str]}] for every recipe stage."""
    out = []
    for stage, cls in _stages().items():
        params, rules = [], []
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            kind = type(default)
            params.append({"name": f.name, "type": kind.__name__, "default": default})
            for probe in _PROBES.get(kind, []) if kind is not bool else []:
                try:
                    cls(**{f.name: probe})
                except (TypeError, ValueError) as e:
                    msg = str(e)
                    if msg not in rules:
                        rules.append(msg)
        out.append({"stage": stage, "params": params, "rules": rules})
    return out


def names() -> list[str]:
    return [f"{s['stage']}.{p['name']}" for s in stage_parameters() for p in s["params"]]


def suggestions(error: str) -> list[str]:
    """Close valid names for the unknown ones an error message quotes ('stage: unknown parameter(s) [...]')."""
    valid = names()
    out: list[str] = []
    m = re.match(r"^(?:invalid recipe: )?(\w+): unknown parameter\(s\) \[(.*)\]$", error)
    if m:
        stage = m.group(1)
        same_stage = [v for v in valid if v.startswith(stage + ".")]
        for raw in re.findall(r"'([^']*)'", m.group(2)):
            out += difflib.get_close_matches(f"{stage}.{raw}", same_stage, n=2, cutoff=0.6)
    m = re.match(r"^(?:invalid recipe: )?stack: unknown stage\(s\) \[(.*)\]$", error)
    if m:
        stages = [s["stage"] for s in stage_parameters()]
        for raw in re.findall(r"'([^']*)'", m.group(1)):
            out += difflib.get_close_matches(raw, stages, n=2, cutoff=0.5)
    return out
