"""A face read by two networks: one reads the aligned crop, a second, separately trained one reads its mirror image.

The product reads a face's crop and, where the crop alone is unsure, its mirror image too, and averages the two
(stream_fer.reading.read_faces). When a model folder D holds a second exported model in D/mirror/, that model
reads the mirror images instead of D's own network: the same CPU per face, but two networks whose errors differ
only in part (engines/default/MODEL_CARD.md, "Two networks, one reading": tried with the previous default as the
second network, better on validation, worse on test; the shipped default has no mirror/).

Where the mirror model is looked for, given the folder D the engine was asked for:

    D/mirror/                     (a folder with its own model.onnx, model.json, checkpoint.pt, int8/, fp16/)
    D/../mirror/<precision>/      when D is itself a precision sibling (D = X/int8 or X/fp16)

The mirror model runs on the backend chosen for D (its INT8 sibling for onnxruntime-int8, its FP16 one for
TensorRT, its checkpoint.pt for the torch backends), and must describe the same classes, input and maps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from stream_fer.engines.base import META_FILENAME, Engine, EngineOutput, ModelInfo
from stream_fer.errors import StreamFerError

MIRROR_SUBDIR = "mirror"
_PRECISION_SIBLINGS = ("int8", "fp16")


def mirror_model_dir(model_dir: Path) -> Path | None:
    """The folder of the model that reads model_dir's mirror images (see the module's docstring), or None."""
    model_dir = Path(model_dir)
    own = model_dir / MIRROR_SUBDIR
    if (own / META_FILENAME).is_file():
        return own
    if model_dir.name in _PRECISION_SIBLINGS:
        sibling = model_dir.parent / MIRROR_SUBDIR / model_dir.name
        if (sibling / META_FILENAME).is_file():
            return sibling
    return None


def check_compatible(crop: ModelInfo, mirror: ModelInfo, where: Path) -> None:
    """One clear error when the mirror model cannot be averaged with the crop model."""
    for field in ("input_size", "in_channels", "class_names", "map_size", "precision"):
        a, b = getattr(crop, field), getattr(mirror, field)
        if a != b:
            raise StreamFerError(f"the mirror model {where} does not match its crop model ({field}: {b!r} "
                                 f"against {a!r}); export both from checkpoints of the same architecture")


class MirrorPair:
    """An engine whose faces' mirror images are read by a second network. `infer` is the crop network alone
    (what any caller that is not reading a face with its mirror gets); read_faces uses both."""

    def __init__(self, crop: Engine, mirror: Engine, mirror_dir: Path):
        check_compatible(crop.info, mirror.info, mirror_dir)
        self.crop, self.mirror, self.mirror_dir = crop, mirror, Path(mirror_dir)
        self.name = crop.name
        self.info: ModelInfo = crop.info
        self.model_dir = getattr(crop, "model_dir", None)
        self.checkpoint = getattr(crop, "checkpoint", None)

    @property
    def mirror_checkpoint_sha256(self) -> str:
        return self.mirror.info.source_checkpoint_sha256

    def infer(self, faces) -> EngineOutput:
        return self.crop.infer(faces)


def pair_sha256(crop_sha256: str, mirror_sha256: str) -> str:
    """One hash for a pair's two exported models (what batch fingerprints and results files record as the
    model): a pair's outputs differ from its crop model's read with its own mirror."""
    return hashlib.sha256(f"{crop_sha256}+mirror:{mirror_sha256}".encode()).hexdigest()
