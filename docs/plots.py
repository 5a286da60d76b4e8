"""Redraw docs/images/stitch_memory.png and docs/images/gpu_stages.png.

Run with any Python that has matplotlib (the benchmark virtualenv of
requirements-bench.txt): `python docs/plots.py`. The stitch figures are the
measured rows of docs/stitch.md ("big"); the GPU stages are read from
docs/bench/gpu_h100_45mp_x4.json (the warm run).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOCS = Path(__file__).resolve().parent
# bench stitch --set big: output gigapixels, peak RSS GB, tiles (docs/stitch.md)
STITCH_RUNS = [(0.334, 2.52, "585 tiles"), (1.167, 2.71, "1365"), (2.695, 2.99, "1885"), (3.456, 3.17, "3360 tiles")]
WHERE = {
    "develop": "CPU",
    "align": "CPU",
    "color": "CPU",
    "flow": "CPU",
    "master": "GPU",
    "fuse": "GPU",
    "deblur": "GPU",
    "upscale": "GPU",
    "to_host": "copy",
}
COLOURS = {"CPU": "#8250df", "GPU": "#1a7f37", "copy": "#bf8700"}
LABELS = {"CPU": "CPU stages", "GPU": "GPU stages", "copy": "copy back"}


def stitch_memory(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.plot(
        [r[0] for r in STITCH_RUNS],
        [r[1] for r in STITCH_RUNS],
        "o-",
        color="#1f6feb",
        label="Terapan peak RSS (measured)",
    )
    for gp, mem, label in STITCH_RUNS:
        ax.annotate(label, (gp, mem), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.plot([0, 3.6], [0, 13 * 3.6], "--", color="#999999", label="whole canvas in RAM at 13 B/px (estimate)")
    ax.axhline(4, color="#d1242f", lw=1, label="target: < 4 GB at 3 GP")
    ax.set_xlim(0, 3.7)
    ax.set_ylim(0, 8)
    ax.set_xlabel("output size (gigapixels)")
    ax.set_ylabel("peak memory (GB)")
    ax.set_title("bench stitch --set big (2-core machine)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


def gpu_stages(bench_json: Path, out: Path) -> None:
    line = next(ln for ln in bench_json.read_text().splitlines() if ln.startswith("{"))
    sec = json.loads(line)["seconds"]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    left = 0.0
    for stage, where in WHERE.items():
        v = float(sec.get(stage, 0.0))
        ax.barh(0, v, left=left, color=COLOURS[where], edgecolor="white")
        if v > 0.9:
            ax.text(left + v / 2, 0, f"{stage}\n{v:.1f}s", ha="center", va="center", fontsize=7, color="white")
        left += v
    ax.axvline(7.5, color="#d1242f", lw=1.5)
    ax.text(7.6, 0.42, "target 7.5 s", color="#d1242f", fontsize=8)
    for where, colour in COLOURS.items():
        ax.barh(0, 0, color=colour, label=LABELS[where])
    ax.set_yticks([])
    ax.set_xlabel("seconds (warm run)")
    ax.set_title(f"20 x 45 MP -> x4 (720 MP) on one H100: {left:.1f} s", fontsize=10)
    ax.legend(fontsize=8, loc="lower right", ncol=3)
    ax.set_ylim(-0.6, 0.6)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    stitch_memory(DOCS / "images" / "stitch_memory.png")
    gpu_stages(DOCS / "bench" / "gpu_h100_45mp_x4.json", DOCS / "images" / "gpu_stages.png")
