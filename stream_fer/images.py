"""Reading and writing still images with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_fer.errors import StreamFerError


def read_rgb(path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise StreamFerError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StreamFerError(f"not a readable image: {p} ({type(exc).__name__})") from None


def write_rgb(path, rgb: np.ndarray) -> Path:
    from PIL import Image

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        Image.fromarray(rgb).save(tmp, format=(p.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
        tmp.replace(p)
    except OSError as exc:
        raise StreamFerError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p
