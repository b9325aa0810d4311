"""The seven expression classes, in FER+ vote-column order."""

CLASS_NAMES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
NUM_CLASSES = len(CLASS_NAMES)


def class_index(name: str) -> int:
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown expression {name!r}; expected one of {', '.join(CLASS_NAMES)}") from None
