"""How the engine reads a face: the aligned crop, and its mirror image where the crop alone is unsure.

Every consumer of face readings uses read_faces (the analyzer, the product-path evaluation, the trust fit), so
the product and its measurements read a face the same way. Imports numpy only (the engine interface when a
face is read), so that stream_fer.api can name the threshold without loading more at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stream_fer.errors import StreamFerError

if TYPE_CHECKING:
    from stream_fer.engines.base import EngineOutput


def average_readings(crop: EngineOutput, mirror: EngineOutput) -> EngineOutput:
    """Each face's reading of its crop and of its mirror image averaged: the probabilities, attention and CAMs,
    the mirror's maps mirrored back into the crop's frame (the test-time flip of the model card)."""
    from stream_fer.engines.base import EngineOutput

    return EngineOutput((crop.probs + mirror.probs) / 2,
                        (crop.attention + mirror.attention[:, :, ::-1]) / 2,
                        (crop.cams + mirror.cams[:, :, :, ::-1]) / 2)


def average_with_mirror(out: EngineOutput, n: int) -> EngineOutput:
    """The first n faces of a batch whose last n are their mirror images, each read with its mirror
    (average_readings; FER+ validation through the product path 85.85% -> 86.63% for the model of session 6)."""
    from stream_fer.engines.base import EngineOutput

    return average_readings(EngineOutput(out.probs[:n], out.attention[:n], out.cams[:n]),
                            EngineOutput(out.probs[n:], out.attention[n:], out.cams[n:]))


# A face's mirror image is read only when its crop alone gives the top label a probability below this. Chosen on
# FER+ validation (product path, INT8 and FP32): every label is then the one reading every mirror gives (0 of
# 3,307 faces differ, as at 0.6; at 0.5, 25-31 differ) while about a third of the faces (37%) need the second
# pass (engines/default/MODEL_CARD.md, "Reading the mirror only where the crop is unsure").
MIRROR_BELOW = 0.7


def check_mirror_below(value) -> float:
    """The mirror threshold as a float in (0, 1] (1: every face's mirror image is read), or one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise StreamFerError(f"mirror_below must be a probability in (0, 1] (1: read every mirror image), "
                             f"not {value!r}")
    return float(value)


def read_faces(engine, crops: np.ndarray, mirror: bool = True,
               mirror_below: float = MIRROR_BELOW) -> tuple[EngineOutput, np.ndarray | None]:
    """Aligned crops (N, S, S) read the way the product reads a face: (the shown outputs, the mirror images' own
    probabilities (N, K), NaN rows for the faces whose mirror image was not read; None when mirror=False).

    Each crop is read; the faces whose top probability is below `mirror_below` (1: every face) are read again as
    their mirror images and the two readings averaged (average_readings): by the same network or, for an engine
    whose folder has a mirror model (engines/pair.py), by that second network. A face its crop reads confidently
    keeps that reading (its label is the averaged one on FER+ validation: MIRROR_BELOW). mirror=False: the crop
    alone for every face."""
    from stream_fer.engines.base import EngineOutput
    from stream_fer.engines.pair import MirrorPair

    crop_engine, mirror_engine = (engine.crop, engine.mirror) if isinstance(engine, MirrorPair) else (engine, engine)
    n = len(crops)
    if not mirror:
        return crop_engine.infer(crops), None
    if mirror_below >= 1.0 and mirror_engine is crop_engine:  # every face: one call of 2N
        both = crop_engine.infer(np.concatenate([crops, crops[:, :, ::-1]]))
        return average_with_mirror(both, n), both.probs[n:]
    out = crop_engine.infer(crops)
    need = np.ones(n, dtype=bool) if mirror_below >= 1.0 else out.probs.max(axis=1) < mirror_below
    mirror_probs = np.full(out.probs.shape, np.nan, dtype=np.float32)
    if not need.any():
        return out, mirror_probs
    again = mirror_engine.infer(np.ascontiguousarray(crops[need][:, :, ::-1]))
    mean = average_readings(EngineOutput(out.probs[need], out.attention[need], out.cams[need]), again)
    probs, attention, cams = out.probs.copy(), out.attention.copy(), out.cams.copy()
    probs[need], attention[need], cams[need] = mean.probs, mean.attention, mean.cams
    mirror_probs[need] = again.probs
    return EngineOutput(probs, attention, cams), mirror_probs


def mirror_row(mirror_probs: np.ndarray | None, i: int) -> np.ndarray | None:
    """Face i's mirror-image probabilities from read_faces' second output, or None where its mirror image was not
    read (a NaN row, or no mirror at all)."""
    if mirror_probs is None or np.isnan(mirror_probs[i, 0]):
        return None
    return np.asarray(mirror_probs[i], np.float32)
