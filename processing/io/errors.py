"""Errors that carry the offending file and a human reason."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: names the file and says why, in one line."""

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class ProcessingError(RuntimeError):
    """A stage could not produce a result for valid-looking input."""


def one_line(text: str) -> str:
    """TEXT with its control characters (newlines, terminal escape sequences,
    ...) written as Python escapes, so that a file name can neither break an
    error onto two lines nor drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
