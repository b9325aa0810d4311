"""The trust score: the shipped model (engines/default/trust.json) applied to hand-made evidence, the stability
rule, and on real video (the shared Pexels clip) through stream_fer.analyze: frames with the hand over the
mouth and frames where the expression changes get lower trust than steady, unoccluded ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_fer.engines import default_model_dir
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.trust import (
    TRUST_FILENAME,
    Evidence,
    TrustHistory,
    TrustModel,
    calibrated,
    default_trust_model,
    load_trust_model,
    trust,
)

SMILE = {"mouthSmileLeft": 0.85, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4,
         "jawOpen": 0.3}
RELAXED = dict.fromkeys(("mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight", "jawOpen",
                         "browInnerUp", "browDownLeft", "browDownRight", "eyeWideLeft", "eyeWideRight"), 0.02)


def probs(**named: float) -> np.ndarray:
    """A probability vector with the named classes set and the rest sharing what is left equally."""
    p = np.zeros(len(CLASS_NAMES))
    for name, v in named.items():
        p[CLASS_NAMES.index(name)] = v
    rest = [k for k, c in enumerate(CLASS_NAMES) if c not in named]
    p[rest] = (1.0 - p.sum()) / len(rest)
    return p


@pytest.fixture(scope="module")
def model() -> TrustModel:
    m = default_trust_model()
    assert m is not None, f"engines/default/{TRUST_FILENAME} is missing"
    return m


def happy(p, mirror=None, cos=0.9, blendshapes=SMILE, stability=None, model=None):
    return trust(p, CLASS_NAMES, {"happiness": cos, "surprise": 0.5}, 2.0, blendshapes, stability,
                 model=model, mirror_probs=mirror)


def test_shipped_model_is_fitted_on_validation_and_sharpens_the_probabilities(model):
    spec = json.loads((default_model_dir() / TRUST_FILENAME).read_text())
    assert "validation" in spec["fitted_on"]
    assert set(spec["models"]) == {"expressive", "neutral"}
    # Trained on vote distributions, the model is under-confident: the fitted temperature sharpens (T < 1).
    assert 0.3 < model.temperature < 1.0
    p = probs(happiness=0.6, surprise=0.2)
    assert calibrated(p, model.temperature).max() > 0.6


def test_a_confident_prediction_with_agreeing_evidence_is_trusted(model):
    p = probs(happiness=0.95)
    t = happy(p, mirror=p, model=model)
    assert t.score > 0.9
    assert t.reason == ""


def test_a_split_prediction_is_not_trusted_and_says_between_what(model):
    p = probs(happiness=0.45, surprise=0.4)
    t = happy(p, mirror=p, model=model)
    sure = happy(probs(happiness=0.95), mirror=probs(happiness=0.95), model=model)
    assert t.score < 0.75 and t.score < sure.score - 0.25
    assert t.reason == "split: happiness / surprise"


def test_more_confidence_means_more_trust(model):
    scores = [happy(probs(happiness=c), mirror=probs(happiness=c), model=model).score for c in (0.4, 0.6, 0.8, 0.95)]
    # (the spread is the fitted model's: 0.20 for the model fitted with every mirror read, 0.198 since session 16)
    assert scores == sorted(scores) and scores[-1] - scores[0] > 0.15


def test_a_mirrored_face_that_reads_differently_lowers_trust_and_is_named(model):
    """The analyzer reads a face with its mirror image and shows the average (average_with_mirror): a mirror
    image that reads surprise where the crop reads happiness splits the reading, which the score and the
    reason say."""
    crop = probs(happiness=0.9, surprise=0.05)
    agree = happy(crop, mirror=crop, model=model)
    mirror = probs(surprise=0.8, happiness=0.1)
    disagree = happy((crop + mirror) / 2, mirror=mirror, model=model)
    assert disagree.score < agree.score - 0.1
    assert disagree.reason == "split: happiness / surprise"


def test_instability_over_recent_frames_scales_the_score_and_is_named(model):
    p = probs(happiness=0.95)
    steady = happy(p, mirror=p, stability=1.0, model=model)
    flicker = happy(p, mirror=p, stability=0.5, model=model)
    assert flicker.score == pytest.approx(steady.score * 0.5)
    assert flicker.reason == "unstable over recent frames"


def test_neutral_needs_no_cosine_and_reads_moving_muscles_only_if_fitted_to(model):
    """A neutral face has no AU regions, so no cosine. The blendshapes' activity is a candidate feature for
    neutral predictions; `python -m train trust` keeps it only where it helps on validation (the shipped
    model's feature set decides), and a kept one lowers the score when muscles move."""
    p = probs(neutral=0.8)
    calm = trust(p, CLASS_NAMES, {}, None, RELAXED, model=model, mirror_probs=p)
    busy = trust(p, CLASS_NAMES, {}, None, {**RELAXED, **SMILE}, model=model, mirror_probs=p)
    assert 0.0 <= busy.score <= calm.score <= 1.0
    if "blendshape_activity" in model.spec["models"]["neutral"]["features"]:
        assert busy.score < calm.score and busy.reason == "blendshapes show expression"
    else:
        assert busy.score == calm.score


def test_the_score_is_the_stored_logistic_regression(model):
    """Standardise with trust.json's mean and scale, then the sigmoid of intercept + coef . z: nothing else."""
    p = probs(happiness=0.7, surprise=0.2)
    ev = Evidence(p, CLASS_NAMES, {"happiness": 0.8, "surprise": 0.6}, 1.5, SMILE, p)
    kind, f = model.features(ev)
    spec = model.spec["models"][kind]
    z = (np.array([f[n] for n in spec["features"]]) - spec["mean"]) / np.array(spec["scale"])
    expected = 1 / (1 + np.exp(-(spec["intercept"] + np.dot(spec["coef"], z))))
    assert model.score(ev).score == pytest.approx(expected)


def test_history_counts_the_recent_frames_that_agree_with_the_shown_label():
    h = TrustHistory(frames=4)
    assert h.update(1, "happiness", "happiness") == 1.0
    assert h.update(1, "surprise", "happiness") == 0.5
    for _ in range(4):
        last = h.update(1, "happiness", "happiness")
    assert last == 1.0  # only the last 4 frames count
    assert h.update(2, "neutral", "happiness") == 0.0  # tracks are separate
    h.end(1)
    assert h.update(1, "surprise", "happiness") == 0.0
    h.reset()
    assert h.update(2, "happiness", "happiness") == 1.0


def test_a_trust_model_fitted_for_another_checkpoint_is_not_used(tmp_path, model):
    assert load_trust_model(tmp_path, "0" * 64) is None
    assert load_trust_model(tmp_path, model.source_checkpoint_sha256) is not None


def test_a_trust_model_fitted_with_another_mirror_reader_is_not_used(tmp_path, model):
    """Fitted on faces whose mirror images one network read, it is not applied where another reads them
    (engines/pair.py), and the other way round; a run reading each face alone (None) takes either."""
    sha = model.source_checkpoint_sha256
    spec = json.loads((default_model_dir() / "trust.json").read_text())
    mirror_sha = spec.get("mirror_checkpoint_sha256", "")
    other = "1" * 64
    assert load_trust_model(tmp_path, sha, mirror_sha) is not None
    assert load_trust_model(tmp_path, sha, None) is not None
    assert load_trust_model(tmp_path, sha, other) is None
    spec["mirror_checkpoint_sha256"] = other
    folder = tmp_path / "pair"
    folder.mkdir()
    (folder / "trust.json").write_text(json.dumps(spec))
    assert load_trust_model(folder, sha, other).mirror_checkpoint_sha256 == other
    assert load_trust_model(folder, sha, None) is not None
    found = load_trust_model(folder, sha, "")  # read with its own mirror: falls to the default model's, if it fits
    assert found is None or found.mirror_checkpoint_sha256 == ""


# WolfgangLanger_Pexels.mp4 (472 frames, 23.976 fps), ranges marked by eye on extracted frames: steady, unoccluded
# faces (crying 30-56, laughing 260-440); the hand over the mouth (enters at ~60, gone by ~228); transitions
# (brows knit and the crying sets in 4-24; the hand leaves and the smile forms 224-248).
STEADY = [(30, 56), (260, 440)]
HAND_OVER_MOUTH = [(60, 228)]
TRANSITIONS = [(4, 24), (224, 248)]


def _frames(ranges) -> np.ndarray:
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges])


@pytest.fixture(scope="module")
def pexels_trust(shared_dir):
    import stream_fer

    clip = shared_dir / "videos" / "WolfgangLanger_Pexels.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} not found")
    df = stream_fer.analyze(clip).to_pandas()
    assert df["frame_index"].is_unique and len(df) == 472  # one face in every frame
    return df.set_index("frame_index")


def test_on_video_occlusion_and_transitions_get_lower_trust_than_steady_faces(pexels_trust):
    trust = pexels_trust["trust"].astype("float64")
    assert trust.between(0, 1).all()
    steady, hand, moving = (trust.loc[_frames(r)] for r in (STEADY, HAND_OVER_MOUTH, TRANSITIONS))
    assert steady.mean() > 0.9 and (steady < 0.5).mean() < 0.05
    assert hand.mean() < steady.mean() - 0.2
    assert (hand < 0.5).mean() > 0.3
    assert moving.mean() < steady.mean() - 0.15


def test_on_video_low_trust_comes_with_a_reason(pexels_trust):
    low = pexels_trust[pexels_trust["trust"] < 0.5]
    assert len(low) > 50
    reasons = low["trust_reason"]
    assert reasons.notna().mean() > 0.9
    assert reasons.dropna().str.match(r"(low confidence|split: |mirrored face|unstable|attention|blendshapes)").all()


def test_trust_columns_read_back_the_same_from_csv_jsonl_and_parquet(tmp_path):
    import stream_fer
    from stream_fer.samples import SAMPLE_VIDEO

    paths = {ext: tmp_path / f"rows.{ext}" for ext in ("csv", "jsonl", "parquet")}
    stream_fer.analyze(SAMPLE_VIDEO, csv=paths["csv"], jsonl=paths["jsonl"], parquet=paths["parquet"], max_frames=30)
    frames = {ext: stream_fer.read_results(p) for ext, p in paths.items()}
    first = frames["parquet"]
    assert str(first["trust"].dtype) == "float32" and str(first["trust_reason"].dtype) == "string"
    assert first["trust"].between(0, 1).all()
    for df in frames.values():
        np.testing.assert_allclose(df["trust"].to_numpy(float), first["trust"].to_numpy(float), atol=1e-4)
        assert df["trust_reason"].fillna("-").tolist() == first["trust_reason"].fillna("-").tolist()
        assert not df["trust_reason"].eq("").fillna(False).any()  # nothing lowered it: null, never ""


def test_bootstrap_intervals_bracket_the_auroc_and_pair_the_gain():
    """The benchmark's 95% intervals: a perfect detector stays at 1, a useless one straddles 0.5, and the gain
    of trust over confidence is paired (the same resamples), so an identical pair has exactly zero gain."""
    from stream_fer.train.trust import bootstrap_intervals

    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.85
    noise = rng.random(400)
    ci = bootstrap_intervals(y, {"confidence": y + 0.1 * noise, "trust": y + 0.1 * noise, "cosine": noise},
                             resamples=100)
    assert ci["confidence"] == pytest.approx([1.0, 1.0])
    assert ci["cosine"][0] < 0.5 < ci["cosine"][1]
    assert ci["trust_minus_confidence"] == pytest.approx([0.0, 0.0])
    weaker = bootstrap_intervals(y, {"confidence": y + 0.1 * noise, "trust": y + 2.0 * noise}, resamples=100)
    assert weaker["trust_minus_confidence"][1] < 0
