"""Which videos a batch covers: the INPUT arguments (video files, folders searched recursively, glob
patterns, manifests) expanded into one sorted list, each video named by its path relative to the inputs'
common root, and `--shard K/N`'s deterministic slice of that list."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stream_fer.errors import StreamFerError

# What a folder search picks up. A file named explicitly (or in a manifest) is taken whatever its suffix.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".mts", ".m2ts", ".3gp", ".ogv"})
MANIFEST_SUFFIXES = frozenset({".txt", ".csv", ".lst", ".list"})
MANIFEST_PATH_COLUMN = "path"
ANNOTATED_SUFFIX = ".annotated.mp4"  # a batch's annotated videos (layout.py)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class VideoInput:
    """One video of the batch: where it is, and its name (relative to the common root, POSIX style)."""

    path: Path  # absolute
    name: str  # e.g. "session1/p01.mp4"


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count`: every count-th video, starting at the index-th."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise StreamFerError(f"--shard wants K/N (for example 2/8), not {text!r}") from None
        if n < 1 or not 1 <= k <= n:
            raise StreamFerError(f"--shard {text}: K must be between 1 and N")
        return cls(k, n)

    def select(self, videos: Sequence[VideoInput]) -> list[VideoInput]:
        # Round robin rather than contiguous blocks: neighbouring files (one long session's parts) spread
        # over the shards, so the shards' run times even out.
        return [v for i, v in enumerate(videos) if i % self.count == self.index - 1]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def discover(inputs: Sequence[str], exclude: Path | None = None) -> list[VideoInput]:
    """Every video the INPUT arguments name, once each, sorted by name. `exclude` is a folder whose
    contents a folder search skips (the batch's own output folder, which may lie inside an input folder).
    An argument that names nothing is an error: a typo must not silently shrink a batch."""
    if not inputs:
        raise StreamFerError("no inputs: give video files, folders, glob patterns or a manifest")
    exclude_abs = _absolute(exclude) if exclude is not None else None
    found: dict[Path, Path] = {}  # resolved -> as given (absolute, symlinks kept so names follow the user's tree)
    for arg in inputs:
        for path in _expand(arg, exclude_abs):
            found.setdefault(path.resolve(), path)
    if not found:
        raise StreamFerError(f"no video files found in {', '.join(inputs)}")
    paths = list(found.values())
    root = common_root(paths)
    videos = [VideoInput(p, p.relative_to(root).as_posix()) for p in paths]
    return sorted(videos, key=lambda v: v.name)


def common_root(paths: Iterable[Path]) -> Path:
    """The deepest folder that holds every path (the parent of a single file)."""
    parents = [str(p.parent) for p in paths]
    return Path(os.path.commonpath(parents))


def _absolute(path: Path | str) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def _expand(arg: str, exclude: Path | None) -> list[Path]:
    path = Path(arg)
    if path.is_dir():
        videos = _search_folder(_absolute(path), exclude)
        if not videos:
            raise StreamFerError(f"no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in the folder {arg}")
        return videos
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return read_manifest(path)
        return [_absolute(path)]
    if _GLOB_CHARS & set(arg):
        matches = sorted(glob.glob(arg, recursive=True))
        videos: list[Path] = []
        for match in matches:
            m = Path(match)
            if m.is_dir():
                videos.extend(_search_folder(_absolute(m), exclude))
            elif m.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(_absolute(m))
        if not videos:
            raise StreamFerError(f"no video files match {arg}")
        return videos
    raise StreamFerError(f"input not found: {arg}")


def _search_folder(folder: Path, exclude: Path | None) -> list[Path]:
    videos = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        # hidden folders (.git, a batch's .partial staging folders) and the output folder are not inputs
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d) != exclude)
        # an output folder that is the searched folder (or above it) holds the outputs beside the inputs:
        # its annotated videos are not inputs either
        in_outputs = exclude is not None and (here == exclude or exclude in here.parents)
        videos.extend(here / f for f in sorted(filenames)
                      if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES
                      and not (in_outputs and f.endswith(ANNOTATED_SUFFIX)))
    return videos


def read_manifest(path: Path) -> list[Path]:
    """A manifest: a CSV with a `path` column, or a text file with one path per line (blank lines and
    lines starting with # are skipped). Relative paths are relative to the manifest's folder. Every entry
    must exist."""
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StreamFerError(f"cannot read the manifest {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if MANIFEST_PATH_COLUMN not in (reader.fieldnames or []):
            raise StreamFerError(f"the manifest {path} has no {MANIFEST_PATH_COLUMN!r} column "
                                 f"(columns: {', '.join(reader.fieldnames or []) or 'none'})")
        entries = [(row[MANIFEST_PATH_COLUMN] or "").strip() for row in reader]
    else:
        entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise StreamFerError(f"the manifest {path} lists no videos")
    paths = [_absolute(base / Path(e).expanduser()) for e in entries]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise StreamFerError(f"the manifest {path} names a file that does not exist: {missing[0]}{more}")
    return paths
