"""Camera response per lens: encoded value (JPEG, 0..1) -> linear light.

The family (our own, not Hugin's EMoR):

    log g(x) = gamma log x + sum_k c_k (1 - x)^k,    k = 1..TERMS

g(1) = 1 for every parameter (the correction terms vanish at 1); below
TOE (where no pixel pair is used) it continues as a power law, so g(0) = 0;
it is monotone while the local slope d log g / d log x = gamma - x sum_k
k c_k (1 - x)^(k-1) stays positive, which the fit checks on a grid. log g is linear in the parameters, and so
is the slope (exposure.solve_exposure). By least squares, three terms fit
the inverse of the S-shaped filmic curves of test_response.py within 0.003
and 0.014 (g in 0..1) over [0.03, 0.97], where a power law is off by
0.15-0.22.

Output: the blend works on values re-encoded with the inverse of one
output curve, the images' mean response (parameters averaged over the
images; the mean of monotone members is monotone, the slope being linear
in them), so a source whose response is the output curve and whose gain is
1 renders exactly as it was encoded (with the default curve too). Above 1
(gains push bright content there; the tone shoulder brings it back) the
output curve continues as the power law with its slope at 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: the default (prior) camera response: an sRGB-like power law
DEFAULT_GAMMA = 2.2
#: correction terms (1 - x)^k
TERMS = 3
#: the smallest local slope d log g / d log x a fitted curve may have (monotone with a margin)
MIN_SLOPE = 0.25
#: and the largest
MAX_SLOPE = 40.0
#: below this encoded value (exposure.DARK: no pixel pairs there) the curve
#: continues as a power law with its slope at TOE, at least 1 (sRGB's toe is
#: linear): the fit says nothing about it
TOE = 0.03


def basis(x: np.ndarray) -> np.ndarray:
    """The correction terms (1 - x)^k, k = 1..TERMS, as the last axis."""
    t = 1.0 - np.asarray(x, np.float64)
    return np.stack([t**k for k in range(1, TERMS + 1)], -1)


@dataclass(frozen=True)
class Response:
    gamma: float = DEFAULT_GAMMA
    c: tuple[float, ...] = (0.0,) * TERMS

    def _raw_log(self, x: np.ndarray) -> np.ndarray:
        return self.gamma * np.log(x) + basis(x) @ np.asarray(self.c, np.float64)

    def _raw_slope(self, x: np.ndarray) -> np.ndarray:
        t = 1.0 - x
        d = sum(k * ck * t ** (k - 1) for k, ck in enumerate(self.c, 1))
        return self.gamma - x * d

    def _toe(self) -> tuple[float, float]:
        """(log g(TOE), slope below TOE): at least 1, like sRGB's linear toe."""
        t = np.array([TOE])
        return float(self._raw_log(t)[0]), max(float(self._raw_slope(t)[0]), 1.0)

    def log_linear(self, x: np.ndarray) -> np.ndarray:
        x = np.maximum(np.asarray(x, np.float64), 1e-6)
        lt, st = self._toe()
        return np.where(x >= TOE, self._raw_log(np.maximum(x, TOE)), lt + st * np.log(x / TOE))

    def linear(self, x: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(x) > 0, np.exp(self.log_linear(x)), 0.0)

    def slope(self, x: np.ndarray) -> np.ndarray:
        """d log g / d log x."""
        x = np.asarray(x, np.float64)
        return np.where(x >= TOE, self._raw_slope(np.maximum(x, TOE)), self._toe()[1])

    def plausible(self) -> bool:
        """Monotone with a margin, and no steeper than any camera."""
        sl = self.slope(np.linspace(TOE, 1.0, 257))
        return bool(sl.min() >= MIN_SLOPE and sl.max() <= MAX_SLOPE)

    def to_list(self) -> list[float]:
        return [float(self.gamma), *(float(x) for x in self.c)]

    @classmethod
    def from_list(cls, v: tuple[float, ...] | list[float]) -> Response:
        return cls(float(v[0]), tuple(float(x) for x in v[1:]))


@lru_cache(maxsize=64)
def _inverse_table(params: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    r = Response.from_list(params)
    x = np.linspace(0.0, 1.0, 4097)
    y = np.maximum.accumulate(r.linear(x))  # monotone (plausible curves are)
    return y, x, float(max(r.slope(np.array([1.0]))[0], MIN_SLOPE))


def is_power_law(output: tuple[float, ...] | None) -> bool:
    """The output curve is the default power law (None or empty: the default)."""
    return not output or bool(np.allclose(output, Response().to_list(), rtol=0, atol=1e-9))


def encode(lin: np.ndarray, output: tuple[float, ...] | None = None) -> np.ndarray:
    """Linear light -> the output encoding: the inverse of the output curve
    (its parameters; default: the default power law), a power law above 1."""
    lin = np.maximum(np.asarray(lin, np.float64), 0.0)
    if is_power_law(output):
        return np.power(lin, 1.0 / DEFAULT_GAMMA)
    y, x, s1 = _inverse_table(tuple(output))  # type: ignore[arg-type]
    return np.where(lin <= 1.0, np.interp(lin, y, x), np.power(lin, 1.0 / s1))


@lru_cache(maxsize=256)
def encoded_lut(
    params: tuple[float, ...], gain: tuple[float, float, float], top: int, output: tuple[float, ...] = ()
) -> np.ndarray:
    """(top + 1) x 3 float32: source code value v -> encode(g(v / top) * gain_c),
    the per-channel table the renderer applies after its one resampling."""
    lin = linear_lut(params, gain, top).astype(np.float64)
    return encode(lin, output or None).astype(np.float32)


@lru_cache(maxsize=256)
def linear_lut(params: tuple[float, ...], gain: tuple[float, float, float], top: int) -> np.ndarray:
    """(top + 1) x 3 float32: source code value v -> g(v / top) * gain_c (linear light)."""
    r = Response.from_list(params)
    x = np.arange(top + 1, dtype=np.float64) / top
    return (r.linear(x)[:, None] * np.asarray(gain, np.float64)[None, :]).astype(np.float32)


def mean_response(params: list[tuple[float, ...]]) -> tuple[float, ...]:
    """The output curve: the parameters' mean over the images (exactly the
    curve when they share one)."""
    if all(tuple(q) == tuple(params[0]) for q in params):
        return tuple(float(x) for x in params[0])
    return tuple(float(x) for x in np.mean(np.asarray(params, np.float64), 0))
