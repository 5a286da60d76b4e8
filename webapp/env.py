"""Strict parsing of settings from the environment.

A typo in a deployment variable must stop start-up with a clear message, not
silently fall back to a default.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value.strip())
    except ValueError as e:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from e
    if minimum is not None and n < minimum:
        raise ImproperlyConfigured(f"{name}={n} is below the minimum {minimum}")
    return n


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    items = [x.strip() for x in value.split(",")]
    if any(not x for x in items):
        raise ImproperlyConfigured(f"{name}={value!r} has an empty item")
    return items
