"""A thin wrapper around MediaPipe's FaceLandmarker (Tasks API): RGB frames in, faces out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.model_files import resolve_landmarker

log = logging.getLogger(__name__)

os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ start-up chatter off stderr


@dataclass(frozen=True)
class FaceLandmarks:
    """One face: 478 mesh points in pixel coordinates (x, y, z; z in the units of x), blendshape scores."""

    points: np.ndarray  # (478, 3) float32
    blendshapes: dict[str, float]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the bounds of the mesh."""
        xy = self.points[:, :2]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


class Landmarker:
    """MediaPipe FaceLandmarker in IMAGE mode (independent images) or VIDEO mode (a timed sequence,
    which tracks faces between frames and is faster)."""

    def __init__(self, model_path=None, mode: str = "image", max_faces: int = 1,
                 min_detection_confidence: float = 0.5):
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', not {mode!r}")
        path = resolve_landmarker(model_path)
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        self.mode = mode
        running_mode = vision.RunningMode.IMAGE if mode == "image" else vision.RunningMode.VIDEO
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=running_mode,
            num_faces=max_faces,
            min_face_detection_confidence=min_detection_confidence,
            output_face_blendshapes=True,
        )
        try:
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except Exception as exc:  # a file with the right name but the wrong content
            raise StreamFerError(f"could not load the face landmark model {path}: {exc}") from None
        self._last_ts = -1

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[FaceLandmarks]:
        """Faces in an RGB uint8 image (H, W, 3). VIDEO mode needs increasing timestamps; equal or
        decreasing ones are nudged forward so a stuttering source never raises."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("expected an RGB uint8 image of shape (H, W, 3)")
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self.mode == "image":
            result = self._landmarker.detect(image)
        else:
            ts = int(timestamp_ms if timestamp_ms is not None else self._last_ts + 33)
            ts = max(ts, self._last_ts + 1)
            self._last_ts = ts
            result = self._landmarker.detect_for_video(image, ts)
        h, w = rgb.shape[:2]
        faces = []
        for i, marks in enumerate(result.face_landmarks):
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in marks], dtype=np.float32)
            shapes = result.face_blendshapes[i] if result.face_blendshapes else []
            faces.append(FaceLandmarks(pts, {c.category_name: float(c.score) for c in shapes}))
        return faces

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # MediaPipe's own finaliser can fail at interpreter exit; close early instead
        try:
            self.close()
        except Exception:
            pass
