"""Smoothing strategies: valid distributions out, less flicker on a noisy sequence, state per track,
reset when a track ends, time-based behaviour, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from stream_fer.errors import StreamFerError
from stream_fer.smoothing import SMOOTHING_STRATEGIES, make_smoother, time_constant

K = 7
FPS = 30.0


def noisy_sequence(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probs (n, K), true label (n,)): the true class changes every 60 frames; each frame's probabilities
    are that class's mild lead buried in strong per-frame noise, so the raw argmax flickers."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(n) // 60) % 3
    logits = rng.normal(0, 1.0, (n, K))
    logits[np.arange(n), truth] += 1.6
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), truth


def switches(labels: np.ndarray) -> int:
    return int((np.diff(labels) != 0).sum())


def run(smoother, probs: np.ndarray, track_id: int = 1) -> np.ndarray:
    return np.array([smoother.update(track_id, p, i / FPS) for i, p in enumerate(probs)])


@pytest.mark.parametrize("name", SMOOTHING_STRATEGIES)
def test_outputs_stay_probability_distributions(name):
    probs, _ = noisy_sequence(100)
    out = run(make_smoother(name, 0.6), probs)
    assert out.shape == probs.shape and out.dtype == np.float32
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_none_and_zero_strength_leave_the_input_alone():
    probs, _ = noisy_sequence(50)
    np.testing.assert_allclose(run(make_smoother("none", 0.9), probs), probs, atol=1e-6)
    for name in ("ema", "window"):
        np.testing.assert_allclose(run(make_smoother(name, 0.0), probs), probs, atol=1e-6)


@pytest.mark.parametrize("name", ["ema", "window", "one_euro"])
def test_smoothing_reduces_flicker_and_still_follows_the_truth(name):
    probs, truth = noisy_sequence()
    raw = probs.argmax(axis=1)
    smoothed = run(make_smoother(name, 0.6), probs).argmax(axis=1)
    assert switches(raw) > 40  # the sequence really flickers
    assert switches(smoothed) < 0.5 * switches(raw), f"{name}: {switches(smoothed)} vs raw {switches(raw)}"
    assert (smoothed == truth).mean() > (raw == truth).mean()


def test_stronger_smoothing_flickers_less():
    probs, _ = noisy_sequence()
    counts = [switches(run(make_smoother("ema", s), probs).argmax(axis=1)) for s in (0.2, 0.5, 0.8)]
    assert counts[0] > counts[1] > counts[2]


def test_state_is_per_track_and_ends_with_the_track():
    smoother = make_smoother("ema", 0.8)
    a = np.eye(K, dtype=np.float32)[1]
    b = np.eye(K, dtype=np.float32)[3]
    for i in range(10):
        smoother.update(1, a, i / FPS)
    # Track 2 starts from its own first sample, untouched by track 1's history.
    np.testing.assert_allclose(smoother.update(2, b, 10 / FPS), b)
    # Track 1 still remembers a: a new sample b only moves it part of the way.
    assert smoother.update(1, b, 10 / FPS)[1] > 0.5
    assert set(smoother.track_ids) == {1, 2}
    smoother.end(1)
    assert smoother.track_ids == (2,)
    np.testing.assert_allclose(smoother.update(1, b, 11 / FPS), b)  # a fresh start
    smoother.reset()
    assert smoother.track_ids == ()


@pytest.mark.parametrize("name", ["ema", "window", "one_euro"])
def test_smoothing_is_defined_in_time_not_frames(name):
    """A step input reaches the same level after the same time at 15 and at 30 fps."""
    a, b = np.eye(K)[0], np.eye(K)[1]

    def level_after(fps: float, seconds: float) -> float:
        s = make_smoother(name, 0.6)
        n_before, n_after = int(fps), int(round(seconds * fps))
        for i in range(n_before):
            s.update(1, a, i / fps)
        out = None
        for i in range(n_before, n_before + n_after + 1):
            out = s.update(1, b, i / fps)
        return float(out[1])

    assert level_after(15, 0.2) == pytest.approx(level_after(30, 0.2), abs=0.12)


def test_missing_or_repeated_timestamps_fall_back_to_the_nominal_frame_period():
    s = make_smoother("ema", 0.5)
    a, b = np.eye(K)[0], np.eye(K)[1]
    s.update(1, a, None)
    out_none = s.update(1, b, None)
    s2 = make_smoother("ema", 0.5)
    s2.update(1, a, 1.0)
    out_same = s2.update(1, b, 1.0)
    alpha = 1 - np.exp(-(1 / 30) / time_constant(0.5))  # one nominal frame at 30 fps
    np.testing.assert_allclose(out_none, [1 - alpha, alpha, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out_same, out_none, atol=1e-6)


def test_bad_names_and_strengths_are_one_clear_error():
    with pytest.raises(StreamFerError, match="unknown smoothing 'kalman'; choose one of none, ema"):
        make_smoother("kalman")
    with pytest.raises(StreamFerError, match="between 0 and 1"):
        make_smoother("ema", 1.5)
    assert make_smoother("One-Euro", 0.3).name == "one_euro"
