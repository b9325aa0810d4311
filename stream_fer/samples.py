"""The sample clip shipped inside the package, so a machine with nothing but stream-fer can run the main job
(`stream-fer demo`) and the tests that need a real face.

stream_fer/data/sample.mp4: 4 s (96 frames, 640x360, 23.976 fps, H.264 + AAC stereo) cut from
WolfgangLanger_Pexels.mp4, mirrored and re-encoded (docs/make_sample_clip.py); one woman, a hand at her mouth
(neutral), then a smile, then a laugh. Credit in stream_fer/data/SAMPLE_CREDIT.txt.
"""

from __future__ import annotations

from pathlib import Path

from stream_fer.errors import StreamFerError

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_VIDEO = DATA_DIR / "sample.mp4"
SAMPLE_FRAMES = 96
SAMPLE_CREDIT = ("Video by Wolfgang Langer from Pexels (https://www.pexels.com/@wolfgang-langer-1415383), "
                 "cut, mirrored and re-encoded")


def sample_video() -> Path:
    """The shipped sample clip; one StreamFerError when an install lost it."""
    if not SAMPLE_VIDEO.is_file():
        raise StreamFerError(f"the sample clip is missing from this installation: {SAMPLE_VIDEO} "
                             "(reinstall stream-fer)")
    return SAMPLE_VIDEO
