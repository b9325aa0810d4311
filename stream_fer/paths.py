"""Where stream-fer keeps files of its own: a per-user cache, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """STREAM_FER_CACHE, else $XDG_CACHE_HOME/stream-fer, else ~/.cache/stream-fer."""
    explicit = os.environ.get("STREAM_FER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "stream-fer"
