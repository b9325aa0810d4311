"""The face vocabulary: class names, the expression -> AU codebook, AU regions on the MediaPipe mesh,
AU map rendering and the alignment template. Plain numpy; imported by training and the run time alike."""

from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS, ActionUnit, EllipseRegion, aus_for
from stream_fer.face.au_maps import expression_map, region_masks
from stream_fer.face.classes import CLASS_NAMES, NUM_CLASSES, class_index

__all__ = [
    "ACTION_UNITS",
    "CLASS_NAMES",
    "EXPRESSION_AUS",
    "NUM_CLASSES",
    "ActionUnit",
    "EllipseRegion",
    "aus_for",
    "class_index",
    "expression_map",
    "region_masks",
]
