"""Per-face rows of per-frame data, for the CSV and JSON Lines sinks.

`to_row(result)` gives one dict per face (one row with the face fields set to None for a frame without
a face). Every row has exactly the keys of `ROW_FIELDS`, in that order, so a CSV writer can use it as
its header; None means "empty" (write "" in CSV, null in JSON).

Columns:
    frame_index, timestamp                      the frame (timestamp in seconds of media time)
    num_faces                                   faces in this frame (0 for the empty row)
    track_id                                    stable id of the face across frames
    box_x0, box_y0, box_x1, box_y1              face box in frame pixels (the landmark mesh's bounds)
    label, confidence                           argmax of the smoothed probabilities, and its value
    raw_label                                   argmax of this frame's raw probabilities
    p_<class>                                   smoothed probability per class (7 classes, model order)
    raw_<class>                                 this frame's raw probability per class
    att_au_cosine                               cosine between attention and the label's AU map
                                                (None for neutral: no AU pattern)
    trust, trust_reason                         the estimated chance the label is right (0-1, stream_fer.trust)
                                                and what lowered it most (None when nothing did; both None
                                                without a trust model for the engine)
    share_AU<n>                                 share of attention inside AU n's region (all 18 AUs)
    bs_<blendshape>                             MediaPipe blendshape scores that measure the label's AUs;
                                                the other blendshape columns are None for that row
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stream_fer.face.action_units import ACTION_UNITS, blendshapes_for
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.frames import FaceResult, FrameResult

_AU_NUMBERS = tuple(sorted(ACTION_UNITS))


def _all_blendshapes() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in CLASS_NAMES:
        for b in blendshapes_for(name):
            seen.setdefault(b, None)
    return tuple(seen)


BLENDSHAPE_COLUMNS: tuple[str, ...] = _all_blendshapes()

ROW_FIELDS: tuple[str, ...] = (
    "frame_index", "timestamp", "num_faces", "track_id", "box_x0", "box_y0", "box_x1", "box_y1",
    "label", "confidence", "raw_label",
    *(f"p_{c}" for c in CLASS_NAMES),
    *(f"raw_{c}" for c in CLASS_NAMES),
    "att_au_cosine", "trust", "trust_reason",
    *(f"share_AU{n}" for n in _AU_NUMBERS),
    *(f"bs_{b}" for b in BLENDSHAPE_COLUMNS),
)


def _round(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


_BOX_KEYS = ("box_x0", "box_y0", "box_x1", "box_y1")
_ROW_KEYS = frozenset(ROW_FIELDS)


@lru_cache(maxsize=16)
def _class_keys(class_names: tuple[str, ...]) -> tuple[tuple[int, str, str], ...]:
    """(model index, "p_<class>", "raw_<class>") for the model's classes that have columns."""
    return tuple((k, f"p_{n}", f"raw_{n}") for k, n in enumerate(class_names) if f"p_{n}" in _ROW_KEYS)


@lru_cache(maxsize=64)
def _share_key(au: int) -> str | None:
    key = f"share_AU{au}"
    return key if key in _ROW_KEYS else None


def face_row(result: FrameResult, face: FaceResult, class_names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """The row of one face of a frame."""
    row: dict = dict.fromkeys(ROW_FIELDS)
    row["frame_index"] = result.frame_index
    row["timestamp"] = _round(result.timestamp, 6)
    row["num_faces"] = len(result.faces)
    row["track_id"] = face.track_id
    for key, v in zip(_BOX_KEYS, face.box):
        row[key] = round(float(v), 1)
    probs, raw = np.asarray(face.probs), np.asarray(face.raw_probs)
    row["label"] = face.label
    row["confidence"] = _round(face.confidence)
    row["raw_label"] = class_names[int(raw.argmax())]
    p_list, raw_list = probs.tolist(), raw.tolist()  # Python floats, as float() of each element
    for k, p_key, raw_key in _class_keys(tuple(class_names)):
        row[p_key] = round(p_list[k], 4)
        row[raw_key] = round(raw_list[k], 4)
    row["att_au_cosine"] = None if face.att_au_cosine is None else _round(face.att_au_cosine)
    row["trust"] = None if face.trust is None else _round(face.trust)
    row["trust_reason"] = face.trust_reason or None  # null rather than "" so CSV, JSONL and Parquet agree
    for n, share in face.au_attention_share.items():
        key = _share_key(n)
        if key is not None:
            row[key] = round(float(share), 4)
    if face.label in CLASS_NAMES:
        for b in blendshapes_for(face.label):
            if b in face.blendshapes:
                row[f"bs_{b}"] = _round(face.blendshapes[b])
    return row


def to_row(result: FrameResult, class_names: tuple[str, ...] = CLASS_NAMES) -> list[dict]:
    """One row per face of the frame, or a single row with only frame_index, timestamp and num_faces = 0
    set when the frame has no face. Keys: ROW_FIELDS, in order."""
    if not result.faces:
        row = dict.fromkeys(ROW_FIELDS)
        row["frame_index"] = result.frame_index
        row["timestamp"] = _round(result.timestamp, 6)
        row["num_faces"] = 0
        return [row]
    return [face_row(result, face, class_names) for face in result.faces]
