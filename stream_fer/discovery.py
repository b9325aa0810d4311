"""Faces at a distance: find faces too small for the whole-frame detector, and follow them.

MediaPipe's FaceLandmarker finds faces with BlazeFace short-range on the whole frame scaled down to 128 px
(letterboxed), so a face under about a sixth of the frame's longer side is never found. `SmallFaceSearch`
looks with the same detector model at higher resolution: on overlapping square tiles, sized so that a face of
`min_face` px is at least `DETECTABLE_SHARE` of a tile, in levels of growing size up to what the whole-frame
pass sees. Each face found is landmarked on an enlarged, upscaled crop around it, and its points are mapped
back to frame pixels.

What it costs is bounded, and nothing where it is not needed:
- nothing when the frame is small for `min_face` (the whole-frame pass already sees such faces), or while the
  whole-frame pass alone fills `max_faces` (the default max_faces=1 with a face in view);
- VIDEO mode follows each small face from frame to frame by landmarking a crop around its previous box (one
  landmarker call per face), so the tile scan runs in slices: the whole scan on the first frame, then
  `1 / scan_interval` of it per frame (slowing down to a quarter of that while the scene shows no face at
  all), plus the tiles around a face that was just lost. Faces below the whole-frame pass's reach that it
  found itself are followed the same way in the frames where it misses them;
- IMAGE mode (independent images) scans every tile of every image.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.landmarks import FaceLandmarks, Landmarker, _import_mediapipe, _native_stderr
from stream_fer.model_files import face_detector_model

log = logging.getLogger(__name__)

DEFAULT_MIN_FACE = 40  # px of face height (the landmark mesh's box); the classifier itself needs ~48 px
DETECTABLE_SHARE = 0.16  # BlazeFace short-range finds a face of >= 16% of its input's side (9/9 placements; 14%: 7/9)
TILE_OVERLAP = 0.3  # neighbouring tiles share 30% of a side: a face up to 0.3 tile is whole in some tile
DETECTOR_INPUT = 128  # the detector's input side; tiles are resized to it here, once
CROP_SIZE = 192  # side of the upscaled crop a small face is landmarked on
FOLLOW_GROW = 1.7  # follow crop side / the previous mesh box's longer side
FOUND_GROW = 2.0  # discovery crop side / the detector box's longer side (that box is smaller than the mesh)
DEFAULT_SCAN_INTERVAL = 60  # VIDEO mode: frames over which one whole tile scan is spread (2 s at 30 fps)
MAX_EMPTY_SLOWDOWN = 4  # each whole scan of a scene without any face runs 2x slower, down to 1/4 of the rate

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Tile:
    """A window of the frame the detector looks at, in frame pixels."""

    x0: int
    y0: int
    width: int
    height: int
    level: int  # 0: the smallest tiles (for min_face); each next level is 1 / TILE_OVERLAP * share larger

    @property
    def box(self) -> Box:
        return float(self.x0), float(self.y0), float(self.x0 + self.width), float(self.y0 + self.height)


def whole_frame_reach(width: int, height: int) -> float:
    """The smallest face (px) the whole-frame pass finds: the detector sees the longer side at 128 px."""
    return DETECTABLE_SHARE * max(width, height)


def search_needed(width: int, height: int, min_face: float) -> bool:
    """Whether faces of min_face px can be too small for the whole-frame pass in a frame of this size."""
    return 0 < min_face < whole_frame_reach(width, height)


def _starts(length: int, window: int, stride: float) -> list[int]:
    if window >= length:
        return [0]
    n = math.ceil((length - window) / stride) + 1
    return [int(round(v)) for v in np.linspace(0, length - window, n)]


def plan_tiles(width: int, height: int, min_face: float) -> tuple[Tile, ...]:
    """The tiles that, together, show every face from min_face px up to the whole-frame pass's reach at
    least DETECTABLE_SHARE of a tile's side. Empty where no search is needed."""
    if not search_needed(width, height, min_face):
        return ()
    tiles: list[Tile] = []
    side, level = min_face / DETECTABLE_SHARE, 0
    while side < max(width, height):  # this level's smallest face is still below the whole-frame reach
        tw, th = min(int(round(side)), width), min(int(round(side)), height)
        stride = side * (1.0 - TILE_OVERLAP)
        tiles += [Tile(x0, y0, tw, th, level) for y0 in _starts(height, th, stride)
                  for x0 in _starts(width, tw, stride)]
        side, level = side * TILE_OVERLAP / DETECTABLE_SHARE, level + 1
    return tuple(tiles)


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def same_face(a: Box, b: Box) -> bool:
    """Whether two boxes show one face: they overlap well, or one's centre lies inside the other."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return (box_iou(a, b) > 0.3 or (b[0] <= ax <= b[2] and b[1] <= ay <= b[3])
            or (a[0] <= bx <= a[2] and a[1] <= by <= a[3]))


def _side(box: Box) -> float:
    return max(box[2] - box[0], box[3] - box[1])


class TileDetector:
    """MediaPipe's FaceDetector task (IMAGE mode) with the bundle's BlazeFace model, run on frame tiles."""

    def __init__(self, model_path=None, min_detection_confidence: float = 0.5):
        mp, BaseOptions, vision = _import_mediapipe()
        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=face_detector_model(model_path)),
            running_mode=vision.RunningMode.IMAGE, min_detection_confidence=min_detection_confidence)
        try:
            with _native_stderr.active():
                self._detector = vision.FaceDetector.create_from_options(options)
        except Exception as exc:
            raise StreamFerError(f"could not load the face detector model: {exc}") from None

    def detect(self, rgb: np.ndarray, tile: Tile) -> list[tuple[Box, float]]:
        """[(box in frame pixels, score), ...] for the faces the detector finds in one tile."""
        window = rgb[tile.y0:tile.y0 + tile.height, tile.x0:tile.x0 + tile.width]
        scale = DETECTOR_INPUT / max(tile.width, tile.height)
        size = (max(1, round(tile.width * scale)), max(1, round(tile.height * scale)))
        small = np.ascontiguousarray(cv2.resize(window, size, interpolation=cv2.INTER_AREA))
        # Filtered on every call, not only the first: LiteRT warns "Input tensor memory is not aligned ..."
        # whenever a buffer it gets happens to be misaligned, which depends on the allocator, not on us.
        with _native_stderr.active():
            result = self._detector.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=small))
        # MediaPipe maps the boxes back to the image it was given (the letterbox is its own business)
        sx, sy = tile.width / size[0], tile.height / size[1]
        found = []
        for d in result.detections:
            b = d.bounding_box
            box = (tile.x0 + b.origin_x * sx, tile.y0 + b.origin_y * sy,
                   tile.x0 + (b.origin_x + b.width) * sx, tile.y0 + (b.origin_y + b.height) * sy)
            found.append((box, float(d.categories[0].score) if d.categories else 0.0))
        return found

    def close(self) -> None:
        if self._detector is not None:
            with contextlib.suppress(Exception), _native_stderr.active():  # LiteRT logs its shut-down too
                self._detector.close()
            self._detector = None


def merge_detections(found: Sequence[tuple[Box, float]]) -> list[Box]:
    """One box per face from overlapping tiles and levels: the best-scoring box of each group."""
    kept: list[Box] = []
    for box, _ in sorted(found, key=lambda bs: -bs[1]):
        if not any(same_face(box, k) for k in kept):
            kept.append(box)
    return kept


def landmark_crop(landmarker: Landmarker, rgb: np.ndarray, box: Box, grow: float) -> FaceLandmarks | None:
    """Landmarks of the face around `box`, from a square crop `grow` times the box's longer side, upscaled
    to CROP_SIZE (parts outside the frame are black); points mapped back to frame pixels."""
    cx, cy = _centre(box)
    scale = CROP_SIZE / max(grow * _side(box), 1.0)
    to_crop = np.float32([[scale, 0, CROP_SIZE / 2 - cx * scale], [0, scale, CROP_SIZE / 2 - cy * scale]])
    crop = cv2.warpAffine(rgb, to_crop, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)
    faces = landmarker.detect(crop)
    if not faces:
        return None
    points = faces[0].points.copy()
    points[:, :2] = (points[:, :2] - to_crop[:, 2]) / scale
    points[:, 2] /= scale
    return FaceLandmarks(points, faces[0].blendshapes)


class SmallFaceSearch:
    """Adds the faces the whole-frame pass missed, down to min_face px, to each frame's faces."""

    def __init__(self, model_path=None, min_face: float = DEFAULT_MIN_FACE, video: bool = True,
                 scan_interval: int = DEFAULT_SCAN_INTERVAL, min_detection_confidence: float = 0.5):
        if min_face <= 0:
            raise ValueError("min_face must be > 0 (0 turns the search off before it is built)")
        if scan_interval < 1:
            raise ValueError("scan_interval must be >= 1")
        self.min_face = float(min_face)
        self.video = video
        self.scan_interval = scan_interval
        self._model_path = model_path
        self._confidence = min_detection_confidence
        self._detector: TileDetector | None = None  # both built on first use: no cost where never needed
        self._crop_landmarker: Landmarker | None = None
        self._size: tuple[int, int] | None = None
        self._plan: tuple[Tile, ...] = ()
        self._reach = 0.0
        self._reset_scan()
        self.stats = {"frames": 0, "tiles": 0, "follows": 0, "found": 0, "lost": 0, "ms": 0.0}

    def _reset_scan(self) -> None:
        self._followed: list[FaceLandmarks] = []
        self._cursor = 0
        self._credit = float(len(self._plan))  # the first frame scans every tile
        self._slowdown = 1  # > 1 while the scene has shown no face for whole scans
        self._seen_face = False  # in the scan under way
        self._priority: list[Tile] = []  # tiles around faces lost on the previous frame

    def reset(self) -> None:
        """A new stream: forget the followed faces and start with a whole scan."""
        self._reset_scan()

    def extend(self, rgb: np.ndarray, faces: Sequence[FaceLandmarks], max_faces: int) -> list[FaceLandmarks]:
        """The whole-frame pass's `faces` plus small faces it missed, at most max_faces in all."""
        faces = list(faces)
        h, w = rgb.shape[:2]
        if (w, h) != self._size:
            self._size, self._plan = (w, h), plan_tiles(w, h, self.min_face)
            self._reach = whole_frame_reach(w, h)
            self._reset_scan()
        if not self._plan:
            return faces[:max_faces]
        if len(faces) >= max_faces and not self._followed:
            if self.video:  # nothing to look for; but note the small faces the whole-frame pass found
                self._followed = self._small(faces[:max_faces])
            return faces[:max_faces]
        self.stats["frames"] += 1
        t0 = time.perf_counter()
        if self.video:
            faces = self._follow(rgb, faces, max_faces)
            tiles = self._next_tiles(seen_face=bool(faces))
        else:
            tiles = list(self._plan)
        if len(faces) < max_faces and tiles:
            faces = self._discover(rgb, faces, max_faces, tiles)
        self.stats["ms"] += (time.perf_counter() - t0) * 1000.0
        return faces

    def _small(self, faces: Sequence[FaceLandmarks]) -> list[FaceLandmarks]:
        """The faces below the whole-frame pass's reach: it finds those only now and then, so they are
        followed from crop to crop in the frames it misses them."""
        return [f for f in faces if f.box[3] - f.box[1] < self._reach]

    def _follow(self, rgb: np.ndarray, faces: list[FaceLandmarks], max_faces: int) -> list[FaceLandmarks]:
        followed = self._small(faces)  # costs nothing while the whole-frame pass keeps finding them
        for previous in self._followed:
            if len(faces) >= max_faces:
                break
            if any(same_face(previous.box, f.box) for f in faces):
                continue  # the whole-frame pass (or another followed face) has it now
            self.stats["follows"] += 1
            now = landmark_crop(self._crop(), rgb, previous.box, FOLLOW_GROW)
            if now is not None and same_face(previous.box, now.box) and 0.6 < _side(now.box) / _side(
                    previous.box) < 1.6:
                faces.append(now)
                followed.append(now)
            else:
                self.stats["lost"] += 1
                self._priority += self._tiles_around(previous.box)
                log.debug("small face at %s lost; searching around it next frame", previous.box)
        self._followed = followed
        return faces

    def _tiles_around(self, box: Box) -> list[Tile]:
        """The tiles of the finest level that can show this face, which contain its centre."""
        cx, cy = _centre(box)
        for level in sorted({t.level for t in self._plan}):
            near = [t for t in self._plan if t.level == level and t.x0 <= cx <= t.x0 + t.width
                    and t.y0 <= cy <= t.y0 + t.height]
            if near and _side(box) <= TILE_OVERLAP * max(near[0].width, near[0].height) * 1.5:
                return near
        return []

    def _next_tiles(self, seen_face: bool) -> list[Tile]:
        """This frame's slice of the cyclic scan, with the tiles around just-lost faces first. A scene that
        showed no face during a whole scan is scanned at half the rate, down to 1 / MAX_EMPTY_SLOWDOWN; a
        face anywhere restores the full rate."""
        if seen_face:
            self._seen_face, self._slowdown = True, 1
        self._credit += len(self._plan) / (self.scan_interval * self._slowdown)
        count = min(int(self._credit), len(self._plan))
        self._credit -= count
        tiles = [self._plan[(self._cursor + i) % len(self._plan)] for i in range(count)]
        if self._cursor + count >= len(self._plan):  # a whole scan ends with this slice
            if not self._seen_face:
                self._slowdown = min(2 * self._slowdown, MAX_EMPTY_SLOWDOWN)
            self._seen_face = False
        self._cursor = (self._cursor + count) % len(self._plan)
        tiles = list(dict.fromkeys(self._priority + tiles))
        self._priority = []
        return tiles

    def _discover(self, rgb: np.ndarray, faces: list[FaceLandmarks], max_faces: int,
                  tiles: list[Tile]) -> list[FaceLandmarks]:
        known = [f.box for f in faces]
        found = []
        with _native_stderr.active() if tiles else contextlib.nullcontext():  # one filter for the whole scan
            for tile in tiles:
                if any(k[0] <= tile.x0 and k[1] <= tile.y0 and tile.x0 + tile.width <= k[2]
                       and tile.y0 + tile.height <= k[3] for k in known):
                    continue  # the tile lies inside a face already known: nothing else to find there
                self.stats["tiles"] += 1
                found += self._detector_instance().detect(rgb, tile)
        for box in merge_detections(found):
            if len(faces) >= max_faces:
                break
            if any(same_face(box, k) for k in known):
                continue
            face = landmark_crop(self._crop(), rgb, box, FOUND_GROW)
            if face is None or any(same_face(face.box, k) for k in known):
                continue  # the landmarker did not confirm it (the detector's false alarms end here)
            self.stats["found"] += 1
            self._seen_face, self._slowdown = True, 1
            log.debug("small face found at %s", tuple(round(v) for v in face.box))
            faces.append(face)
            known.append(face.box)
            if self.video:
                self._followed.append(face)
        return faces

    def _detector_instance(self) -> TileDetector:
        if self._detector is None:
            self._detector = TileDetector(self._model_path, self._confidence)
        return self._detector

    def _crop(self) -> Landmarker:
        if self._crop_landmarker is None:
            self._crop_landmarker = Landmarker(self._model_path, mode="image", max_faces=1,
                                               min_detection_confidence=self._confidence)
        return self._crop_landmarker

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None
        if self._crop_landmarker is not None:
            self._crop_landmarker.close()
            self._crop_landmarker = None
