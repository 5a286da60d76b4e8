"""What C libraries (LibRaw, libvips) write to file descriptor 2, captured so
that it can join a one-line error reason instead of spilling onto the terminal.

Its own module (not safety.py) because both the decoders (imageio) and the
hardening (safety, which configures imageio) use it: neither imports the other
for it, so io/ has no import cycle.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class CapturedText:
    """What a C library wrote to file descriptor 2 inside `captured_stderr()`."""

    text: str = ""

    def first_line(self) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return lines[0] if lines else ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedText]:
    """Capture C-level writes to stderr (LibRaw prints "file: Unexpected end of
    file" there), so a CLI error stays one line and the reason can carry them.

    Process-wide while active (fd 2 is shared by all threads): wrap single
    decoder calls only.
    """
    out = CapturedText()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to capture
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read(64 * 1024).decode("utf-8", "replace")
