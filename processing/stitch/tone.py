"""Output tone: a highlight shoulder so the output never clips what the inputs did not.

Exposure compensation lifts darker exposures (an upward view metered on the
sky) to match the others; linear gains then push their bright content past
white. Below a knee k the tone is the identity (mid-tones and the ground
truth's range stay untouched); above it a rational shoulder

    y = k + (x - k) / (1 + c (x - k))

(slope 1 at the knee, concave, monotonic) brings the brightest well-exposed
value P down to ``white`` (0.98, below the 254/255 a clipped pixel shows).
The knee moves down only as far as the excess needs: k = max(0.5, white -
(P - white) / 2), so a 10 % excess compresses only the top 5 % of the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WHITE = 0.98


@dataclass(frozen=True)
class Tone:
    knee: float = 1.0
    c: float = 0.0

    @property
    def identity(self) -> bool:
        return self.c <= 0.0

    def to_dict(self) -> dict[str, float]:
        return {"knee": self.knee, "c": self.c}

    @classmethod
    def from_dict(cls, d: dict | None) -> Tone:
        return cls(float(d["knee"]), float(d["c"])) if d else cls()

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The shoulder, in place on float RGB (linear in the inputs' encoding)."""
        if self.identity:
            return rgb
        k = np.float32(self.knee)
        over = np.maximum(rgb - k, 0)
        rgb -= over
        rgb += over / (1 + np.float32(self.c) * over)
        return rgb


def shoulder_for(brightest: float, white: float = WHITE, min_knee: float = 0.5) -> Tone:
    """The tone that maps ``brightest`` to ``white`` (identity when it is already below)."""
    if brightest <= white:
        return Tone()
    k = max(min_knee, white - (brightest - white) / 2)
    e = brightest - k
    c = (e / (white - k) - 1) / e
    return Tone(k, c)
