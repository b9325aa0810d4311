"""Where training reads data and writes its caches; every path can be overridden."""

from __future__ import annotations

import os
from pathlib import Path

from stream_fer.paths import cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The development data folder: STREAM_FER_SHARED, else ../shared beside the repository."""
    return Path(os.environ.get("STREAM_FER_SHARED", REPO_ROOT.parent / "shared")).expanduser()


def ferplus_source() -> Path:
    """FER+ as ferplus.tar.gz or its extracted folder: STREAM_FER_FERPLUS, else shared/data/ferplus."""
    explicit = os.environ.get("STREAM_FER_FERPLUS")
    if explicit:
        return Path(explicit).expanduser()
    return shared_dir() / "data" / "ferplus" / "ferplus.tar.gz"


def train_cache() -> Path:
    path = cache_dir() / "train"
    path.mkdir(parents=True, exist_ok=True)
    return path
