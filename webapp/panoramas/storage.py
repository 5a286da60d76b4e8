"""Where outputs live under MEDIA_ROOT; every path is built from database ids."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def media_root() -> Path:
    return Path(settings.MEDIA_ROOT)


def rel_stack_output(panorama_id: int, stack_id: int, recipe_hash: str) -> str:
    return f"panoramas/{int(panorama_id)}/stacks/{int(stack_id)}/{recipe_hash}.tif"


def rel_composite(panorama_id: int, recipe_hash: str) -> str:
    return f"panoramas/{int(panorama_id)}/composites/{recipe_hash}.tif"


def rel_pyramid(panorama_id: int, version: int) -> str:
    return f"panoramas/{int(panorama_id)}/pyramids/v{int(version)}"


def absolute(rel: str) -> Path:
    return media_root() / rel
