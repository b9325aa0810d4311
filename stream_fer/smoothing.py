"""Temporal smoothing of class probabilities, per track, as named strategies.

Every strategy outputs a convex combination of past probability vectors, so its output is still a
probability distribution. `strength` in [0, 1] means the same for each strategy: the mean delay it adds
to a steady signal, as a fraction of FULL_STRENGTH_DELAY_S (0 leaves the input untouched). Strategies are
defined in seconds, not frames, so a live source that drops frames, or a 24 fps file, is smoothed the same
as a 30 fps one:

- none:     the raw probabilities.
- ema:      exponential moving average with time constant tau = strength * FULL_STRENGTH_DELAY_S
            (alpha = 1 - exp(-dt / tau)).
- window:   mean over the last 2 * tau seconds (a box filter; its mean delay is tau).
- one_euro: the One Euro filter (Casiez et al., CHI 2012): an EMA whose cut-off frequency rises with
            the (low-passed) speed of change, so steady noise is smoothed like `ema` and a real change
            of expression comes through faster. Its minimum cut-off is 1 / (2 pi tau).

A `Smoother` keeps one filter per track id; `end(track_id)` drops a track's state (call it when the
tracker ends the track), `reset()` drops all.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

NOMINAL_FPS = 30.0  # the frame period assumed when timestamps are missing or do not increase
FULL_STRENGTH_DELAY_S = 0.5  # the time constant at strength 1
ONE_EURO_BETA = 0.5  # cut-off gain (Hz) per unit/s of (low-passed) probability change
ONE_EURO_D_CUTOFF = 1.0  # Hz: the cut-off of the rate of change's own low-pass


def time_constant(strength: float) -> float:
    """Seconds: the time constant (mean delay) that a strength stands for."""
    return min(max(strength, 0.0), 1.0) * FULL_STRENGTH_DELAY_S


class ProbabilityFilter(Protocol):
    """One track's filter state."""

    def update(self, probs: np.ndarray, timestamp: float | None) -> np.ndarray:
        """The smoothed probabilities after seeing `probs` at `timestamp` (seconds; None: one nominal
        frame after the previous sample)."""
        ...


class _Clock:
    """Time step between samples, falling back to the nominal frame period when timestamps are missing
    or do not increase."""

    def __init__(self) -> None:
        self.last: float | None = None

    def step(self, timestamp: float | None) -> float | None:
        """Seconds since the previous sample; None for the first sample."""
        if timestamp is None:
            timestamp = (self.last if self.last is not None else 0.0) + 1.0 / NOMINAL_FPS
        prev, self.last = self.last, timestamp
        if prev is None:
            return None
        dt = timestamp - prev
        if not math.isfinite(dt) or dt <= 0:
            self.last = prev + 1.0 / NOMINAL_FPS
            return 1.0 / NOMINAL_FPS
        return dt


class PassThrough:
    def update(self, probs: np.ndarray, timestamp: float | None) -> np.ndarray:
        return np.asarray(probs, dtype=np.float32).copy()


class Ema:
    def __init__(self, strength: float):
        self.tau = time_constant(strength)
        self._clock = _Clock()
        self._state: np.ndarray | None = None

    def update(self, probs: np.ndarray, timestamp: float | None) -> np.ndarray:
        x = np.asarray(probs, dtype=np.float64)
        dt = self._clock.step(timestamp)
        if self._state is None or dt is None or self.tau <= 0:
            self._state = x.copy()
        else:
            self._state += -math.expm1(-dt / self.tau) * (x - self._state)
        return self._state.astype(np.float32)


class WindowMean:
    def __init__(self, strength: float):
        self.window_s = 2.0 * time_constant(strength)
        self._clock = _Clock()
        self._samples: deque[tuple[float, np.ndarray]] = deque()
        self._t = 0.0

    def update(self, probs: np.ndarray, timestamp: float | None) -> np.ndarray:
        dt = self._clock.step(timestamp)
        self._t += dt or 0.0
        self._samples.append((self._t, np.asarray(probs, dtype=np.float64)))
        # Keep the samples less than window_s old (a 0.25 s window at 24 fps holds 6).
        horizon = self._t - self.window_s + 1e-6
        while len(self._samples) > 1 and self._samples[0][0] <= horizon:
            self._samples.popleft()
        return np.mean([s for _, s in self._samples], axis=0).astype(np.float32)


class OneEuro:
    def __init__(self, strength: float, beta: float = ONE_EURO_BETA, d_cutoff: float = ONE_EURO_D_CUTOFF):
        tau = time_constant(strength)
        self.min_cutoff = 1.0 / (2.0 * math.pi * tau) if tau > 0 else math.inf  # Hz
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._clock = _Clock()
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def update(self, probs: np.ndarray, timestamp: float | None) -> np.ndarray:
        x = np.asarray(probs, dtype=np.float64)
        dt = self._clock.step(timestamp)
        if self._x is None or dt is None or math.isinf(self.min_cutoff):
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            return self._x.astype(np.float32)
        # The signed rate of change, low-passed (noise averages out; a real change does not), then one
        # cut-off for the whole vector from its fastest class, so the output stays a convex combination
        # of inputs: a probability distribution.
        self._dx += self._alpha(self.d_cutoff, dt) * ((x - self._x) / dt - self._dx)
        cutoff = self.min_cutoff + self.beta * float(np.abs(self._dx).max())
        self._x += self._alpha(cutoff, dt) * (x - self._x)
        return self._x.astype(np.float32)


_STRATEGIES: dict[str, Callable[[float], ProbabilityFilter]] = {
    "none": lambda strength: PassThrough(),
    "ema": Ema,
    "window": WindowMean,
    "one_euro": OneEuro,
}
SMOOTHING_STRATEGIES: tuple[str, ...] = tuple(_STRATEGIES)


class Smoother:
    """One named strategy, with a filter per track id."""

    def __init__(self, name: str, strength: float, make_filter: Callable[[float], ProbabilityFilter]):
        self.name = name
        self.strength = strength
        self._make_filter = make_filter
        self._filters: dict[int, ProbabilityFilter] = {}

    @property
    def track_ids(self) -> tuple[int, ...]:
        return tuple(self._filters)

    def update(self, track_id: int, probs: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        """Smoothed probabilities (K,) float32 for this track, given this frame's raw ones."""
        flt = self._filters.get(track_id)
        if flt is None:
            flt = self._filters[track_id] = self._make_filter(self.strength)
        return flt.update(probs, timestamp)

    def end(self, track_id: int) -> None:
        """Forget a track's state (its track ended)."""
        self._filters.pop(track_id, None)

    def reset(self) -> None:
        self._filters.clear()

    def __repr__(self) -> str:
        return f"Smoother({self.name!r}, strength={self.strength})"


def make_smoother(name: str = "ema", strength: float = 0.6) -> Smoother:
    """A per-track smoother for one of SMOOTHING_STRATEGIES; strength in [0, 1]."""
    key = name.strip().lower().replace("-", "_")
    if key not in _STRATEGIES:
        raise StreamFerError(f"unknown smoothing {name!r}; choose one of {', '.join(SMOOTHING_STRATEGIES)}")
    if not (0.0 <= strength <= 1.0) or not math.isfinite(strength):
        raise StreamFerError(f"smoothing strength must be between 0 and 1, not {strength}")
    return Smoother(key, float(strength), _STRATEGIES[key])
