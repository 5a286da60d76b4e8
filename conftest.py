"""Loaded before Django's settings: keep test state apart from a demo's."""

import os
from pathlib import Path

_root = Path(__file__).resolve().parent
os.environ.setdefault("TERAPAN_VAR_DIR", str(_root / "var" / "test"))
os.environ.setdefault("MEDIA_ROOT", str(_root / "var" / "test" / "media"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
