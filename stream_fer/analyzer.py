"""The per-frame analysis: landmarks -> align + classify -> track + smooth -> render.

`FrameAnalyzer` is the one code path that the CLI's threaded pipeline, the Gradio app and the tests share.
Its four stages are separate methods so the pipeline can run each in its own thread; each stage owns its
state (the landmarker, the engine, the tracker and smoother), so running them concurrently in order is
safe. `analyze(frame)` runs all four in sequence.

    detect(frame)            -> Detected     MediaPipe landmarks and blendshapes (VIDEO mode: frame times)
    classify(detected)       -> Classified   aligned crops and their mirror images in one batched engine call,
                                             each face's two readings averaged, attention per AU region
    track(classified)        -> FrameResult  track ids, per-track smoothing (call in frame order), the
                                             attention-AU cosine and the trust score of the smoothed label
    render(frame, result)    -> RGB array    the annotated copy

Each stage records its latency in milliseconds under "landmarks", "classify", "track" and "render".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stream_fer.align import align_faces
from stream_fer.discovery import DEFAULT_MIN_FACE
from stream_fer.engines.pair import MirrorPair
from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS
from stream_fer.face.alignment import apply_affine
from stream_fer.face.au_maps import map_from_masks, region_mask_stack
from stream_fer.face.geometry import face_frame
from stream_fer.frames import FaceResult, Frame, FrameResult
from stream_fer.landmarks import FaceLandmarks, Landmarker, LandmarkerLoad
from stream_fer.reading import (  # noqa: F401  (average_*: re-exported, the analyzer's way of reading a face)
    MIRROR_BELOW,
    average_readings,
    average_with_mirror,
    check_mirror_below,
    mirror_row,
    read_faces,
)
from stream_fer.render import OverlayOptions, render_frame
from stream_fer.smoothing import make_smoother
from stream_fer.tracking import FaceTracker
from stream_fer.trust import TrustHistory, face_evidence, load_trust_model

log = logging.getLogger(__name__)

ALL_AUS = tuple(ACTION_UNITS.values())
ALL_AU_NUMBERS = tuple(au.number for au in ALL_AUS)
STAGES = ("landmarks", "classify", "track", "render")


@dataclass(frozen=True)
class Detected:
    """A frame and the faces MediaPipe found in it."""

    frame: Frame
    faces: tuple[FaceLandmarks, ...]
    latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassifiedFace:
    """One face after the model: everything of a FaceResult except the track id, the smoothing and the
    attention-AU cosine (which depends on the smoothed label)."""

    landmarks: FaceLandmarks
    box: tuple[float, float, float, float]
    align_matrix: np.ndarray  # (2, 3) frame -> crop
    crop_points: np.ndarray  # (478, 2) the landmarks in crop pixels
    raw_probs: np.ndarray  # (K,) the crop and its mirror image averaged (average_with_mirror)
    attention: np.ndarray  # (h, w)
    cams: np.ndarray  # (K, h, w)
    au_attention_share: dict[int, float]  # AU number -> share of attention inside its region
    au_masks: dict[int, np.ndarray]  # AU number -> hard region mask on the crop (crop_au_masks)
    mirror_probs: np.ndarray | None = None  # (K,) the mirrored crop's probabilities, for the trust score


@dataclass(frozen=True)
class Classified:
    frame: Frame
    faces: tuple[ClassifiedFace, ...]
    latency_ms: dict[str, float] = field(default_factory=dict)


def with_latency(result: FrameResult, stage: str, ms: float) -> FrameResult:
    """A copy of `result` with one more stage latency recorded (results are frozen; never mutate them)."""
    return dataclasses.replace(result, latency_ms={**result.latency_ms, stage: float(ms)})


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _upsampled(attention: np.ndarray, crop_size: int) -> np.ndarray:
    """The attention map upsampled bilinearly to the crop (half-pixel centres, as torch's
    interpolate(align_corners=False) in training's evaluation)."""
    return cv2.resize(np.asarray(attention, dtype=np.float32), (crop_size, crop_size),
                      interpolation=cv2.INTER_LINEAR).astype(np.float64)


def crop_au_masks(crop_points: np.ndarray, crop_size: int) -> dict[int, np.ndarray]:
    """Hard masks of all 18 AU regions on the crop: computed once per face, used for the shares and
    the cosine (views into one (18, S, S) array)."""
    return dict(zip(ALL_AU_NUMBERS, region_mask_stack(crop_points, crop_size, ALL_AUS, crop_size)))


def attention_au_cosine(attention: np.ndarray, crop_points: np.ndarray, crop_size: int,
                        expression: str, masks: dict[int, np.ndarray] | None = None) -> float | None:
    """METHOD.md's ATT-COS for one face: the cosine between the attention (upsampled to the crop and shifted
    to be non-negative) and the expression's AU map (as stream_fer.face.au_maps.expression_map draws it
    from the landmarks in crop coordinates at the crop's size; from `masks` when given, see
    crop_au_masks). None where there is no map (neutral)."""
    numbers = EXPRESSION_AUS.get(expression)
    if not numbers:
        return None
    masks = masks if masks is not None else crop_au_masks(crop_points, crop_size)
    au_map = map_from_masks((masks[n] for n in numbers), face_frame(crop_points).iod)
    if au_map is None:
        return None
    att = _upsampled(attention, crop_size).ravel()
    att -= att.min()
    target = au_map.astype(np.float64).ravel()
    denom = max(float(np.linalg.norm(att)), 1e-8) * max(float(np.linalg.norm(target)), 1e-8)
    return float(att @ target / denom)


def attention_shares(attention: np.ndarray, crop_points: np.ndarray, crop_size: int,
                     masks: dict[int, np.ndarray] | None = None) -> dict[int, float]:
    """Per AU (all 18), the fraction of the (non-negative) attention, upsampled to the crop, that falls
    inside the AU's region(s). Regions overlap, so the shares need not sum to 1."""
    masks = masks if masks is not None else crop_au_masks(crop_points, crop_size)
    att = np.maximum(_upsampled(attention, crop_size), 0.0)
    total = float(att.sum())
    if not masks or total <= 0:
        return dict.fromkeys(masks, 0.0)
    # All regions' sums in one product (the masks as 0/1 rows against the attention's pixels).
    stack = np.stack(list(masks.values())).reshape(len(masks), -1)
    sums = stack.astype(np.float64) @ att.ravel()
    return {n: float(v) / total for n, v in zip(masks, sums)}


class FrameAnalyzer:
    """Landmarks, classification, tracking, smoothing and rendering for a stream of frames."""

    def __init__(self, engine=None, landmarker_path: str | Path | None = None, max_faces: int = 1,
                 smoothing: str = "ema", smoothing_strength: float = 0.6,
                 overlays: OverlayOptions = OverlayOptions(), mode: str = "video", track_max_missed: int = 5,
                 track_max_distance: float = 0.6, min_detection_confidence: float = 0.5,
                 min_face: float = DEFAULT_MIN_FACE, trust: bool = True,
                 landmarker_load: LandmarkerLoad | None = None, mirror: bool = True,
                 mirror_below: float = MIRROR_BELOW):
        if max_faces < 1:
            raise ValueError("max_faces must be at least 1")
        # A face's mirror image is read too where the crop alone is less sure than mirror_below, and the two
        # readings averaged (read_faces); False: the crop alone, and the trust score without its mirror evidence.
        self.mirror = mirror
        self.mirror_below = check_mirror_below(mirror_below)
        # MediaPipe builds its graphs (about 0.3 s of start-up, native work that leaves the GIL free) in a thread
        # while this one loads the engine; `engine` may also be a loader (a callable that returns one).
        # `landmarker_load`: one already being built (analyze() starts it before opening the input); used when
        # its settings are these, else abandoned.
        landmarker = LandmarkerLoad.reuse(landmarker_load, landmarker_path, mode=mode, max_faces=max_faces,
                                          min_detection_confidence=min_detection_confidence, min_face=min_face)
        try:
            self._set_engine(engine, trust)
            self.tracker = FaceTracker(max_missed=track_max_missed, max_distance=track_max_distance)
            self.smoother = make_smoother(smoothing, smoothing_strength)
            self.landmarker: Landmarker = landmarker.result()
        except BaseException:
            landmarker.discard()
            raise
        self.overlays = overlays
        self.mode = mode
        self.max_faces = max_faces
        self._landmarker_args = (landmarker_path, mode, max_faces, min_detection_confidence)
        # Held while MediaPipe runs, so close() or reset() from another thread waits for a detection in
        # flight instead of freeing the graph under it.
        self._landmarker_lock = threading.Lock()
        self.min_face = min_face  # px; faces down to this height are searched for (0: whole-frame pass only)
        self.trust_history = TrustHistory(self.trust_model.stability_frames if self.trust_model else 8)
        log.debug("analyzer: engine %s, input %d px, map %d, smoothing %s", getattr(self.engine, "name", "?"),
                  self.crop_size, self.info.map_size, self.smoother)

    def _set_engine(self, engine, trust: bool) -> None:
        """The engine (given, made by a loader, or the default one) and what depends on it."""
        if engine is None:
            from stream_fer.engines.select import load_engine

            engine = load_engine(mirror=self.mirror)
        elif callable(engine) and not hasattr(engine, "infer"):
            engine = engine()
        self.engine = engine
        self.info = engine.info
        self.class_names: tuple[str, ...] = tuple(engine.info.class_names)
        unknown = [c for c in self.class_names if c not in EXPRESSION_AUS]
        if unknown:
            log.warning("model classes without an AU pattern (no AU map, no cosine): %s", ", ".join(unknown))
        self.crop_size = int(engine.info.input_size)
        # trust=False skips the trust score.
        # The trust model was fitted on one way of reading a face: the mirror images read by this network ("")
        # or by the pair's mirror model (its checkpoint); None when faces are read alone.
        mirror_sha = None
        if self.mirror:
            mirror_sha = engine.mirror_checkpoint_sha256 if isinstance(engine, MirrorPair) else ""
        self.trust_model = (load_trust_model(getattr(engine, "model_dir", None), engine.info.source_checkpoint_sha256,
                                             mirror_sha) if trust else None)

    # --- stages -------------------------------------------------------------------------------------

    def detect(self, frame: Frame) -> Detected:
        t0 = time.perf_counter()
        ts_ms = None if self.mode == "image" else int(round(frame.timestamp * 1000.0))
        with self._landmarker_lock:
            faces = tuple(self.landmarker.detect(frame.rgb, ts_ms))
        return Detected(frame, faces, {"landmarks": _ms_since(t0)})

    def classify(self, detected: Detected) -> Classified:
        t0 = time.perf_counter()
        faces = detected.faces
        out_faces: list[ClassifiedFace] = []
        if faces:
            crops, matrices = align_faces(detected.frame.rgb, [f.points for f in faces], self.crop_size)
            # A face whose mirror image reads differently is ambiguous (the trust score's evidence).
            out, mirror = read_faces(self.engine, crops, self.mirror, self.mirror_below)
            for i, lm in enumerate(faces):
                crop_pts = apply_affine(matrices[i], lm.points)
                attention = np.asarray(out.attention[i], dtype=np.float32)
                masks = crop_au_masks(crop_pts, self.crop_size)
                out_faces.append(ClassifiedFace(
                    landmarks=lm, box=lm.box, align_matrix=matrices[i], crop_points=crop_pts,
                    raw_probs=np.asarray(out.probs[i], dtype=np.float32), attention=attention,
                    cams=np.asarray(out.cams[i], dtype=np.float32),
                    au_attention_share=attention_shares(attention, crop_pts, self.crop_size, masks),
                    au_masks=masks, mirror_probs=mirror_row(mirror, i)))
        latency = {**detected.latency_ms, "classify": _ms_since(t0)}
        return Classified(detected.frame, tuple(out_faces), latency)

    def track(self, classified: Classified) -> FrameResult:
        """Track ids and smoothed probabilities; stateful: call once per frame, in frame order."""
        t0 = time.perf_counter()
        frame = classified.frame
        update = self.tracker.update([f.box for f in classified.faces])
        for track_id in update.ended:
            self.smoother.end(track_id)
            self.trust_history.end(track_id)
        results = []
        for face, track_id in zip(classified.faces, update.track_ids):
            probs = self.smoother.update(track_id, face.raw_probs, frame.timestamp)
            label = self.class_names[int(np.argmax(probs))]
            cosine = attention_au_cosine(face.attention, face.crop_points, self.crop_size, label, face.au_masks)
            trust, reason = self._trust(face, track_id, probs, label, cosine)
            results.append(FaceResult(
                track_id=track_id, box=face.box, landmarks=face.landmarks.points,
                blendshapes=face.landmarks.blendshapes, align_matrix=face.align_matrix,
                raw_probs=face.raw_probs, probs=probs, label=label, attention=face.attention, cams=face.cams,
                att_au_cosine=cosine, au_attention_share=face.au_attention_share, trust=trust, trust_reason=reason))
        latency = {**classified.latency_ms, "track": _ms_since(t0)}
        return FrameResult(frame.index, frame.timestamp, tuple(results), latency)

    def _trust(self, face: ClassifiedFace, track_id: int, probs: np.ndarray, label: str,
               cosine: float | None) -> tuple[float | None, str]:
        """(trust score, reason) of the shown label (stream_fer.trust); on video with the track's recent frames."""
        if self.trust_model is None:
            return None, ""
        ev = face_evidence(probs, self.class_names, face.attention, face.crop_points, self.crop_size, face.au_masks,
                           face.landmarks.blendshapes, cosine, face.mirror_probs)
        stability = None
        if self.mode == "video":
            raw_label = self.class_names[int(np.argmax(face.raw_probs))]
            stability = self.trust_history.update(track_id, raw_label, label)
        t = self.trust_model.score(ev, stability)
        return t.score, t.reason

    def render(self, frame: Frame, result: FrameResult) -> np.ndarray:
        """An annotated RGB copy of the frame (use `render_timed` to also record the latency)."""
        return render_frame(frame.rgb, result, self.overlays, self.crop_size, self.class_names)

    def render_timed(self, frame: Frame, result: FrameResult) -> tuple[np.ndarray, FrameResult]:
        t0 = time.perf_counter()
        annotated = self.render(frame, result)
        return annotated, with_latency(result, "render", _ms_since(t0))

    def analyze(self, frame: Frame) -> tuple[np.ndarray, FrameResult]:
        """The whole per-frame analysis: (annotated RGB frame, results)."""
        return self.render_timed(frame, self.track(self.classify(self.detect(frame))))

    # --- life cycle ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget tracks and smoothing state (a new stream starts); in VIDEO mode also restart the
        landmarker, whose timestamps must keep increasing."""
        self.tracker.reset()
        self.smoother.reset()
        self.trust_history.reset()
        if self.mode == "video":
            path, mode, max_faces, conf = self._landmarker_args
            with self._landmarker_lock:
                self.landmarker.close()
                self.landmarker = Landmarker(path, mode=mode, max_faces=max_faces,
                                             min_detection_confidence=conf, min_face=self.min_face)

    def close(self) -> None:
        """Release MediaPipe (waits for a detection in flight); the analyzer cannot detect afterwards."""
        with self._landmarker_lock:
            self.landmarker.close()

    def __enter__(self) -> FrameAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
