"""Sources: real clips decode completely with their timing; sideways, anamorphic and HEVC files come out
upright, undistorted and decoded; damaged packets are skipped and counted once; every kind of bad input is
one StreamFerError; live buffering drops the oldest frames and counts them."""

from __future__ import annotations

import itertools
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from media import (
    CLIPS,
    SAMPLE,
    anamorphic_copy,
    damaged_copy,
    decode_times,
    faststart_copy,
    hevc_copy,
    index_last_copy,
    sideways_copy,
    truncated_copy,
    zero_frame_video,
)

from stream_fer.errors import StreamFerError
from stream_fer.sources import (
    FileSource,
    ImageSource,
    LatestFrames,
    RtspSource,
    SourceState,
    WebcamSource,
    open_source,
    redact,
)


@pytest.mark.parametrize("name", list(CLIPS))
def test_file_source_decodes_every_frame_with_its_timing(clips, name):
    path = clips[name]
    with FileSource(path) as source:
        info = source.info
        frames = list(source)
    assert len(frames) == CLIPS[name]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.timestamp for f in frames] == pytest.approx(decode_times(path), abs=1e-9)
    assert all(f.time_base == info.time_base and f.pts is not None for f in frames)
    assert frames[0].rgb.shape == (info.height, info.width, 3) and frames[0].rgb.dtype == np.uint8
    assert not info.live and info.has_audio
    assert source.state is SourceState.STOPPED


def test_a_phone_video_stored_sideways_is_turned_upright(clips, tmp_path, landmarker_model):
    from stream_fer.landmarks import Landmarker

    with FileSource(clips[SAMPLE]) as upright:
        original = next(iter(upright)).rgb
    path = sideways_copy(clips[SAMPLE], tmp_path / "portrait.mp4")
    with FileSource(path) as source:
        info = source.info
        frames = list(source)
    assert len(frames) == 6 and (info.width, info.height) == (original.shape[1], original.shape[0])
    assert "rotated 90" in info.description
    assert frames[0].rgb.shape == original.shape
    assert np.abs(frames[0].rgb.astype(int) - original).mean() < 6  # the same picture, up to coding loss
    with Landmarker(landmarker_model) as landmarker:
        face = landmarker.detect(frames[0].rgb)[0].points
    assert face[33, 1] < face[13, 1], "eyes should be above the mouth in an upright frame"


def test_a_video_with_non_square_pixels_is_shown_at_its_display_aspect(clips, tmp_path, landmarker_model):
    """A 480x360 picture with 4:3 pixels (display 640x360) is resampled to 640x360 square pixels, so the
    landmarks fall where the face is on screen: where they fall on the original square-pixel frame."""
    from stream_fer.landmarks import Landmarker

    with FileSource(clips[SAMPLE]) as square:
        original = next(iter(square)).rgb
    path = anamorphic_copy(clips[SAMPLE], tmp_path / "anamorphic.mp4", frames=3, sar=Fraction(4, 3))
    with FileSource(path) as source:
        info = source.info
        frames = list(source)
    assert (info.width, info.height) == (640, 360) and "pixels 4:3 resampled to square 640x360" in info.description
    assert len(frames) == 3 and frames[0].rgb.shape == original.shape
    assert np.abs(frames[0].rgb.astype(int) - original).mean() < 6  # the same picture, up to the squeeze
    with Landmarker(landmarker_model, mode="image") as landmarker:
        want = landmarker.detect(original)[0].points[:, :2]
        got = landmarker.detect(frames[0].rgb)[0].points[:, :2]
    face_width = np.ptp(want[:, 0])
    assert np.median(np.linalg.norm(got - want, axis=1)) < 0.02 * face_width
    assert abs(np.ptp(got[:, 0]) / np.ptp(got[:, 1]) - np.ptp(want[:, 0]) / np.ptp(want[:, 1])) < 0.03


def test_hevc_is_decoded(clips, tmp_path):
    path = hevc_copy(clips[SAMPLE], tmp_path / "iphone.mov", frames=6)
    with FileSource(path) as source:
        assert source.info.codec == "hevc"
        frames = list(source)
    assert len(frames) == 6 and frames[0].rgb.std() > 10  # pictures, not blank frames


def test_damaged_video_packets_are_skipped_and_counted_in_one_line(clips, tmp_path, caplog):
    """Every 8th video packet garbled: the frames that decode come through in order; the file is reported
    as corrupt once, with the count of skipped packets, after its frames, and nothing is logged per packet."""
    path = damaged_copy(clips[SAMPLE], tmp_path / "damaged.mp4", audio_every=0, video_every=8)
    got = []
    with caplog.at_level("WARNING", logger="stream_fer.sources"):
        with pytest.raises(StreamFerError, match=r"truncated or corrupt: decoded (\d+) of 96 frames .*"
                                                 r"12 video packet\(s\) that do not decode were skipped"):
            with FileSource(path) as source:
                for frame in source:
                    got.append(frame.index)
    assert got == list(range(96 - 12)) and source.corrupt_packets == 12
    assert not caplog.records, "the error says it all: no warning per packet, none beside it"


def test_a_few_damaged_packets_are_one_warning(clips, tmp_path, caplog):
    path = damaged_copy(clips[SAMPLE], tmp_path / "damaged.mp4", audio_every=0, video_every=48)
    with caplog.at_level("WARNING", logger="stream_fer.sources"), FileSource(path) as source:
        frames = list(source)
    assert len(frames) == 96 - source.corrupt_packets and source.corrupt_packets == 2
    assert [r.getMessage() for r in caplog.records] == [
        "damaged.mp4: 2 video packet(s) that do not decode were skipped"]


def test_stop_from_another_thread_ends_iteration(clips):
    with FileSource(clips[SAMPLE]) as source:
        count = 0
        for _ in source:
            count += 1
            if count == 5:
                threading.Thread(target=source.stop).start()
                time.sleep(0.05)
    assert 5 <= count < CLIPS[SAMPLE]


def test_open_source_picks_the_strategy(tmp_path):
    assert isinstance(open_source("rtsp://127.0.0.1:1/x"), RtspSource)
    assert isinstance(open_source("0"), WebcamSource)
    assert isinstance(open_source(tmp_path / "a.png"), ImageSource)
    assert isinstance(open_source(tmp_path / "a.mp4"), FileSource)
    with pytest.raises(StreamFerError, match="unsupported input"):
        open_source("http://example.invalid/x.mp4")


def test_passwords_are_redacted():
    assert redact("rtsp://user:secret@cam.local:554/x") == "rtsp://user:***@cam.local:554/x"
    assert redact("rtsp://cam.local/x") == "rtsp://cam.local/x"


@pytest.mark.parametrize("case, message", [
    ("missing", "input not found"),
    ("directory", "is a directory"),
    ("empty", "empty file"),
    ("text", "not a readable video"),
    ("truncated", "not a readable video"),
    ("zero_frames", "no video frames"),
    ("audio_only", "no video stream"),
])
def test_bad_files_are_one_clear_error(clips, tmp_path, case, message):
    path = _bad_file(case, clips, tmp_path)
    with pytest.raises(StreamFerError, match=message), FileSource(path) as source:
        for _ in source:
            pass


def test_truncated_file_with_index_first_is_reported_after_its_frames(clips, tmp_path):
    fast = faststart_copy(clips[SAMPLE], tmp_path / "fast.mp4")
    cut = truncated_copy(fast, tmp_path / "cut.mp4", 0.3)
    got = []
    with pytest.raises(StreamFerError, match="truncated or corrupt: decoded"), FileSource(cut) as source:
        for frame in source:
            got.append(frame.index)
    assert 0 < len(got) < CLIPS[SAMPLE]


def _bad_file(case, clips, tmp_path):
    if case == "missing":
        return tmp_path / "nope.mp4"
    if case == "directory":
        return tmp_path
    if case == "empty":
        (tmp_path / "empty.mp4").write_bytes(b"")
        return tmp_path / "empty.mp4"
    if case == "text":
        (tmp_path / "notes.mp4").write_text("this is not a video\n" * 20)
        return tmp_path / "notes.mp4"
    if case == "truncated":
        return truncated_copy(index_last_copy(clips[SAMPLE], tmp_path / "full.mp4"), tmp_path / "cut.mp4")
    if case == "zero_frames":
        return zero_frame_video(tmp_path / "none.avi")
    if case == "audio_only":
        import av

        with av.open(str(clips[SAMPLE])) as i, av.open(str(tmp_path / "sound.m4a"), "w") as o:
            a = o.add_stream_from_template(i.streams.audio[0])
            for packet in i.demux(i.streams.audio[0]):
                if packet.dts is not None:
                    packet.stream = a
                    o.mux(packet)
        return tmp_path / "sound.m4a"
    raise AssertionError(case)


def test_image_source_is_one_frame(stills):
    with ImageSource(stills[0]) as source:
        frames = list(source)
    assert len(frames) == 1 and frames[0].rgb.ndim == 3


def test_latest_frames_keeps_the_newest_and_counts_drops():
    buf = LatestFrames(capacity=2)
    for i in range(5):
        buf.put(i)
    assert buf.dropped == 3
    assert [buf.get(0), buf.get(0)] == [3, 4]
    assert buf.get(timeout=0.01) is None  # empty, not closed: a timeout
    buf.close()
    assert buf.get() is None


def test_missing_webcam_is_one_clear_error():
    with pytest.raises(StreamFerError, match="cannot open webcam 97"):
        WebcamSource(97).open()


class _FakeCapture:
    """cv2.VideoCapture stand-in: a 'camera' that delivers 200 frames as fast as it can."""

    def __init__(self, index):
        self.n = 0

    def isOpened(self):
        return True

    def set(self, *args):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        self.n += 1
        if self.n > 200:
            return False, None
        time.sleep(0.001)
        return True, np.full((24, 32, 3), self.n % 256, np.uint8)

    def release(self):
        pass


def test_webcam_drops_oldest_frames_for_a_slow_consumer(monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "VideoCapture", _FakeCapture)
    with WebcamSource(0, buffer_size=2) as source:
        assert source.info.live and source.info.time_base == Fraction(1, 1000)
        seen = []
        for frame in source:
            seen.append(frame)
            time.sleep(0.02)
    assert source.dropped > 0
    assert len(seen) + source.dropped == source.captured
    assert [f.index for f in seen] == sorted(f.index for f in seen)
    assert all(b.pts > a.pts for a, b in itertools.pairwise(seen))
