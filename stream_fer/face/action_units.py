"""Action Units as data: FACS number and name, where each AU sits on the MediaPipe 478-point mesh, and
which MediaPipe blendshapes measure it; plus the expression -> AU codebook.

A region is a filled ellipse. Its centre is the mean of some mesh vertices ("anchors") moved by an
offset; offsets and semi-axes are in units of the inter-ocular distance (IOD, eye centre to eye
centre) along the face's own axes (x: subject's right eye -> left eye, y: down the face), so a region
scales and rotates with the face and never depends on pixel size.

Bilateral AUs list both sides explicitly. Offsets and angles are written for the subject's right side
(image left on a frontal, unmirrored face); the left side mirrors them.

Sides are the subject's: MediaPipe vertex 33 (right eye, outer corner) is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class EllipseRegion:
    anchors: tuple[int, ...]  # mesh vertex ids; their mean is the centre before the offset
    semi_axes: tuple[float, float]  # (along face x, along face y), in IOD units
    offset: tuple[float, float] = (0.0, 0.0)  # (dx, dy) in IOD units, face axes
    angle_deg: float = 0.0  # rotation from the face x axis
    mirrored: bool = False  # True for the subject's left side: dx and angle are mirrored


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str  # FACS name
    regions: tuple[EllipseRegion, ...]
    blendshapes: tuple[str, ...] = field(default=())  # MediaPipe blendshapes that measure this AU

    @property
    def code(self) -> str:
        return f"AU{self.number}"


def _pair(right: tuple[int, ...], left: tuple[int, ...], semi_axes, offset=(0.0, 0.0), angle_deg=0.0):
    return (
        EllipseRegion(right, semi_axes, offset, angle_deg, mirrored=False),
        EllipseRegion(left, semi_axes, offset, angle_deg, mirrored=True),
    )


def _centre(anchors: tuple[int, ...], semi_axes, offset=(0.0, 0.0), angle_deg=0.0):
    return (EllipseRegion(anchors, semi_axes, offset, angle_deg),)


_MOUTH_CORNER_R, _MOUTH_CORNER_L = (61,), (291,)

ACTION_UNITS: dict[int, ActionUnit] = {
    au.number: au
    for au in (
        # Brows and forehead. Frontalis wrinkles the forehead just above the brow.
        ActionUnit(1, "inner brow raiser",
                   _pair((107, 66, 55, 65), (336, 296, 285, 295), (0.18, 0.14), (0.0, -0.12)),
                   ("browInnerUp",)),
        ActionUnit(2, "outer brow raiser",
                   _pair((70, 63, 46, 53), (300, 293, 276, 283), (0.20, 0.14), (0.0, -0.12)),
                   ("browOuterUpRight", "browOuterUpLeft")),
        ActionUnit(4, "brow lowerer",  # corrugator and procerus: between and over the inner brows
                   _centre((9, 107, 336, 55, 285), (0.40, 0.16)),
                   ("browDownRight", "browDownLeft")),
        # Eyes.
        ActionUnit(5, "upper lid raiser",
                   _pair((159, 158, 160, 157, 161), (386, 385, 387, 384, 388), (0.22, 0.09), (0.0, -0.04)),
                   ("eyeWideRight", "eyeWideLeft")),
        ActionUnit(6, "cheek raiser",  # orbicularis oculi, orbital part: the upper cheek below the eye
                   _pair((111, 117, 118, 50), (340, 346, 347, 280), (0.24, 0.15), (0.18, -0.04)),
                   ("cheekSquintRight", "cheekSquintLeft")),
        ActionUnit(7, "lid tightener",
                   _pair((145, 144, 153, 163, 154), (374, 373, 380, 390, 381), (0.22, 0.09), (0.0, 0.03)),
                   ("eyeSquintRight", "eyeSquintLeft")),
        # Nose and upper lip.
        ActionUnit(9, "nose wrinkler",
                   _centre((197, 195, 5, 4), (0.30, 0.24)),
                   ("noseSneerRight", "noseSneerLeft")),
        ActionUnit(10, "upper lip raiser",  # FACS: the upper lip (the paper's figure says "upper lid")
                   _centre((0, 37, 267, 164), (0.42, 0.14)),
                   ("mouthUpperUpRight", "mouthUpperUpLeft")),
        # Mouth corners.
        ActionUnit(12, "lip corner puller",  # zygomaticus major pulls the corner out and up
                   _pair(_MOUTH_CORNER_R, _MOUTH_CORNER_L, (0.22, 0.14), (-0.08, -0.06), -30.0),
                   ("mouthSmileRight", "mouthSmileLeft")),
        ActionUnit(15, "lip corner depressor",
                   _pair(_MOUTH_CORNER_R, _MOUTH_CORNER_L, (0.13, 0.17), (-0.05, 0.12)),
                   ("mouthFrownRight", "mouthFrownLeft")),
        ActionUnit(20, "lip stretcher",
                   _pair(_MOUTH_CORNER_R, _MOUTH_CORNER_L, (0.17, 0.12), (-0.12, 0.06)),
                   ("mouthStretchRight", "mouthStretchLeft")),
        # Lips, chin and jaw.
        ActionUnit(16, "lower lip depressor",
                   _centre((17, 84, 314), (0.30, 0.12), (0.0, 0.04)),
                   ("mouthLowerDownRight", "mouthLowerDownLeft")),
        ActionUnit(17, "chin raiser",
                   _centre((200, 199, 175), (0.30, 0.16)),
                   ("mouthShrugLower", "mouthShrugUpper")),
        ActionUnit(23, "lip tightener",
                   _centre((0, 17, 13, 14, 61, 291), (0.45, 0.22)),
                   ("mouthRollUpper", "mouthRollLower")),
        ActionUnit(24, "lip pressor",
                   _centre((13, 14), (0.40, 0.12)),
                   ("mouthPressRight", "mouthPressLeft")),
        ActionUnit(25, "lips part",
                   _centre((13, 14), (0.30, 0.10)),
                   ("jawOpen",)),
        ActionUnit(26, "jaw drop",  # drawn where the jaw's drop shows on a frontal face: below the mouth
                   _centre((17, 152, 200), (0.45, 0.30)),
                   ("jawOpen",)),
        ActionUnit(27, "mouth stretch",
                   _centre((13, 14), (0.32, 0.30)),
                   ("jawOpen", "mouthStretchRight", "mouthStretchLeft")),
    )
}

# The paper's Fig. 2 codebook (FACS numbering). Neutral has no AUs and therefore no map.
EXPRESSION_AUS: dict[str, tuple[int, ...]] = {
    "neutral": (),
    "happiness": (6, 12, 25),
    "surprise": (1, 2, 5, 26, 27),
    "sadness": (1, 4, 6, 15, 17),
    "anger": (4, 5, 7, 10, 17, 23, 24, 25, 26),
    "disgust": (9, 10, 16, 17, 25, 26),
    "fear": (1, 2, 4, 5, 20, 25, 26, 27),
}


def aus_for(expression: str) -> tuple[ActionUnit, ...]:
    """The Action Units of an expression, in codebook order."""
    try:
        numbers = EXPRESSION_AUS[expression]
    except KeyError:
        raise ValueError(f"unknown expression {expression!r}") from None
    return tuple(ACTION_UNITS[n] for n in numbers)


@lru_cache(maxsize=64)
def blendshapes_for(expression: str) -> tuple[str, ...]:
    """MediaPipe blendshape names that measure the AUs of an expression (deduplicated, in order; cached:
    every row and every trust score asks)."""
    seen: dict[str, None] = {}
    for au in aus_for(expression):
        for name in au.blendshapes:
            seen.setdefault(name, None)
    return tuple(seen)
