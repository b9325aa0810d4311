"""FER+ : the FER2013 48x48 grayscale faces with Microsoft's 10 crowd votes per image.

Read straight from ferplus.tar.gz (or its extracted folder), decoded once into a compact .npz in the
training cache. Splits are the published ones: FER2013Train / FER2013Valid / FER2013Test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.face.classes import NUM_CLASSES
from stream_fer.train.paths import ferplus_source, train_cache

log = logging.getLogger(__name__)

SPLITS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
IMAGE_SIZE = 48
VOTE_COLUMNS = 10  # neutral .. fear (the 7 classes), contempt, unknown, not-a-face


@dataclass(frozen=True)
class FerSplit:
    name: str
    keys: np.ndarray  # (N,) str, "<split>/<file name>": the key of the landmark cache
    images: np.ndarray  # (N, 48, 48) uint8
    votes: np.ndarray  # (N, 10) int16

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labels(self) -> np.ndarray:
        return majority_labels(self.votes)

    @property
    def soft_targets(self) -> np.ndarray:
        return vote_distribution(self.votes)

    def subset(self, index) -> FerSplit:
        return FerSplit(self.name, self.keys[index], self.images[index], self.votes[index])


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The 7-class majority label: the unique top vote among the 7 classes, provided contempt, unknown
    and not-a-face got no more votes than it; -1 otherwise (ties, non-7-class majorities).
    This reproduces the published counts (train: neutral 9460 ... disgust 190, 26,980 in all)."""
    votes = np.asarray(votes, dtype=np.int64)
    seven = votes[:, :NUM_CLASSES]
    top = seven.max(axis=1)
    unique = (seven == top[:, None]).sum(axis=1) == 1
    valid = unique & (top >= votes[:, NUM_CLASSES:].max(axis=1)) & (top > 0)
    return np.where(valid, seven.argmax(axis=1), -1).astype(np.int64)


def vote_distribution(votes: np.ndarray) -> np.ndarray:
    """The crowd's distribution over the 7 classes (soft targets); uniform where no class got a vote."""
    v = np.asarray(votes, dtype=np.float32)[:, :NUM_CLASSES]
    total = v.sum(axis=1, keepdims=True)
    return np.where(total > 0, v / np.maximum(total, 1e-9), 1.0 / NUM_CLASSES).astype(np.float32)


def _parse_labels(text: str) -> dict[str, np.ndarray]:
    rows = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2 + VOTE_COLUMNS:
            continue
        rows[row[0]] = np.array([int(x) for x in row[2 : 2 + VOTE_COLUMNS]], dtype=np.int16)
    return rows


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("L"))
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"unexpected image size {arr.shape}")
    return arr


def _read_members(source: Path):
    """Yield (relative path, bytes) for label.csv and PNG files of every split."""
    wanted = tuple(f"data/{folder}/" for folder in SPLITS.values())
    if source.is_dir():
        base = source / "data" if (source / "data").is_dir() else source
        for folder in SPLITS.values():
            for path in sorted((base / folder).glob("*")):
                if path.suffix in (".png", ".csv"):
                    yield f"data/{folder}/{path.name}", path.read_bytes()
        return
    with tarfile.open(source, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.lstrip("./").startswith(wanted):
                f = tar.extractfile(member)
                if f is not None:
                    yield member.name.lstrip("./"), f.read()


def _decode_source(source: Path) -> dict[str, FerSplit]:
    labels: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    images: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    folder_to_split = {folder: split for split, folder in SPLITS.items()}
    from tqdm import tqdm

    for rel, data in tqdm(_read_members(source), desc="reading FER+", unit="file", mininterval=2):
        _, folder, name = rel.split("/", 2)
        split = folder_to_split[folder]
        if name == "label.csv":
            labels[split] = _parse_labels(data.decode("utf-8"))
        elif name.endswith(".png"):
            images[split][name] = _decode_png(data)
    splits = {}
    for split in SPLITS:
        names = sorted(n for n in images[split] if n in labels[split])
        if not names:
            raise StreamFerError(f"FER+ split {split} is empty in {source}")
        splits[split] = FerSplit(
            split,
            np.array([f"{split}/{n}" for n in names]),
            np.stack([images[split][n] for n in names]),
            np.stack([labels[split][n] for n in names]),
        )
    return splits


def _cache_path(source: Path) -> Path:
    stat = source.stat()
    tag = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return train_cache() / f"ferplus-{tag}.npz"


def load_ferplus(source: str | Path | None = None) -> dict[str, FerSplit]:
    """All three splits, decoded once and cached as .npz beside the other training caches."""
    src = Path(source) if source else ferplus_source()
    if not src.exists():
        raise StreamFerError(f"FER+ not found at {src} (set STREAM_FER_FERPLUS or pass --data)")
    cache = _cache_path(src)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {s: FerSplit(s, z[f"{s}_keys"], z[f"{s}_images"], z[f"{s}_votes"]) for s in SPLITS}
    splits = _decode_source(src)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.part.npz")  # two runs may decode at once
    np.savez(tmp, **{f"{s}_{field}": getattr(sp, field) for s, sp in splits.items()
                     for field in ("keys", "images", "votes")})
    tmp.replace(cache)
    return splits


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels[labels >= 0], minlength=NUM_CLASSES)
