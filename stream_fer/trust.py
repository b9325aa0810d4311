"""How far to trust one prediction: a score in [0, 1] and a short reason naming what lowered it.

The score is a logistic regression, fitted on the FER+ validation split through the product's own path
(`python -m train trust`), that estimates the chance that the predicted label is the one most annotators
chose. It reads evidence the product already has for every face:

    confidence      the temperature-scaled top probability, the top-1 / top-2 margin and the entropy
    mirror          the probability of the same label for the horizontally mirrored crop (one more engine
                    pass; a face whose mirror image reads differently is an ambiguous face)
    attention       the attention-AU cosine of the predicted class, its gap to the best other expression's
                    cosine, and how concentrated the attention is inside the predicted AU regions
    blendshapes     MediaPipe's measured muscle movements (blendshapes) for the predicted expression's AUs,
                    against the same for the other expressions (standardised per expression)
    class           a per-class prior (some classes are wrong more often than others)

There are two models: one for expressive predictions and one for neutral (neutral has no AU map, so no
cosine). Their standardisation, coefficients and intercepts live in the model folder's `trust.json`, and
are applied here in plain numpy.

On video a track's recent frames also count: the score is multiplied by the share of the last frames whose
own (unsmoothed) label agrees with the label shown (`TrustHistory`). That rule is set by hand (FER+ has no
video to fit it on) and documented in the model card.

The reason is the group of evidence that pulled the score down most, measured against the average correct
validation prediction: "low confidence", "split: happiness / surprise", "attention away from happiness's
AUs", "blendshapes don't show happiness", "unstable over recent frames"; "" when nothing pulled it down.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from stream_fer.face.action_units import EXPRESSION_AUS, blendshapes_for

log = logging.getLogger(__name__)

TRUST_FILENAME = "trust.json"
NEUTRAL = "neutral"
# A group's pull must be at least this many logits below the reference to be named as the reason.
REASON_MIN_PULL = 0.5


@dataclass(frozen=True)
class Evidence:
    """What the trust model reads about one face."""

    probs: np.ndarray  # (K,) the probabilities the shown label comes from (smoothed on video)
    class_names: tuple[str, ...]
    cosines: Mapping[str, float | None]  # attention-AU cosine per expression (at least the top ones)
    concentration: float | None  # log density ratio of attention inside vs outside the label's AU regions
    blendshapes: Mapping[str, float]  # MediaPipe blendshape scores of this frame
    mirror_probs: np.ndarray | None = None  # (K,) the engine's output for the mirrored crop, when run

    @property
    def label(self) -> str:
        return self.class_names[int(np.argmax(self.probs))]


@dataclass(frozen=True)
class Trust:
    score: float  # 0-1: the estimated chance that the label is right (FER+ majority sense)
    reason: str  # what lowered it most; "" when nothing did


def _softmax_t(probs: np.ndarray, temperature: float) -> np.ndarray:
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max()
    e = np.exp(logp)
    return e / e.sum()


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities (softmax of log p / T: the same as scaling the logits)."""
    return _softmax_t(probs, temperature)


def concentration(attention: np.ndarray, crop_points: np.ndarray, crop_size: int, masks: Mapping[int, np.ndarray],
                  expression: str) -> float | None:
    """log((share of attention inside the union of `expression`'s AU regions / that union's area) /
    (share outside / area outside)): 0 when attention is spread evenly, > 0 when it is concentrated on the
    AUs. None for neutral or when the regions cover nothing (or everything)."""
    from stream_fer.analyzer import attention_shares

    numbers = EXPRESSION_AUS.get(expression)
    if not numbers:
        return None
    union = np.any([masks[n] for n in numbers], axis=0)
    area = float(union.mean())
    if area <= 0.0 or area >= 1.0:
        return None
    inside = attention_shares(attention, crop_points, crop_size, {0: union})[0]
    inside = min(max(inside, 1e-4), 1 - 1e-4)
    return float(np.log((inside / area) / ((1 - inside) / (1 - area))))


def top_expressions(probs: np.ndarray, class_names: tuple[str, ...]) -> tuple[str, str | None]:
    """(the label, the most probable other expression that has an AU map)."""
    order = np.argsort(-np.asarray(probs))
    label = class_names[int(order[0])]
    rival = next((class_names[int(k)] for k in order[1:]
                  if EXPRESSION_AUS.get(class_names[int(k)])), None)
    return label, rival


def face_evidence(probs: np.ndarray, class_names: tuple[str, ...], attention: np.ndarray, crop_points: np.ndarray,
                  crop_size: int, masks: Mapping[int, np.ndarray], blendshapes: Mapping[str, float],
                  label_cosine: float | None = None, mirror_probs: np.ndarray | None = None) -> Evidence:
    """Evidence for one face from what the analyzer has: probabilities, attention, the landmarks in crop
    pixels and the AU region masks on the crop (stream_fer.analyzer.crop_au_masks). `label_cosine`: the
    label's cosine when already computed; `mirror_probs`: the engine's probabilities for the horizontally
    mirrored crop."""
    from stream_fer.analyzer import attention_au_cosine

    label, rival = top_expressions(probs, class_names)
    cosines: dict[str, float | None] = {}
    for name in (label, rival):
        if name is None or not EXPRESSION_AUS.get(name):
            continue
        if name == label and label_cosine is not None:
            cosines[name] = label_cosine
        else:
            cosines[name] = attention_au_cosine(attention, crop_points, crop_size, name, masks)
    return Evidence(np.asarray(probs, dtype=np.float64), tuple(class_names), cosines,
                    concentration(attention, crop_points, crop_size, masks, label), dict(blendshapes),
                    None if mirror_probs is None else np.asarray(mirror_probs, dtype=np.float64))


def blendshape_evidence(blendshapes: Mapping[str, float], expressions) -> dict[str, float]:
    """Per expression, the mean score of the blendshapes that measure its AUs (0 where none is present)."""
    out = {}
    for name in expressions:
        values = [float(blendshapes[b]) for b in blendshapes_for(name) if b in blendshapes]
        out[name] = sum(values) / len(values) if values else 0.0  # a few floats: numpy's mean costs more
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


@dataclass(frozen=True)
class _Logistic:
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    reference: np.ndarray  # the standardised features of the average correct validation prediction

    @classmethod
    def from_dict(cls, d: dict) -> _Logistic:
        names = tuple(d["features"])
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef", "reference")}
        if any(len(v) != len(names) for v in arr.values()):
            raise ValueError("trust model: features, mean, scale, coef and reference differ in length")
        return cls(names, arr["mean"], arr["scale"], arr["coef"], float(d["intercept"]), arr["reference"])

    def logit_parts(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(logit, per-feature pull against the reference in logits)."""
        z = (x - self.mean) / self.scale
        return float(self.intercept + self.coef @ z), self.coef * (z - self.reference)


class TrustModel:
    """The fitted trust model of one expression model (its trust.json)."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.temperature = float(spec["temperature"])
        self.bs_mean = {k: float(v) for k, v in spec["blendshape_mean"].items()}
        self.bs_scale = {k: float(v) for k, v in spec["blendshape_scale"].items()}
        self.models = {k: _Logistic.from_dict(v) for k, v in spec["models"].items()}
        self.groups: dict[str, str] = dict(spec["feature_groups"])
        self.stability_frames = int(spec.get("stability", {}).get("frames", 8))
        self.source_checkpoint_sha256 = spec.get("source_checkpoint_sha256", "")
        # the model that read the mirror images when it was fitted: "" the same network (engines/pair.py)
        self.mirror_checkpoint_sha256 = spec.get("mirror_checkpoint_sha256", "")

    @classmethod
    def from_file(cls, path: str | Path) -> TrustModel:
        return cls(json.loads(Path(path).read_text()))

    def features(self, ev: Evidence) -> tuple[str, dict[str, float]]:
        """(which model: "expressive" or "neutral", the named feature values)."""
        q = calibrated(ev.probs, self.temperature)
        order = np.argsort(-q)
        label, _ = top_expressions(ev.probs, ev.class_names)
        entropy = float(-(q * np.log(np.clip(q, 1e-12, 1))).sum() / np.log(len(q)))
        f = {"confidence": float(q[order[0]]), "margin": float(q[order[0]] - q[order[1]]), "entropy": entropy}
        if ev.mirror_probs is not None:  # the mirrored face's (calibrated) probability of the same label
            f["mirror_confidence"] = float(calibrated(ev.mirror_probs, self.temperature)[order[0]])
        expressive = [c for c in ev.class_names if EXPRESSION_AUS.get(c)]
        raw = blendshape_evidence(ev.blendshapes, expressive)
        z = {c: (raw[c] - self.bs_mean.get(c, 0.0)) / self.bs_scale.get(c, 1.0) for c in expressive}
        for c in ev.class_names:
            f[f"is_{c}"] = float(c == label)
        if label == NEUTRAL or label not in z:
            f["blendshape_activity"] = max(z.values()) if z else 0.0
            return "neutral", f
        others = [z[c] for c in expressive if c != label]
        f["blendshape_support"] = z[label]
        f["blendshape_gap"] = z[label] - (max(others) if others else 0.0)
        cos = ev.cosines.get(label)
        f["cosine"] = float(cos) if cos is not None else np.nan
        rivals = [v for k, v in ev.cosines.items() if k != label and v is not None]
        f["cosine_gap"] = f["cosine"] - max(rivals) if rivals and cos is not None else 0.0
        f["concentration"] = float(ev.concentration) if ev.concentration is not None else np.nan
        return "expressive", f

    def score(self, ev: Evidence, stability: float | None = None) -> Trust:
        kind, f = self.features(ev)
        model = self.models[kind]
        x = np.array([f.get(name, np.nan) for name in model.features], dtype=np.float64)
        x = np.where(np.isfinite(x), x, model.mean)  # a missing value counts as the validation mean
        logit, pulls = model.logit_parts(x)
        score = 1.0 / (1.0 + np.exp(-logit))
        by_group: dict[str, float] = {}
        for name, pull in zip(model.features, pulls):
            group = self.groups.get(name, name)
            by_group[group] = by_group.get(group, 0.0) + float(pull)
        if stability is not None:
            stability = min(max(float(stability), 0.0), 1.0)
            before, score = score, score * stability
            by_group["stability"] = _logit(score) - _logit(before)  # the pull, in logits, like the others
        return Trust(float(score), self._reason(by_group, ev, f))

    def _reason(self, pulls: dict[str, float], ev: Evidence, f: dict[str, float]) -> str:
        group, pull = min(pulls.items(), key=lambda kv: kv[1], default=("", 0.0))
        if pull > -REASON_MIN_PULL:
            return ""
        label, _ = top_expressions(ev.probs, ev.class_names)
        if group == "confidence":
            order = np.argsort(-np.asarray(ev.probs))
            if f["margin"] < 0.25:
                return f"split: {ev.class_names[int(order[0])]} / {ev.class_names[int(order[1])]}"
            return "low confidence"
        if group == "mirror":
            if ev.mirror_probs is not None and int(np.argmax(ev.mirror_probs)) != int(np.argmax(ev.probs)):
                return f"mirrored face reads {ev.class_names[int(np.argmax(ev.mirror_probs))]}"
            return "mirrored face less sure"
        if group == "attention":
            return f"attention away from {label}'s AUs"
        if group == "blendshapes":
            return "blendshapes show expression" if label == NEUTRAL else f"blendshapes don't show {label}"
        if group == "class":
            return f"{label} is often confused"
        if group == "stability":
            return "unstable over recent frames"
        return f"low {group}"


class TrustHistory:
    """Per track, the last few frames' own labels (before smoothing), for the stability rule."""

    def __init__(self, frames: int = 8):
        self.frames = max(1, int(frames))
        self._labels: dict[int, deque[str]] = {}

    def update(self, track_id: int, raw_label: str, shown_label: str) -> float:
        """Record this frame's raw label; return the share of the recent frames (this one included) whose
        raw label is the shown one."""
        labels = self._labels.setdefault(track_id, deque(maxlen=self.frames))
        labels.append(raw_label)
        return sum(1 for x in labels if x == shown_label) / len(labels)

    def end(self, track_id: int) -> None:
        self._labels.pop(track_id, None)

    def reset(self) -> None:
        self._labels.clear()


def trust(probs, class_names, cosines: Mapping[str, float | None], concentration_: float | None,
          blendshapes: Mapping[str, float], stability: float | None = None,
          model: TrustModel | None = None, mirror_probs=None) -> Trust:
    """The trust of one prediction from its parts (see Evidence); `stability` in [0, 1] from TrustHistory
    on video, None for a still image. Uses the default model's trust.json unless `model` is given."""
    model = model or default_trust_model()
    if model is None:
        raise FileNotFoundError(f"no {TRUST_FILENAME} for the default model")
    ev = Evidence(np.asarray(probs, dtype=np.float64), tuple(class_names), dict(cosines), concentration_,
                  dict(blendshapes), None if mirror_probs is None else np.asarray(mirror_probs, dtype=np.float64))
    return model.score(ev, stability)


def trust_file_for(model_dir: str | Path | None, source_checkpoint_sha256: str = "",
                   mirror_checkpoint_sha256: str | None = None) -> tuple[Path, TrustModel] | None:
    """(path, model) of an engine's trust model: model_dir/trust.json when there is one (and it was fitted for
    the same checkpoint, where both say which); else the default model's, when it was fitted for exactly this
    checkpoint (the torch backend runs the default checkpoint without a model folder, the INT8 export lives in
    a sibling folder); else None. mirror_checkpoint_sha256: the checkpoint of the model that reads the mirror
    images ("" the same network; engines/pair.py), which the file must have been fitted with too; None when
    faces are read alone (any file of the checkpoint then applies, without its mirror evidence)."""
    from stream_fer.engines import default_model_dir

    candidates = [(Path(model_dir), False)] if model_dir is not None else []
    candidates.append((default_model_dir(), True))
    for folder, need_match in candidates:
        path = folder / TRUST_FILENAME
        if not path.is_file():
            continue
        try:
            model = TrustModel.from_file(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            continue
        fitted_for = model.source_checkpoint_sha256
        if need_match and not (source_checkpoint_sha256 and fitted_for == source_checkpoint_sha256):
            continue
        if fitted_for and source_checkpoint_sha256 and fitted_for != source_checkpoint_sha256:
            log.warning("ignoring %s: fitted for another checkpoint", path)
            continue
        if mirror_checkpoint_sha256 is not None and model.mirror_checkpoint_sha256 != mirror_checkpoint_sha256:
            log.warning("ignoring %s: fitted with the mirror images read by %s", path,
                        "another model" if model.mirror_checkpoint_sha256 else "the same network")
            continue
        return path, model
    return None


def load_trust_model(model_dir: str | Path | None, source_checkpoint_sha256: str = "",
                     mirror_checkpoint_sha256: str | None = None) -> TrustModel | None:
    """The trust model of an engine (trust_file_for), or None: the score is then left empty."""
    found = trust_file_for(model_dir, source_checkpoint_sha256, mirror_checkpoint_sha256)
    if found is None:
        log.info("no %s for this model: trust is left empty (fit one with `python -m train trust`)", TRUST_FILENAME)
        return None
    return found[1]


@lru_cache(maxsize=1)
def default_trust_model() -> TrustModel | None:
    from stream_fer.engines import default_model_dir

    path = default_model_dir() / TRUST_FILENAME
    return TrustModel.from_file(path) if path.is_file() else None
