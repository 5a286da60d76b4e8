"""Shared fixtures for the EDSR / upscale / train tests: tiny models on disk."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def tiny_weights(folder: Path, scale: int, blocks: int = 2, filters: int = 8, seed: int = 0) -> Path:
    """Random tiny EDSR saved with its sidecar (fast, for geometry tests)."""
    import keras

    from processing.upscale.edsr import architecture, build_edsr, write_sidecar

    keras.utils.set_random_seed(seed)
    m = build_edsr(scale, blocks, filters)
    path = folder / f"tiny_x{scale}.weights.h5"
    m.save_weights(path)
    write_sidecar(path, architecture(m, scale, blocks, filters), {"note": "random test model"})
    return path
