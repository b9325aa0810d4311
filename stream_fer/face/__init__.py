"""The face vocabulary: class names, the expression -> AU codebook, AU regions on the MediaPipe mesh,
AU map rendering and the alignment template. Plain numpy; imported by training and the run time alike."""

from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS, ActionUnit, EllipseRegion, aus_for
from stream_fer.face.classes import CLASS_NAMES, NUM_CLASSES, class_index

_FROM_AU_MAPS = ("expression_map", "region_masks")


def __getattr__(name: str):
    """The AU map functions on first use: they need numpy, and `stream-fer --help` (which imports the class
    names from here) should not wait for it."""
    if name in _FROM_AU_MAPS:
        from stream_fer.face import au_maps

        return getattr(au_maps, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
