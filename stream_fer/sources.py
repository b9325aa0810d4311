"""Where frames come from: video files, RTSP streams, webcams and still images, behind one small interface.

`open_source(spec)` picks the strategy from the input string: `rtsp://...` -> RtspSource, a bare integer ->
WebcamSource, an image file name -> ImageSource, anything else -> FileSource.

- Files (PyAV: any codec FFmpeg decodes) never drop a frame: iteration is as slow as its consumer.
- Live sources (RTSP, webcam) read in a thread of their own into a small buffer that keeps only the newest
  frames (drop-oldest), count what they dropped, and stamp frames with the capture clock.

Every failure a user can cause (missing file, not a video, corrupt, no frames, unreachable stream, no
camera) is raised as one StreamFerError line.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.frames import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
LIVE_TIME_BASE = Fraction(1, 1000)  # live frames are stamped in milliseconds of the capture clock


class SourceState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class VideoInfo:
    """What a sink needs to know about the input before the first frame arrives."""

    width: int
    height: int
    fps: float | None  # nominal frame rate; None when unknown
    time_base: Fraction | None  # of Frame.pts
    frame_count: int | None  # declared by the container; None for live or unknown
    codec: str
    live: bool
    path: Path | None = None  # the input file, for copying its audio
    has_audio: bool = False
    description: str = ""


class Source(ABC):
    """A sequence of frames. Use as a context manager or call open() / close(); iterate for frames.
    stop() may be called from another thread: iteration then ends soon, cleanly."""

    live: bool = False

    def __init__(self) -> None:
        self.state = SourceState.IDLE
        self.dropped = 0  # frames discarded to bound latency (live sources only)
        self.info: VideoInfo | None = None
        self._stop = threading.Event()

    @abstractmethod
    def open(self) -> VideoInfo: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.state = SourceState.STOPPED

    def __enter__(self) -> Source:
        if self.info is None:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def source_kind(spec: str | Path) -> str:
    """What open_source makes of an input string: "rtsp", "webcam", "image" or "file"; "" for a URL scheme
    it does not support."""
    text = str(spec)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        return "rtsp" if scheme in ("rtsp", "rtsps") else ""
    if text.strip().isdigit():
        return "webcam"
    return "image" if Path(text).suffix.lower() in IMAGE_SUFFIXES else "file"


def open_source(spec: str | Path, **options) -> Source:
    """The source strategy for an input string (not opened yet); options go to its constructor."""
    text = str(spec)
    kind = source_kind(text)
    if kind == "rtsp":
        return RtspSource(text, **options)
    if not kind:
        raise StreamFerError(f"unsupported input {redact(text)}: expected a file, an rtsp:// URL or a webcam index")
    if kind == "webcam":
        return WebcamSource(int(text), **options)
    if kind == "image":
        return ImageSource(text)
    return FileSource(text, **options)


def redact(url: str) -> str:
    """A URL with any password replaced, safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns (0-3) that show a decoded frame upright: its display matrix's
    rotation (PyAV's VideoFrame.rotation), rounded to a multiple of 90 degrees; 0 without one."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, ValueError, TypeError):
        return 0
    return int(round(degrees / 90.0)) % 4


def _sample_aspect(stream) -> Fraction:
    """The stream's sample (pixel) aspect ratio, FFmpeg's guess from the container and the bitstream; 1 when
    it is unknown or unusable."""
    try:
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    except (AttributeError, ValueError, ZeroDivisionError):
        return Fraction(1)
    if not sar or sar <= 0 or not (Fraction(1, 16) <= sar <= 16):
        return Fraction(1)
    return Fraction(sar)


def square_pixel_size(width: int, height: int, sar: Fraction) -> tuple[int, int]:
    """The frame size in square pixels that shows a `width` x `height` picture of sample aspect `sar` at its
    display aspect: the squeezed dimension is stretched (no detail is thrown away), to an even size."""
    if sar > 1:
        width = int(round(width * sar / 2)) * 2
    elif sar < 1:
        height = int(round(height / sar / 2)) * 2
    return width, height


def _ffmpeg_reason(exc: BaseException) -> str:
    """The human part of a PyAV/FFmpeg error, without the file name it repeats."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return reason.rstrip(".")


# --------------------------------------------------------------------------------------------- files


class FileSource(Source):
    """A video file decoded with PyAV (H.264, HEVC, VP9, AV1, ... whatever the bundled FFmpeg decodes).
    Frames keep the container's pts and time_base so an output can reproduce the timing exactly."""

    live = False

    def __init__(self, path: str | Path, threads: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self._threads = threads
        self._container = None
        self._stream = None
        self._vframes: Iterator | None = None
        self._first = None
        self._quarter_turns = 0  # display rotation, set by open()
        self._square_size: tuple[int, int] | None = None  # (w, h) to resample non-square pixels to, set by open()
        self._ended_early: str | None = None
        self.decoded = 0
        self.discarded = 0  # packets the container marks for discarding (edit-list pre-roll): never shown
        self.corrupt_packets = 0
        self._reformatter = None  # one YUV -> RGB converter for the file, made on the first frame

    def open(self) -> VideoInfo:
        import av

        path = self.path
        if not path.exists():
            raise StreamFerError(f"input not found: {path}")
        if path.is_dir():
            raise StreamFerError(f"input is a directory, not a video file: {path}")
        if path.stat().st_size == 0:
            raise StreamFerError(f"input is an empty file: {path}")
        self.state = SourceState.CONNECTING
        try:
            container = av.open(str(path), mode="r", metadata_errors="ignore")
        except PermissionError:
            raise StreamFerError(f"cannot read {path}: permission denied") from None
        except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
            raise StreamFerError(f"not a readable video file (truncated, corrupt or not a video): {path} "
                                 f"({_ffmpeg_reason(exc)})") from None
        try:
            streams = list(container.streams.video)
        except (IndexError, av.FFmpegError):  # a container whose streams are unreadable
            streams = []
        if not streams:
            container.close()
            raise StreamFerError(f"no video stream in {path}")
        stream = streams[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            container.close()
            raise StreamFerError(f"the video stream of {path} has no picture size (corrupt or unsupported)")
        if self._threads:
            stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else (
            float(stream.guessed_rate) if stream.guessed_rate else None)
        self._container, self._stream = container, stream
        self.info = VideoInfo(
            width=ctx.width, height=ctx.height, fps=fps, time_base=stream.time_base,
            frame_count=int(stream.frames) or None, codec=ctx.name, live=False, path=path,
            has_audio=bool(container.streams.audio),
            description=f"{path.name}: {ctx.name} {ctx.width}x{ctx.height}"
                        + (f" {fps:.3g} fps" if fps else "") + (f", {stream.frames} frames" if stream.frames else ""),
        )
        self._peek()
        # Phone videos store the picture sideways with a display rotation: frames are turned upright (the
        # face landmarker needs upright faces, and the annotated copy should look as players show it).
        self._quarter_turns = _quarter_turns(self._first)
        width, height = self._first.width, self._first.height
        # Anamorphic video (non-square pixels) is resampled to square pixels at its display aspect, so the
        # landmarker sees the face undistorted and every overlay, box and output frame is in display geometry.
        sar = _sample_aspect(stream)
        if sar != 1:
            self._square_size = square_pixel_size(width, height, sar)
            width, height = self._square_size
        if self._quarter_turns % 2:
            width, height = height, width
        if (width, height) != (ctx.width, ctx.height):  # rotation, cropping, odd streams
            self.info = dataclasses.replace(self.info, width=width, height=height)
        if self._square_size:
            self.info = dataclasses.replace(self.info, description=self.info.description
                                            + f", pixels {sar.numerator}:{sar.denominator} resampled to square "
                                              f"{self._square_size[0]}x{self._square_size[1]}")
        if self._quarter_turns:
            self.info = dataclasses.replace(self.info, description=self.info.description
                                            + f", shown rotated {90 * self._quarter_turns} deg")
        self.state = SourceState.STREAMING
        log.info("opened %s", self.info.description)
        return self.info

    def _decoded_frames(self) -> Iterator:
        """PyAV frames in presentation order; damaged packets are skipped (and counted), the end of a
        truncated file ends the sequence (noted in _ended_early)."""
        import av

        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:  # the demuxer hit the end of a truncated file, or garbage
                self._ended_early = _ffmpeg_reason(exc)
                return
            if packet.is_discard:
                self.discarded += 1
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:  # one damaged packet: FFmpeg's decoders conceal what they can
                self.corrupt_packets += 1  # reported once, with the count, when the file ends
                log.debug("%s: skipped a packet that does not decode (%s)", self.path.name, _ffmpeg_reason(exc))
                continue
            yield from decoded

    def _peek(self) -> None:
        """Decode the first frame now, so a file without a decodable frame fails at open()."""
        self._vframes = self._decoded_frames()
        self._first = next(self._vframes, None)
        if self._first is None:
            reason = f" ({self._ended_early})" if self._ended_early else ""
            self.close()
            raise StreamFerError(f"no video frames could be decoded from {self.path}{reason}")

    def __iter__(self) -> Iterator[Frame]:
        if self.info is None:
            self.open()
        tb = self._stream.time_base
        fps = self.info.fps or 30.0
        first, self._first = self._first, None
        if first is not None and not self._stop.is_set():
            yield self._frame(first, tb, fps)
        for vf in self._vframes:
            if self._stop.is_set():
                break
            yield self._frame(vf, tb, fps)
        self.state = SourceState.STOPPED
        skipped = f"{self.corrupt_packets} video packet(s) that do not decode were skipped"
        if self._stop.is_set():
            if self.corrupt_packets:
                log.warning("%s: %s", self.path.name, skipped)
            return
        declared = self.info.frame_count or 0
        missing = declared - self.discarded - self.decoded
        if self._ended_early or missing > max(2, declared // 100):
            reasons = [r for r in (self._ended_early, skipped if self.corrupt_packets else None) if r]
            raise StreamFerError(f"{self.path} is truncated or corrupt: decoded {self.decoded} of "
                                 f"{declared or 'unknown'} frames" + (f" ({'; '.join(reasons)})" if reasons else ""))
        if self.corrupt_packets:  # a few damaged packets: every frame that decodes was used; said once
            log.warning("%s: %s", self.path.name, skipped)

    def _frame(self, vf, tb: Fraction, fps: float) -> Frame:
        index = self.decoded
        self.decoded += 1
        if vf.pts is not None and tb is not None:
            timestamp = float(vf.pts * tb)
        else:
            timestamp = index / fps
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        # One converter, in this thread: VideoFrame.to_ndarray(format=...) sets up a new swscale context with
        # its own worker threads for every frame (0.6 ms CPU per 640x360 frame; the pixels are the same).
        width, height = self._square_size or (None, None)
        rgb = self._reformatter.reformat(vf, width=width, height=height, format="rgb24", threads=1).to_ndarray()
        if self._quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, self._quarter_turns))
        return Frame(index=index, timestamp=timestamp, capture_time=time.monotonic(), rgb=rgb, pts=vf.pts,
                     time_base=tb)

    def close(self) -> None:
        super().close()
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None


class ImageSource(Source):
    """One still image as a one-frame video."""

    live = False

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._rgb: np.ndarray | None = None

    def open(self) -> VideoInfo:
        from stream_fer.images import read_rgb

        if not self.path.exists():
            raise StreamFerError(f"input not found: {self.path}")
        self._rgb = read_rgb(self.path)
        h, w = self._rgb.shape[:2]
        self.info = VideoInfo(width=w, height=h, fps=None, time_base=None, frame_count=1, codec="image",
                              live=False, path=self.path, description=f"{self.path.name}: image {w}x{h}")
        self.state = SourceState.STREAMING
        return self.info

    def __iter__(self) -> Iterator[Frame]:
        if self.info is None:
            self.open()
        if not self._stop.is_set():
            yield Frame(index=0, timestamp=0.0, capture_time=time.monotonic(), rgb=self._rgb)
        self.state = SourceState.STOPPED


# ------------------------------------------------------------------------------------- live sources


class LatestFrames:
    """A small thread-safe buffer for live frames: a full buffer discards its oldest frame, and counts it."""

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: collections.deque = collections.deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._closed:
                return
            while len(self._items) >= self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None):
        """The oldest buffered frame; None once closed and empty (or on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            return self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class _LiveSource(Source):
    """Shared machinery: a reader thread fills a LatestFrames buffer; iteration drains it; frames are
    numbered in capture order and stamped with the capture clock (ms since the first frame)."""

    live = True

    def __init__(self, buffer_size: int = 2) -> None:
        super().__init__()
        self._buffer = LatestFrames(buffer_size)
        self._reader: threading.Thread | None = None
        self._error: BaseException | None = None
        self._t0: float | None = None
        self._last_pts = -1
        self.captured = 0

    @property
    def dropped(self) -> int:  # type: ignore[override]
        return self._buffer.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:  # the base class initialises it
        pass

    def _start_reader(self, name: str) -> None:
        self._reader = threading.Thread(target=self._read_guarded, name=name, daemon=True)
        self._reader.start()

    def _read_guarded(self) -> None:
        try:
            self._read()
        except BaseException as exc:  # handed to the consumer, never printed by the thread
            self._error = exc
        finally:
            self.state = SourceState.STOPPED
            self._buffer.close()

    @abstractmethod
    def _read(self) -> None: ...

    def _emit(self, rgb: np.ndarray) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        pts = max(int(round((now - self._t0) * 1000)), self._last_pts + 1)
        self._last_pts = pts
        frame = Frame(index=self.captured, timestamp=pts / 1000.0, capture_time=now, rgb=rgb, pts=pts,
                      time_base=LIVE_TIME_BASE)
        self.captured += 1
        self._buffer.put(frame)

    def __iter__(self) -> Iterator[Frame]:
        if self.info is None:
            self.open()
        while True:
            frame = self._buffer.get(timeout=0.2)
            if frame is None:
                if self._buffer.closed:
                    break
                if self._stop.is_set():
                    break
                continue
            yield frame
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        super().close()
        self._buffer.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)


class RtspSource(_LiveSource):
    """An RTSP stream read with PyAV over TCP. States: connecting -> streaming -> (reconnecting ->
    streaming)* -> stopped. A stream that cannot be reached at all is an error (after `connect_attempts`
    tries); a stream that was playing and goes away is retried `reconnect_attempts` times with exponential
    backoff, then ends cleanly."""

    def __init__(self, url: str, buffer_size: int = 2, open_timeout: float = 5.0, read_timeout: float = 5.0,
                 connect_attempts: int = 3, reconnect_attempts: int = 5, backoff_initial: float = 0.5,
                 backoff_max: float = 8.0) -> None:
        super().__init__(buffer_size)
        self.url = url
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.connect_attempts = max(1, connect_attempts)
        self.reconnect_attempts = max(0, reconnect_attempts)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.reconnects = 0  # successful reconnections
        self._container = None

    def _options(self) -> dict[str, str]:
        return {
            "rtsp_transport": "tcp",
            "timeout": str(int(self.read_timeout * 1e6)),  # socket I/O timeout, microseconds
            "fflags": "nobuffer",
            "flags": "low_delay",
            "max_delay": "0",
            "analyzeduration": "200000",
            "probesize": "500000",
        }

    def _connect_once(self):
        import av

        container = av.open(self.url, mode="r", options=self._options(), metadata_errors="ignore",
                            timeout=(self.open_timeout, self.read_timeout))
        if not container.streams.video:
            container.close()
            raise StreamFerError(f"no video stream in {redact(self.url)}")
        return container

    def _connect(self, attempts: int, what: str) -> object | None:
        """A connected container, or None after `attempts` failures (the last reason is kept)."""
        import av

        delay = self.backoff_initial
        for attempt in range(1, attempts + 1):
            if self._stop.is_set():
                return None
            try:
                return self._connect_once()
            except StreamFerError:
                raise
            except (av.FFmpegError, OSError, ValueError) as exc:
                self._last_reason = _ffmpeg_reason(exc)
                log.info("%s %s: attempt %d of %d failed (%s)", what, redact(self.url), attempt, attempts,
                            self._last_reason)
            if attempt < attempts and self._stop.wait(delay):
                return None
            delay = min(delay * 2, self.backoff_max)
        return None

    def open(self) -> VideoInfo:
        self.state = SourceState.CONNECTING
        self._last_reason = "unknown error"
        container = self._connect(self.connect_attempts, "connecting to")
        if container is None:
            self.state = SourceState.STOPPED
            raise StreamFerError(f"cannot open RTSP stream {redact(self.url)} after {self.connect_attempts} "
                                 f"attempt(s): {self._last_reason}")
        self._container = container
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        self.info = VideoInfo(width=ctx.width, height=ctx.height, fps=fps, time_base=LIVE_TIME_BASE,
                              frame_count=None, codec=ctx.name, live=True,
                              description=f"{redact(self.url)}: {ctx.name} {ctx.width}x{ctx.height}"
                                          + (f" ~{fps:.3g} fps" if fps else ""))
        self.state = SourceState.STREAMING
        log.info("streaming %s", self.info.description)
        self._start_reader("rtsp-reader")
        return self.info

    def _read(self) -> None:
        import av

        while not self._stop.is_set():
            container = self._container
            reason = "the stream ended"
            try:
                for vf in container.decode(video=0):
                    if self._stop.is_set():
                        break
                    self._emit(vf.to_ndarray(format="rgb24"))
            except (av.FFmpegError, OSError, ValueError) as exc:
                reason = _ffmpeg_reason(exc)
            finally:
                self._container = None
                try:
                    container.close()
                except Exception:  # a broken connection may fail to close; it is gone either way
                    pass
            if self._stop.is_set():
                break
            self.state = SourceState.RECONNECTING
            log.warning("RTSP stream %s interrupted (%s); reconnecting", redact(self.url), reason)
            if self.reconnect_attempts == 0:
                break
            container = self._connect(self.reconnect_attempts, "reconnecting to")
            if container is None:
                if not self._stop.is_set():
                    log.warning("RTSP stream %s lost: gave up after %d reconnect attempt(s) (%s)",
                                redact(self.url), self.reconnect_attempts, self._last_reason)
                break
            self._container = container
            self.reconnects += 1
            self.state = SourceState.STREAMING
            log.info("RTSP stream %s reconnected", redact(self.url))


class WebcamSource(_LiveSource):
    """A local camera by index, read with OpenCV's VideoCapture in a thread of its own."""

    def __init__(self, index: int, buffer_size: int = 2, width: int | None = None,
                 height: int | None = None) -> None:
        super().__init__(buffer_size)
        self.index = index
        self._size = (width, height)
        self._cap = None

    def open(self) -> VideoInfo:
        import cv2

        self.state = SourceState.CONNECTING
        # OpenCV logs every backend it tries on a missing camera; the StreamFerError below says it in one line
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            cap = cv2.VideoCapture(self.index)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            cap.release()
            self.state = SourceState.STOPPED
            raise StreamFerError(f"cannot open webcam {self.index} (no such camera, or it is in use)")
        w, h = self._size
        if w and h:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            self.state = SourceState.STOPPED
            raise StreamFerError(f"webcam {self.index} opened but delivers no frames")
        fps = cap.get(cv2.CAP_PROP_FPS) or None
        self._cap = cap
        self.info = VideoInfo(width=bgr.shape[1], height=bgr.shape[0], fps=fps, time_base=LIVE_TIME_BASE,
                              frame_count=None, codec="webcam", live=True,
                              description=f"webcam {self.index}: {bgr.shape[1]}x{bgr.shape[0]}")
        self.state = SourceState.STREAMING
        self._emit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self._start_reader("webcam-reader")
        return self.info

    def _read(self) -> None:
        import cv2

        cap = self._cap
        failures = 0
        try:
            while not self._stop.is_set():
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    failures += 1
                    if failures >= 10:
                        log.warning("webcam %d stopped delivering frames", self.index)
                        break
                    time.sleep(0.05)
                    continue
                failures = 0
                self._emit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
