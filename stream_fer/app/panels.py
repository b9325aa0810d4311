"""What the page shows beside a frame, computed from one FrameResult: the selected face's probability
bars, its explanation image, a short summary with the attention-to-AU agreement and the trust score, the
MediaPipe blendshapes that measure the predicted expression's AUs, and the share of attention in each AU region.
Plain Python: the Gradio layer only puts these values into components."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS, blendshapes_for
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.frames import FaceResult, FrameResult


@dataclass(frozen=True)
class FacePanels:
    probs: dict[str, float]  # class -> smoothed probability ({} when no face)
    explanation: np.ndarray | None  # RGB image of the selected face's explanation panel
    summary: str  # Markdown: which face, label, agreement, latency
    blendshapes: dict[str, float]  # blendshape name -> score, those of the predicted expression's AUs
    au_share: dict[str, float]  # "AU12 lip corner puller" -> fraction of the attention in that region


EMPTY = FacePanels({}, None, "No face found.", {}, {})


def faces_left_to_right(result: FrameResult) -> list[FaceResult]:
    return sorted(result.faces, key=lambda f: (f.box[0], f.track_id))


def select_face(result: FrameResult | None, selected: float | None) -> tuple[int, FaceResult | None]:
    """(1-based position, face): the `selected`-th face from the left, or the last one if there are fewer."""
    if result is None or not result.faces:
        return 0, None
    faces = faces_left_to_right(result)
    try:
        pos = int(selected or 1)
    except (TypeError, ValueError):
        pos = 1
    pos = min(max(pos, 1), len(faces))
    return pos, faces[pos - 1]


def agreement_words(cosine: float | None) -> str:
    if cosine is None:
        return "no AU map for this class"
    if cosine >= 0.7:
        return "looks where the expression's AUs are"
    if cosine >= 0.4:
        return "partly on the expression's AUs"
    return "looks elsewhere than the expression's AUs"  # where it looked, not whether it is right: see trust


def trust_words(face: FaceResult) -> str:
    """The trust line of the summary: the estimated chance the label is right, and what lowered it."""
    if face.trust is None:
        return ""
    return (f"  \ntrust: **{face.trust:.0%}** (estimated chance the label is right)"
            + (f": {face.trust_reason}" if face.trust_reason else ""))


def face_panels(result: FrameResult | None, selected=1, class_names=None, explain=None) -> FacePanels:
    """Panels for the selected face (1-based, from the left). `explain(face) -> RGB image` draws its
    explanation panel (the renderer's helper); without it there is no image."""
    pos, face = select_face(result, selected)
    if face is None:
        return EMPTY
    names = tuple(class_names) if class_names else CLASS_NAMES[: len(face.probs)]
    probs = {str(n): float(p) for n, p in zip(names, np.asarray(face.probs, dtype=float), strict=False)}
    latency = sum(result.latency_ms.values()) if result.latency_ms else None
    summary = (f"**Face {pos} of {len(result.faces)}** (track {face.track_id}): **{face.label}** "
               f"{face.confidence:.0%}  \nattention ↔ AU-map cosine: "
               + ("n/a" if face.att_au_cosine is None else f"**{face.att_au_cosine:.2f}**")
               + f" ({agreement_words(face.att_au_cosine)})"
               + trust_words(face)
               + (f"  \nframe {result.frame_index}, {latency:.0f} ms" if latency is not None else ""))
    # Blendshapes measure the predicted expression's AUs. Neutral has none: show those of the likeliest
    # expression that has AUs instead, and say so.
    focus = face.label if EXPRESSION_AUS.get(face.label) else max(
        (n for n in probs if EXPRESSION_AUS.get(n)), key=probs.get, default=None)
    wanted = blendshapes_for(focus) if focus else ()
    if focus and focus != face.label:
        summary += f"  \nblendshapes shown for **{focus}**, the likeliest expression with AUs"
    shapes = {name: float(face.blendshapes.get(name, 0.0)) for name in wanted}
    share = {}
    for number, value in sorted(face.au_attention_share.items(), key=lambda kv: -kv[1]):
        au = ACTION_UNITS.get(int(number))
        share[f"AU{number} {au.name}" if au else f"AU{number}"] = float(value)
    image = explain(face) if explain is not None else None
    return FacePanels(probs, image, summary, shapes, share)
