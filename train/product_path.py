"""FER+ images run the way the product runs a face: MediaPipe landmarks on the upscaled image -> aligned crop
(stream_fer.align) -> the shipped engine (ONNX Runtime) -> probabilities, attention, CAMs, and the
analyzer's own attention-AU cosine and per-AU attention shares.

What is slow is computed once and cached in the training cache: MediaPipe once per split and landmark model
(whether a face was found, the aligned crop, the landmarks in crop pixels and the 52 blendshape scores), the
engine once per split and model (its outputs, beside those). Everything else (cosines of any class, shares, trust
features) is derived from that cache with the run time's functions, so it follows code changes for free.

The upscaled "frame" is the one the training landmark cache uses (train/landmarks.py ATTEMPTS: 192 px with a
64 px border first; two fallbacks with histogram equalisation for faces the detector misses). MediaPipe
sees the attempt's image; the crop is always cut from the un-equalised upscaled image, as the product would
cut it from the frame it was given. Images where no attempt finds a face get no prediction (the product
would show nothing), and are counted as not covered.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_fer.face.classes import CLASS_NAMES
from stream_fer.model_files import file_sha256
from stream_fer.train.data import FerSplit
from stream_fer.train.paths import train_cache

log = logging.getLogger(__name__)

BLENDSHAPE_NAMES_KEY = "blendshape_names"
CHUNK = 256  # images per engine call (and per progress step)
FORMAT = "product-path-3"  # part of the cache key: bump when what is stored changes


@dataclass(frozen=True)
class ProductPathOutputs:
    """Per image of a split, in the split's order. Rows where `found` is False are zeros. probs, attention and
    cams are what the analyzer shows: each face read with its mirror image (stream_fer.analyzer
    .average_with_mirror), unless the split was run with mirror=False (the crop alone)."""

    keys: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) majority label, -1 where none
    found: np.ndarray  # (N,) bool: MediaPipe found a face
    probs: np.ndarray  # (N, K) float32
    attention: np.ndarray  # (N, h, w) float32
    cams: np.ndarray  # (N, K, h, w) float32
    crop_points: np.ndarray  # (N, 478, 2) float32, landmarks in crop pixels
    crops: np.ndarray  # (N, S, S) uint8, what the engine was given
    blendshapes: np.ndarray  # (N, 52) float32, columns named by blendshape_names
    blendshape_names: tuple[str, ...]
    crop_size: int
    # (N, K) the mirrored crop's own probabilities (the trust evidence); NaN rows where the mirror image was not read
    # (the crop alone was sure enough: stream_fer.reading.read_faces)
    mirror_probs: np.ndarray | None = None

    def mirror_read(self) -> np.ndarray:
        """(N,) bool: the faces whose mirror image was read and averaged with the crop."""
        if self.mirror_probs is None:
            return np.zeros(len(self.keys), dtype=bool)
        return self.found & ~np.isnan(self.mirror_probs[:, 0])

    def blendshape_dict(self, i: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.blendshape_names, self.blendshapes[i])}


def _split_digest(split: FerSplit, landmarker_path: Path, crop_size: int):
    from stream_fer.train.landmarks import ATTEMPTS

    digest = hashlib.sha1(FORMAT.encode())
    digest.update(repr(ATTEMPTS).encode())
    digest.update(file_sha256(landmarker_path).encode())
    digest.update(str(crop_size).encode())
    digest.update(np.ascontiguousarray(split.keys.astype("U")).tobytes())
    return digest


def faces_cache_path(split: FerSplit, landmarker_path: Path, crop_size: int) -> Path:
    """The split's landmarks, crops and blendshapes: the same for every model of this crop size."""
    digest = _split_digest(split, landmarker_path, crop_size).hexdigest()[:12]
    return train_cache() / f"product_path_faces-{split.name}-{digest}.npz"


def cache_path(split: FerSplit, model_dir: Path, landmarker_path: Path, crop_size: int = 48,
               mirror: bool = True, mirror_below: float = 1.0) -> Path:
    from stream_fer.engines.pair import mirror_model_dir

    digest = _split_digest(split, landmarker_path, crop_size)
    digest.update(file_sha256(Path(model_dir) / "model.onnx").encode())
    digest.update(b"mirror" if mirror else b"crop only")
    if mirror and mirror_below < 1.0:  # (every mirror read: the key of the caches made before the threshold)
        digest.update(f"mirror below {mirror_below!r}".encode())
    mirror_dir = mirror_model_dir(Path(model_dir)) if mirror else None
    if mirror_dir is not None:  # the mirror images read by a second network (engines/pair.py)
        digest.update(file_sha256(mirror_dir / "model.onnx").encode())
    return train_cache() / f"product_path-{split.name}-{digest.hexdigest()[:12]}.npz"


def _landmark_one(img: np.ndarray, landmarker):
    """(frame RGB, FaceLandmarks) of the first attempt that finds a face, or None."""
    from stream_fer.train.landmarks import ATTEMPTS, _attempt_image

    for size, pad, equalise, fill in ATTEMPTS:
        faces = landmarker.detect(_attempt_image(img, size, pad, equalise, fill))
        if faces:
            # MediaPipe may have needed the equalised image; the engine gets the original pixels.
            return _attempt_image(img, size, pad, False, fill), faces[0]
    return None


def _save(path: Path, **arrays) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def split_faces(split: FerSplit, landmarker_path: Path, size: int) -> dict[str, np.ndarray]:
    """MediaPipe over a whole split, as the product runs it, cached: found, crop_points, crops, blendshapes
    and their names. Slow the first time (minutes per split); every model evaluated afterwards reuses it."""
    from tqdm import tqdm

    from stream_fer.align import align_faces
    from stream_fer.face.alignment import apply_affine
    from stream_fer.landmarks import Landmarker

    path = faces_cache_path(split, landmarker_path, size)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    n = len(split)
    found = np.zeros(n, dtype=bool)
    crop_points = np.zeros((n, 478, 2), np.float32)
    crops = np.zeros((n, size, size), np.uint8)
    names: list[str] = []
    shapes = np.zeros((n, 52), np.float32)
    with Landmarker(landmarker_path, mode="image", max_faces=1, min_detection_confidence=0.2) as landmarker:
        for i in tqdm(range(n), desc=f"product path {split.name}: landmarks", unit="image", mininterval=5):
            hit = _landmark_one(split.images[i], landmarker)
            if hit is None:
                continue
            frame, face = hit
            crop, matrix = align_faces(frame, [face.points], size)
            crop_points[i] = apply_affine(matrix[0], face.points)
            crops[i], found[i] = crop[0], True
            if not names:
                names = sorted(face.blendshapes)
            shapes[i] = [face.blendshapes.get(b, 0.0) for b in names]
    faces = {"keys": split.keys, "found": found, "crop_points": crop_points, "crops": crops, "blendshapes": shapes,
             BLENDSHAPE_NAMES_KEY: np.array(names or [""] * 52)}
    _save(path, **faces)
    log.info("product path %s: faces found on %d/%d images", split.name, found.sum(), n)
    return faces


def run_split(split: FerSplit, model_dir: Path | None = None, landmarker_path=None,
              mirror: bool = True, mirror_below: float | None = None) -> ProductPathOutputs:
    """The product path over a whole split (cached per model; the landmarks once for all models; one process,
    one engine thread). Each face is read as the analyzer reads it (read_faces): its mirror image too where the
    crop's top probability is below `mirror_below` (default: the analyzer's MIRROR_BELOW; 1: every face).
    mirror=False: the crop alone, as the analyzer read a face before session 6."""
    from stream_fer.engines import default_model_dir
    from stream_fer.engines.base import META_FILENAME, ModelInfo
    from stream_fer.engines.select import load_engine
    from stream_fer.model_files import resolve_landmarker
    from stream_fer.reading import MIRROR_BELOW, read_faces

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    lm_path = Path(resolve_landmarker(landmarker_path))
    info = ModelInfo.from_file(model_dir / META_FILENAME)  # the cache key needs the crop size, not the engine
    size, k, m = info.input_size, len(info.class_names), info.map_size
    mirror_below = MIRROR_BELOW if mirror_below is None else float(mirror_below)
    path = cache_path(split, model_dir, lm_path, size, mirror, mirror_below)
    if path.exists():
        return _load(path, split)
    engine = load_engine(model_dir, "onnxruntime", threads=1, mirror=mirror)
    faces = split_faces(split, lm_path, size)
    n = len(split)
    probs = np.zeros((n, k), np.float32)
    mirrored = np.zeros((n, k), np.float32)
    attention = np.zeros((n, m, m), np.float32)
    cams = np.zeros((n, k, m, m), np.float16)
    rows = np.flatnonzero(faces["found"])
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        crops = np.ascontiguousarray(faces["crops"][part])
        out, mirror_out = read_faces(engine, crops, mirror, mirror_below)  # as FrameAnalyzer.classify
        if mirror_out is not None:
            mirrored[part] = mirror_out
        probs[part], attention[part], cams[part] = out.probs, out.attention, out.cams
    extra = {"mirror_probs": mirrored} if mirror else {}
    _save(path, **faces, probs=probs, attention=attention, cams=cams, crop_size=np.int64(size), **extra)
    return _load(path, split)


def _load(path: Path, split: FerSplit) -> ProductPathOutputs:
    with np.load(path, allow_pickle=False) as z:
        if not np.array_equal(z["keys"], split.keys):
            raise ValueError(f"{path} does not belong to this split")
        return ProductPathOutputs(
            keys=z["keys"], labels=split.labels, found=z["found"], probs=z["probs"], attention=z["attention"],
            cams=z["cams"].astype(np.float32), crop_points=z["crop_points"], crops=z["crops"],
            blendshapes=z["blendshapes"],
            blendshape_names=tuple(str(s) for s in z[BLENDSHAPE_NAMES_KEY]), crop_size=int(z["crop_size"]),
            mirror_probs=z["mirror_probs"] if "mirror_probs" in z.files else None)


def true_class_maps(out: ProductPathOutputs) -> tuple[np.ndarray, np.ndarray]:
    """The true class's AU map on each crop (as training's evaluation draws it, at the crop size) and
    whether there is one (a face found, a non-neutral majority label)."""
    from stream_fer.face.au_maps import expression_map

    s = out.crop_size
    maps = np.zeros((len(out.keys), s, s), np.float32)
    valid = np.zeros(len(out.keys), dtype=bool)
    for i in np.flatnonzero(out.found & (out.labels >= 0)):
        au_map = expression_map(out.crop_points[i], s, CLASS_NAMES[out.labels[i]], s)
        if au_map is not None:
            maps[i], valid[i] = au_map, True
    return maps, valid


def product_path_metrics(out: ProductPathOutputs) -> dict:
    """train.evaluate's metrics over the images where the product found a face, plus the coverage."""
    from stream_fer.train.evaluate import compute_metrics

    maps, valid = true_class_maps(out)
    keep = out.found
    metrics = compute_metrics(out.labels[keep], out.probs[keep], out.attention[keep], out.cams[keep], maps[keep],
                              valid[keep])
    labelled = out.labels >= 0
    return {"path": "product", "faces_found": int(keep.sum()), "images": int(len(keep)),
            "labelled": int(labelled.sum()), "labelled_found": int((labelled & keep).sum()),
            "coverage": float((labelled & keep).sum() / max(1, labelled.sum())), **metrics}


def mirror_probs(out: ProductPathOutputs, model_dir: Path | None = None) -> np.ndarray:
    """(N, K) the engine's probabilities for each crop mirrored left-right (zeros where no face), as the
    analyzer computes them for the trust score: stored by run_split, or computed for a crop-only run."""
    if out.mirror_probs is not None:
        return out.mirror_probs
    from stream_fer.engines.pair import MirrorPair
    from stream_fer.engines.select import load_engine

    engine = load_engine(model_dir, "onnxruntime", threads=1)
    if isinstance(engine, MirrorPair):  # the network that reads the mirror images
        engine = engine.mirror
    probs = np.zeros_like(out.probs)
    rows = np.flatnonzero(out.found)
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        probs[part] = engine.infer(np.ascontiguousarray(out.crops[part][:, :, ::-1])).probs
    return probs
