"""Where results go: an annotated video (or image), and per-frame rows as CSV or JSON Lines.

Every sink opens its file when it is built, so an unwritable path fails with one StreamFerError before any
frame is processed, and every sink is closed in a `finally`, so an interrupted run leaves files that are
complete up to the last processed frame: the video is a properly finalised, playable container and the
row files are flushed regularly.

A sink has one method for data, `write(frame, result, annotated)`, and `close()`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.frames import Frame, FrameResult
from stream_fer.sources import VideoInfo

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".m4v"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
DEFAULT_TIME_BASE = Fraction(1, 90000)


class Sink(Protocol):
    path: Path

    def write(self, frame: Frame, result: FrameResult, annotated: np.ndarray) -> None: ...

    def close(self) -> None: ...


def check_writable(path: str | Path) -> Path:
    """The path, after proving a file can be created there; otherwise one StreamFerError.
    A file this check creates is removed again."""
    p = Path(path)
    if p.is_dir():
        raise StreamFerError(f"cannot write {p}: it is a directory")
    existed = p.exists()
    if not p.parent.is_dir():
        if p.parent.exists():
            raise StreamFerError(f"cannot write {p}: {p.parent} is not a directory")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StreamFerError(f"cannot write {p}: cannot create {p.parent} ({exc.strerror or exc})") from None
    try:
        with open(p, "ab"):
            pass
    except OSError as exc:
        raise StreamFerError(f"cannot write {p}: {exc.strerror or exc}") from None
    if not existed:
        try:
            p.unlink()
        except OSError:
            pass
    return p


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _cell(value: Any) -> Any:
    """A CSV cell: scalars as they are (floats rounded to 6 places), None as empty, containers as JSON."""
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact form: never loses digits (a timestamp of an hour-long video)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _cells(values: list) -> list:
    """The CSV cells of one row, as _cell gives them, in place. The plain values a row mostly holds (str, int,
    finite float, None) are what the csv writer writes itself ("" for None, repr for a float), so only the
    others go through _cell: 76 cells per face row, about 10 x cheaper than _cell on every one."""
    for i, v in enumerate(values):
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                values[i] = ""
        elif not (t is str or t is int or v is None):
            values[i] = _cell(v)
    return values


RowsOf = Callable[[FrameResult], list[dict]]


def _default_rows(result: FrameResult) -> list[dict]:
    from stream_fer.records import to_row

    return to_row(result)


class _RowSink:
    """Shared by the CSV and JSONL sinks: opens at once, flushes at least every `flush_every` seconds."""

    wants_annotated = False  # rows only: with no picture sink beside it, the pipeline skips rendering

    def __init__(self, path: str | Path, rows_of: RowsOf | None = None, flush_every: float = 1.0) -> None:
        self.path = check_writable(path)
        self._rows_of = rows_of or _default_rows
        self._flush_every = flush_every
        self._last_flush = time.monotonic()
        self.rows = 0
        try:
            self._file = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as exc:
            raise StreamFerError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, frame: Frame, result: FrameResult, annotated: np.ndarray | None = None) -> None:
        for row in self._rows_of(result):
            self._write_row(row)
            self.rows += 1
        now = time.monotonic()
        if now - self._last_flush >= self._flush_every:
            self._file.flush()
            self._last_flush = now

    def _write_row(self, row: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class CsvSink(_RowSink):
    """One row per face per frame (one row with empty face fields for a frame without faces). The header is
    fixed when the file opens, from the model's vocabulary, not from the first row; keys a row has beyond
    it are reported once and left out."""

    def __init__(self, path: str | Path, columns: Sequence[str], rows_of: RowsOf | None = None,
                 flush_every: float = 1.0) -> None:
        super().__init__(path, rows_of, flush_every)
        self.columns = list(columns)
        self._known = set(self.columns)
        self._warned: set[str] = set()
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.columns)
        self._file.flush()

    def _write_row(self, row: dict) -> None:
        extra = set(row) - self._known - self._warned
        if extra:
            log.warning("%s: columns not in the header are left out: %s", self.path.name, ", ".join(sorted(extra)))
            self._warned |= extra
        self._writer.writerow(_cells([row.get(c) for c in self.columns]))


class JsonlSink(_RowSink):
    """One JSON object per face per frame, one per line."""

    def _write_row(self, row: dict) -> None:
        self._file.write(json.dumps(_jsonable(row), separators=(",", ":"), allow_nan=False) + "\n")


class ImageSink:
    """The annotated picture of a still-image input."""

    def __init__(self, path: str | Path) -> None:
        self.path = check_writable(path)
        self.frames = 0

    def write(self, frame: Frame, result: FrameResult, annotated: np.ndarray) -> None:
        from stream_fer.images import write_rgb

        write_rgb(self.path, annotated)
        self.frames += 1

    def close(self) -> None:
        pass


# err_detect=explode: a packet that a careful decoder rejects is left out of the output, so the written audio
# decodes cleanly end to end even where the input's is damaged
_CHECKING_DECODER = {"err_detect": "explode"}
AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class _AudioTrack:
    """The input file's first audio stream, written into the output interleaved with the video: audio up to
    the time of the last written video frame goes in as the video advances.

    Every input packet is decoded first, and one that does not decode is left out (counted in `skipped`,
    reported once). mode "copy" remuxes the packets that decode, unchanged; mode "aac" (for audio the output
    container cannot hold, e.g. PCM going to MP4) re-encodes the decoded samples as AAC at their own times."""

    def __init__(self, source_path: Path, output, mode: str = "copy") -> None:
        import av

        self._input = av.open(str(source_path), mode="r", metadata_errors="ignore")
        try:
            in_stream = self._input.streams.audio[0]
            in_stream.codec_context.options = dict(_CHECKING_DECODER)
            self.source_codec = in_stream.codec_context.name
            self.mode = mode
            if mode == "copy":
                _check_copyable(source_path, output.format.name)
                self.stream = output.add_stream_from_template(in_stream)
            else:
                ctx = in_stream.codec_context
                rate = ctx.sample_rate if ctx.sample_rate in AAC_RATES else 48000
                # by channel count: a PCM track often has no named layout ("2 channels"), which AAC refuses
                layout = AAC_LAYOUTS.get(ctx.channels, "stereo")
                self.stream = output.add_stream("aac", rate=rate, layout=layout, format="fltp")
                self.stream.codec_context.time_base = Fraction(1, rate)
            self.codec = self.stream.codec_context.name
        except BaseException:
            self._input.close()
            raise
        self._tb = in_stream.time_base
        self._packets = self._input.demux(in_stream)
        self._pending = None
        self._output = output
        self._ended = False
        self.written = 0  # packets muxed
        self.skipped = 0  # input packets that do not decode, left out

    def _next(self):
        """The next input packet that decodes (with its decoded frames), or None at the end."""
        import av

        while self._pending is None and not self._ended:
            try:
                packet = next(self._packets)
            except StopIteration:
                self._ended = True
                break
            except av.FFmpegError:  # the demuxer hit the end of a truncated file: the audio ends there
                self._ended = True
                break
            if packet.dts is None or not packet.size:
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.skipped += 1
                continue
            self._pending = (packet, frames)
        return self._pending

    def advance(self, until: float | None) -> None:
        """Write the audio that starts before `until` seconds (all that remains when None)."""
        while (item := self._next()) is not None:
            packet, frames = item
            start = packet.pts if packet.pts is not None else packet.dts
            if until is not None and float(start * self._tb) >= until:
                return
            self._pending = None
            if self.mode == "copy":
                packet.stream = self.stream
                self._output.mux(packet)
                self.written += 1
            else:
                for frame in frames:
                    self._encode(frame)

    def _encode(self, frame) -> None:
        for out in self.stream.encode(frame):
            self._output.mux(out)
            self.written += 1

    def finish(self) -> None:
        """Flush the AAC encoder (nothing to do when copying)."""
        if self.mode != "copy":
            self._encode(None)

    def close(self) -> None:
        self._input.close()


class _AudioNotWritable(Exception):
    pass


def _check_copyable(source_path: Path, format_name: str) -> None:
    """Raise unless a container of `format_name` takes the input's first audio stream as it is: a small file
    in memory gets the stream and its first packets and is finalised (some muxers accept a codec in the
    header and refuse it only when they write the index, e.g. 16-bit PCM in MP4)."""
    import io

    import av

    with av.open(str(source_path), mode="r", metadata_errors="ignore") as src:
        stream = src.streams.audio[0]
        try:
            with av.open(io.BytesIO(), mode="w", format=format_name) as probe:
                copy = probe.add_stream_from_template(stream)
                probe.start_encoding()
                for n, packet in enumerate(src.demux(stream)):
                    if packet.dts is not None and packet.size:
                        packet.stream = copy
                        probe.mux(packet)
                    if n >= 8:
                        break
        except (av.FFmpegError, ValueError) as exc:
            raise _AudioNotWritable(f"{stream.codec_context.name} in {format_name}: {exc}") from None


# libx264's speed preset for annotated videos. `ultrafast`: on annotated 640x360 frames it costs 3.0-3.2 ms of
# CPU per frame against 5.4-6.1 ms for `superfast`, at a higher PSNR (40.5 vs 39.7 dB at crf 23) for files 1.6x
# the size of superfast's at the same PSNR (crf 22): CPU per frame is what counts under load; --preset
# superfast (or slower) trades it back for smaller files.
DEFAULT_PRESET = "ultrafast"


class VideoSink:
    """The annotated video: H.264 (libx264, yuv420p) with the input's frame count and timing (each frame
    keeps its input pts in the input's time base) and the input's audio when present: copied where the
    output container takes its codec, else re-encoded as AAC at the same times; either way only packets that
    decode go in. `copy_audio=False` (--no-audio) leaves the audio out.
    Odd frame sizes are padded by one pixel (4:2:0 needs even sizes)."""

    def __init__(self, path: str | Path, info: VideoInfo, copy_audio: bool = True, crf: int = 23,
                 preset: str = DEFAULT_PRESET, threads: int = 1) -> None:

        self.path = check_writable(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise StreamFerError(f"cannot write video to {self.path}: use one of "
                                 f"{', '.join(sorted(VIDEO_SUFFIXES))}")
        self.info = info
        self.frames = 0
        self._last_pts: int | None = None
        self._last_time = 0.0
        self._frame_duration = 1.0 / (info.fps or 30.0)
        self._time_base = info.time_base or DEFAULT_TIME_BASE
        self._closed = False
        self._audio: _AudioTrack | None = None
        self._settings = (preset, crf, threads)
        if not (copy_audio and info.has_audio and info.path is not None):
            self._open(audio=None)
            return
        try:
            self._open(audio="copy")
        except _AudioNotWritable as why:
            log.info("the input's audio cannot be copied into %s (%s); re-encoding it as AAC", self.path.name, why)
            try:
                self._open(audio="aac")
            except _AudioNotWritable as why_aac:
                raise StreamFerError(f"cannot write the input's audio into {self.path} ({why_aac}); "
                                     "--no-audio leaves it out") from None
        if self._audio.mode == "aac":
            log.info("%s: the input's %s audio is re-encoded as AAC", self.path.name, self._audio.source_codec)

    def _open(self, audio: str | None) -> None:
        """Create the container and its streams and write the header now, so a path or a stream the muxer
        rejects fails before any frame is processed."""
        import av

        info = self.info
        preset, crf, threads = self._settings
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError) as exc:
            raise StreamFerError(f"cannot write {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            rate = Fraction(info.fps).limit_denominator(1001) if info.fps else Fraction(30)
            options = {"preset": preset, "crf": str(crf)}
            if info.live:
                options["tune"] = "zerolatency"
            stream = self._container.add_stream("libx264", rate=rate, options=options)
            stream.width = info.width + (info.width % 2)
            stream.height = info.height + (info.height % 2)
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = self._time_base
            stream.time_base = self._time_base
            if threads:
                stream.codec_context.thread_count = threads
            self._stream = stream
            if audio:
                try:
                    self._audio = _AudioTrack(info.path, self._container, mode=audio)
                except (av.FFmpegError, ValueError, IndexError) as exc:
                    raise _AudioNotWritable(str(exc)) from None
            try:
                self._container.start_encoding()
            except (av.FFmpegError, ValueError) as exc:
                if self._audio is not None:
                    raise _AudioNotWritable(str(exc)) from None
                raise StreamFerError(f"cannot write {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:
            self._abort()
            self._audio = None
            raise

    @property
    def audio_packets(self) -> int:
        return self._audio.written if self._audio else 0

    def write(self, frame: Frame, result: FrameResult | None, annotated: np.ndarray) -> None:
        import av
        import cv2

        rgb = annotated
        h, w = rgb.shape[:2]
        if (w, h) != (self._stream.width, self._stream.height):
            rgb = self._fit(rgb)
        # OpenCV's RGB -> I420 (BT.601, limited range, as swscale's) takes ~0.2 ms at 640x360, where PyAV's
        # reformat of an rgb24 frame takes ~4 ms: a fifth of the whole pipeline's CPU budget per frame
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420),
                                        format="yuv420p")
        pts = self._pts(frame)
        vf.pts = pts
        vf.time_base = self._time_base
        self._last_time = float(pts * self._time_base)
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.advance(self._last_time)
        except (av.FFmpegError, OSError) as exc:
            raise StreamFerError(f"writing {self.path} failed: {getattr(exc, 'strerror', None) or exc}") from None
        self.frames += 1

    def _pts(self, frame: Frame) -> int:
        """The frame's own pts when it carries one in our time base, else one from its timestamp; always
        strictly increasing (an encoder rejects repeats)."""
        if frame.pts is not None and frame.time_base == self._time_base:
            pts = int(frame.pts)
        else:
            pts = int(round(frame.timestamp / self._time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        """Pad (edge-replicate) or crop to the stream's size."""
        W, H = self._stream.width, self._stream.height
        h, w = rgb.shape[:2]
        rgb = rgb[:H, :W]
        if h < H or w < W:
            rgb = np.pad(rgb, ((0, max(0, H - h)), (0, max(0, W - w)), (0, 0)), mode="edge")
        return rgb

    def close(self) -> None:
        """Flush the encoder, add the audio that belongs to the written video, finalise the container.
        Safe to call twice, and after an error."""
        import av

        if self._closed:
            return
        self._closed = True
        try:
            if self.frames:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                if self._audio is not None:
                    complete = self.info.frame_count is not None and self.frames >= self.info.frame_count
                    self._audio.advance(None if complete else self._last_time + self._frame_duration)
                    self._audio.finish()
        except (av.FFmpegError, OSError) as exc:
            log.error("finishing %s failed: %s", self.path, exc)
        finally:
            if self._audio is not None and self._audio.skipped:
                log.warning("%s: left out %d audio packet(s) of the input that do not decode", self.path.name,
                            self._audio.skipped)
            self._abort()
        if self.frames == 0:
            log.info("no frames were written; removing the empty %s", self.path)
            try:
                self.path.unlink()
            except OSError:
                pass

    def _abort(self) -> None:
        if self._audio is not None:
            try:
                self._audio.close()
            except Exception:
                pass
        try:
            self._container.close()
        except Exception as exc:  # nothing was written: the muxer has no header to finish
            log.debug("closing %s: %s", self.path, exc)


def video_info_of(path: str | Path) -> dict:
    """Frame count, per-frame times (seconds) and audio packet count of a video file: for checks and tests."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * stream.time_base) for f in container.decode(stream)]
    with av.open(str(path)) as container:
        audio = [s.index for s in container.streams.audio]
        audio_packets = sum(1 for p in container.demux(*container.streams.audio) if p.size) if audio else 0
    return {"frames": len(times), "times": times, "audio_packets": audio_packets}


def make_row_sinks(csv_path: str | Path | None, jsonl_path: str | Path | None, columns: Iterable[str],
                   rows_of: RowsOf | None = None) -> list[_RowSink]:
    sinks: list[_RowSink] = []
    try:
        if csv_path:
            sinks.append(CsvSink(csv_path, list(columns), rows_of))
        if jsonl_path:
            sinks.append(JsonlSink(jsonl_path, rows_of))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def remove_if_empty(path: Path) -> None:
    try:
        if path.exists() and os.path.getsize(path) == 0:
            path.unlink()
    except OSError:
        pass
