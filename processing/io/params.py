"""Stage parameters: every stage has a frozen dataclass with a version.

The recipe of an output is the dict of all its stages' params; its hash keys
the output on disk (darktable-style history: recipes, not copies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="StageParams")


@dataclasses.dataclass(frozen=True)
class StageParams:
    """Base class: subclasses add fields and bump VERSION when semantics change."""

    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "stage"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["_version"] = self.VERSION
        return d

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
        data = dict(data or {})
        data.pop("_version", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls.STAGE}: unknown parameter(s) {sorted(unknown)}")
        return cls(**data)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        return recipe_hash({self.STAGE: self.to_dict()})


def recipe_hash(recipe: dict[str, Any], *extra: str) -> str:
    """Stable short hash of a recipe (and optional input checksums)."""
    blob = json.dumps(recipe, sort_keys=True, default=str, separators=(",", ":"))
    h = hashlib.sha256(blob.encode())
    for e in extra:
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:16]
