"""What flows between pipeline stages. Frozen dataclasses: a stage never mutates what it receives."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A decoded video frame."""

    index: int  # 0-based position in the source (files: decode order; live: capture order)
    timestamp: float  # media time in seconds (presentation time for files, capture clock for live)
    capture_time: float  # time.monotonic() when the frame left the source
    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int | None = None  # the container's presentation timestamp, kept so outputs keep the timing
    time_base: object | None = None  # fractions.Fraction of pts units


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame: what was measured, what the model said, and why."""

    track_id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    landmarks: np.ndarray  # (478, 3) frame pixels
    blendshapes: dict[str, float]
    align_matrix: np.ndarray  # (2, 3): frame pixels -> aligned crop pixels
    raw_probs: np.ndarray  # (K,) this frame's model output (the face and its mirror image, averaged)
    probs: np.ndarray  # (K,) after temporal smoothing
    label: str  # argmax of probs
    attention: np.ndarray  # (h, w) in the aligned crop's frame, non-negative
    cams: np.ndarray  # (K, h, w)
    att_au_cosine: float | None  # attention vs the predicted class's AU map; None for neutral
    au_attention_share: dict[int, float]  # AU number -> fraction of attention inside that AU's region
    trust: float | None = None  # 0-1: estimated chance the label is right (stream_fer.trust); None: no trust model
    trust_reason: str = ""  # what lowered the trust most ("" when nothing did)

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


@dataclass(frozen=True)
class FrameResult:
    frame_index: int
    timestamp: float
    faces: tuple[FaceResult, ...]
    latency_ms: dict[str, float] = field(default_factory=dict)  # stage name -> milliseconds
