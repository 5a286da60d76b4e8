"""Child process of `bench sr --speed`: process_stack REPEAT times in one process.

Run as `python -m processing.bench.sr_child DIR OUT.tif SCALE REPEAT MODEL WRITE
DTYPE` (MODEL 1: fuse at x2 and EDSR the rest, as `stack` does by default; 0:
fuse at SCALE; DTYPE: process_stack's result_dtype, uint16 as `stack` uses). The first run pays the one-off costs of a fresh worker (CUDA context,
model load and compilation); later runs are what a long-lived RQ worker sees.
Prints one JSON object: the metrics of every run and the seconds to write the
last result as 16-bit TIFF (as `stack -o` does).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from ..io.imageio import write_tiff16
    from ..io.safety import harden
    from ..stack.pipeline import list_frames, process_stack

    harden()
    folder, out, scale, repeat, model = Path(argv[0]), Path(argv[1]), float(argv[2]), int(argv[3]), argv[4] == "1"
    dtype = argv[6] if len(argv) > 6 else "uint16"
    runs = []
    res = None
    for _ in range(max(1, repeat)):
        res = None  # the previous result goes before the next run allocates
        t0 = time.perf_counter()
        res = process_stack(list_frames(folder), scale, upscale_model=model, result_dtype=dtype)
        m = dict(res.metrics, seconds_call=round(time.perf_counter() - t0, 3))
        runs.append(m)
    assert res is not None
    seconds_write = None
    if len(argv) < 6 or argv[5] == "1":
        t0 = time.perf_counter()
        write_tiff16(out, res.image)
        seconds_write = round(time.perf_counter() - t0, 3)
    # Its own peak (the parent's RUSAGE_CHILDREN is the maximum over every child so far).
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"runs": runs, "seconds_write": seconds_write, "peak_rss_mb": round(peak_mb, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
