"""Where a batch writes: per video, under the output folder at the video's relative path,

    DIR/session1/p01.parquet        per-frame rows (always: the combined dataset is built from them)
    DIR/session1/p01.csv, .jsonl    the same rows, on request
    DIR/session1/p01.summary.json   Results.summary()
    DIR/session1/p01.annotated.mp4  the annotated video, on request (--video)
    DIR/session1/p01.done.json      the done-marker, written last; or p01.failed.json for a failed video

and for the whole batch DIR/batch.csv (one row per video), DIR/batch.parquet (every video's rows with a
`video` column) and DIR/batch.log (the tracebacks of failed videos). Two videos whose names differ only in
the suffix (p01.mp4, p01.mov) keep the suffix in their output names (p01.mp4.parquet), and so does a video
at the root whose outputs would take the batch's own file names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stream_fer.batch.inputs import ANNOTATED_SUFFIX, VideoInput

TABLE_NAME = "batch.csv"
DATASET_NAME = "batch.parquet"
LOG_NAME = "batch.log"
_RESERVED_BASES = frozenset({"batch"})  # at the root: batch.csv, batch.parquet, batch.log are the batch's own
STAGING_PREFIX = "."  # staging folders are hidden: `.p01.partial-<random>`
STAGING_MARK = ".partial-"


@dataclass(frozen=True)
class VideoOutputs:
    """Every final path of one video's outputs (those not asked for are None)."""

    base: Path  # DIR/session1/p01 (no suffix)
    parquet: Path
    summary: Path
    done: Path
    failed: Path
    csv: Path | None = None
    jsonl: Path | None = None
    video: Path | None = None

    @property
    def data_files(self) -> dict[str, Path]:
        """Output kind -> final path, for the outputs this batch writes (markers excluded)."""
        files = {"parquet": self.parquet, "summary": self.summary, "csv": self.csv, "jsonl": self.jsonl,
                 "video": self.video}
        return {kind: path for kind, path in files.items() if path is not None}

    @property
    def folder(self) -> Path:
        return self.base.parent

    @property
    def staging_glob(self) -> str:
        """The pattern of this video's staging folders (in its output folder)."""
        return f"{STAGING_PREFIX}{self.base.name}{STAGING_MARK}*"


def output_bases(videos: Sequence[VideoInput]) -> dict[str, PurePosixPath]:
    """Video name -> output base name relative to the output folder: the name without its suffix, unless
    that is ambiguous (see the module docstring)."""
    def short(name: str) -> PurePosixPath:
        return PurePosixPath(name).with_suffix("")

    counts = Counter(short(v.name) for v in videos)
    bases = {}
    for v in videos:
        base = short(v.name)
        if counts[base] > 1 or (len(base.parts) == 1 and base.name in _RESERVED_BASES):
            base = PurePosixPath(v.name)
        bases[v.name] = base
    return bases


def video_outputs(out_dir: Path, base: PurePosixPath, *, csv: bool = False, jsonl: bool = False,
                  video: bool = False) -> VideoOutputs:
    b = Path(out_dir, *base.parts)

    def with_ext(ext: str) -> Path:
        return b.with_name(b.name + ext)

    return VideoOutputs(base=b, parquet=with_ext(".parquet"), summary=with_ext(".summary.json"),
                        done=with_ext(".done.json"), failed=with_ext(".failed.json"),
                        csv=with_ext(".csv") if csv else None, jsonl=with_ext(".jsonl") if jsonl else None,
                        video=with_ext(ANNOTATED_SUFFIX) if video else None)
