"""Exactly-once bookkeeping: every output is written under a temporary name and renamed into place, and a
video's done-marker is written last. The marker holds the video's fingerprint (input size and mtime, the
model's hash, the settings, the stream-fer version): a rerun skips a video whose marker matches the
fingerprint it would have now, and whose outputs are all there. A failed video gets a failed-marker with
the same fingerprint and its one-line error instead, so a rerun does not retry it unless asked."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from stream_fer.batch.layout import VideoOutputs
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

MARKER_FORMAT = 1


class VideoState(str, Enum):
    DONE = "done"  # marker matches: nothing to do
    FAILED = "failed"  # failed-marker matches: not retried unless --retry-failed
    TODO = "todo"  # never started, half done, or done with other inputs/settings: (re)done


# --------------------------------------------------------------------------------------- atomic files


def file_mode() -> int:
    """The mode an ordinary new file gets here (0666 less the umask): temporary files are created 0600, and
    a batch's outputs on a shared filesystem must stay readable as any other file would be."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and one rename: a reader sees the
    old file or the whole new one, never part of it (also after a crash: the data is synced first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            log.debug("could not remove %s: %s", path, exc)


# ---------------------------------------------------------------------------------------- fingerprint


def model_sha256(model_dir: str | os.PathLike | None) -> str:
    """The sha256 of the exported model a batch runs (recorded in its model.json at export time; the
    file's own hash where that is missing). One clear error when the folder holds no model."""
    from stream_fer.engines import default_model_dir
    from stream_fer.engines.base import model_files
    from stream_fer.engines.pair import mirror_model_dir, pair_sha256
    from stream_fer.model_files import file_sha256

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    onnx_path, info = model_files(model_dir)
    sha = info.onnx_sha256 or file_sha256(onnx_path)
    mirror_dir = mirror_model_dir(model_dir)  # a second network reads the mirror images (engines/pair.py)
    return pair_sha256(sha, model_sha256(mirror_dir)) if mirror_dir is not None else sha


@dataclass(frozen=True)
class Fingerprint:
    """What a video's outputs depend on. Two equal fingerprints mean the outputs would be the same."""

    input_size: int
    input_mtime_ns: int
    model_sha256: str
    landmarker_sha256: str
    settings: tuple[tuple[str, object], ...]  # sorted (name, value) pairs
    stream_fer_version: str

    @classmethod
    def of(cls, input_path: Path, model_hash: str, settings: dict) -> Fingerprint:
        from stream_fer import __version__
        from stream_fer.model_files import LANDMARKER_SHA256

        try:
            st = Path(input_path).stat()
        except OSError as exc:
            raise StreamFerError(f"cannot read {input_path}: {exc.strerror}") from None
        return cls(st.st_size, st.st_mtime_ns, model_hash, LANDMARKER_SHA256, tuple(sorted(settings.items())),
                   __version__)

    def to_dict(self) -> dict:
        return {"input_size": self.input_size, "input_mtime_ns": self.input_mtime_ns,
                "model_sha256": self.model_sha256, "landmarker_sha256": self.landmarker_sha256,
                "settings": dict(self.settings), "stream_fer_version": self.stream_fer_version}


# -------------------------------------------------------------------------------------------- markers


def write_marker(path: Path, *, status: str, video: str, input_path: Path, fingerprint: Fingerprint,
                 result: dict, outputs: VideoOutputs | None = None, error: str = "") -> None:
    body = {"format": MARKER_FORMAT, "status": status, "video": video, "input": str(input_path),
            "fingerprint": fingerprint.to_dict(), "result": result, "error": error}
    if outputs is not None:
        body["outputs"] = {kind: p.name for kind, p in outputs.data_files.items()}
    write_atomic(path, json.dumps(body, indent=1, default=str) + "\n")


def read_marker(path: Path) -> dict | None:
    """A marker's content, or None when there is none or it is unreadable (treated as not done)."""
    try:
        body = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring an unreadable marker %s: %s", path, exc)
        return None
    return body if isinstance(body, dict) and body.get("format") == MARKER_FORMAT else None


def _matches(marker: dict | None, fingerprint: Fingerprint) -> bool:
    # through JSON both ways, so tuples and lists, ints and floats compare as they were written
    return marker is not None and marker.get("fingerprint") == json.loads(json.dumps(fingerprint.to_dict()))


def video_state(outputs: VideoOutputs, fingerprint: Fingerprint) -> tuple[VideoState, dict | None]:
    """Where one video stands, and the marker that says so (None for TODO)."""
    done = read_marker(outputs.done)
    if _matches(done, fingerprint) and done.get("status") == "done" \
            and all(p.is_file() for p in outputs.data_files.values()):
        return VideoState.DONE, done
    failed = read_marker(outputs.failed)
    if _matches(failed, fingerprint) and failed.get("status") == "failed":
        return VideoState.FAILED, failed
    return VideoState.TODO, None
