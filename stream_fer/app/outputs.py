"""Image outputs of one response, each in a file of its own.

Gradio saves an image returned as an array under a folder named by a hash of its bytes, writing the file
in place. Two requests with the same input give the same picture, so the second rewrites the file while
the first response is still being sent (the client sees the body cut short). Writing each response's
picture to a fresh name inside Gradio's cache folder, and returning that path, makes Gradio serve it as
it is (a file already in its cache is neither copied nor rewritten) and delete it with the rest of its
cache (delete_cache).
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import numpy as np

from stream_fer.app.settings import upload_root

OUTPUT_FOLDER = "stream-fer"  # under Gradio's cache folder


def response_image(rgb: np.ndarray | None, name: str = "image", fmt: str = "png") -> str | None:
    """Write an RGB array to a new file in Gradio's cache folder (written whole, then renamed into place);
    its path. None stays None (the component is cleared)."""
    if rgb is None:
        return None
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    else:
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=3)
    folder = Path(upload_root()) / OUTPUT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{uuid.uuid4().hex[:16]}.{'jpg' if fmt == 'jpeg' else 'png'}"
    part = folder / f".{path.name}.part"
    part.write_bytes(buf.getvalue())
    os.replace(part, path)
    return str(path)
