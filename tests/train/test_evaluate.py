"""Evaluation metrics against a hand computation on a tiny fixed set, and the eval command end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stream_fer.train.evaluate import compute_metrics, map_cosine


def _onehot_probs(pred):
    probs = np.full((len(pred), 7), 0.01, dtype=np.float32)
    probs[np.arange(len(pred)), pred] = 0.94
    return probs


def test_metrics_match_hand_computation():
    labels = np.array([0, 1, 1, 2, 3, -1])  # the -1 (no majority) is ignored
    pred = np.array([0, 1, 2, 2, 0, 1])
    maps = np.zeros((6, 8, 8), np.float32)
    maps[:, 2:4, 2:4] = 1.0
    valid = np.array([False, True, True, True, False, True])
    # Explanations at the map size, so upsampling is the identity and the cosines are exact.
    attention = np.zeros((6, 8, 8), np.float32)
    attention[1] = maps[1] + 1.0  # a constant offset is removed by the shift -> cosine 1
    attention[2, 2:4, 2:4] = 1.0
    attention[2, 5:7, 5:7] = 1.0  # half the mass off the map -> cosine 4 / sqrt(4 * 8)
    attention[3, 5:7, 5:7] = 1.0  # disjoint -> cosine 0
    cams = np.zeros((6, 7, 8, 8), np.float32)
    cams[1, 1] = attention[1]
    cams[2, 1] = attention[2]
    cams[3, 2] = attention[3]
    m = compute_metrics(labels, _onehot_probs(pred), attention, cams, maps, valid)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    # per-class F1: neutral p=1/2 r=1 -> 2/3; happiness p=1 r=1/2 -> 2/3; surprise p=1/2 r=1 -> 2/3;
    # sadness 0; anger/disgust/fear: no support and no predictions -> 0 (zero_division=0)
    assert m["macro_f1"] == pytest.approx((2 / 3 * 3) / 7)
    assert m["confusion"][1] == [0, 1, 1, 0, 0, 0, 0]
    assert m["per_class"]["happiness"]["recall"] == pytest.approx(0.5)
    happy = (1.0 + 4 / np.sqrt(32)) / 2
    assert m["per_class"]["happiness"]["att_cos"] == pytest.approx(happy, abs=1e-4)
    assert m["per_class"]["surprise"]["att_cos"] == pytest.approx(0.0, abs=1e-3)
    assert m["per_class"]["neutral"]["att_cos"] is None  # neutral has no map
    assert m["att_cos"] == pytest.approx((happy + 0.0) / 2, abs=1e-4)  # mean over classes with maps
    assert m["per_class"]["happiness"]["cam_cos"] == pytest.approx(happy, abs=1e-4)
    assert m["cam_cos"] == pytest.approx((happy + 0.0) / 2, abs=1e-4)


def test_map_cosine_shifts_explanations_to_non_negative():
    maps = np.ones((1, 8, 8), np.float32)
    negative_constant = np.full((1, 4, 4), -3.0, np.float32)
    negative_constant[0, 0, 0] = -2.0
    assert map_cosine(negative_constant, maps)[0] > 0


def test_eval_command_writes_the_metrics(tmp_path, small_splits, small_cache, ferplus_splits):
    """`python -m train eval` on a saved checkpoint writes the documented keys."""
    from stream_fer.train.checkpoint import save_checkpoint
    from stream_fer.train.model import ModelConfig, build_model

    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(ModelConfig(widths=(8, 16, 16), stem_channels=8)))
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "train", "eval", "--checkpoint", str(ckpt), "--split", "test",
                           "--limit", "120", "--sample", "50", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(out.read_text())
    for key in ("accuracy", "macro_f1", "att_cos", "cam_cos", "per_class", "confusion", "n"):
        assert key in metrics
    assert set(metrics["per_class"]["fear"]) >= {"recall", "att_cos", "cam_cos"}
    assert metrics["n"] <= 120 and metrics["sample"]["limit"] == 50 and metrics["sample"]["n"] <= 50
