"""Sinks: the video keeps the input's frame count, timing and audio; an interrupted video is still playable;
row files have a fixed header and are readable before they are closed; unwritable paths fail up front."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from media import CLIPS, audio_packets, decode_times, synthetic_video

from stream_fer.errors import StreamFerError
from stream_fer.frames import FrameResult
from stream_fer.records import ROW_FIELDS, to_row
from stream_fer.sinks import CsvSink, ImageSink, JsonlSink, VideoSink, check_writable
from stream_fer.sources import FileSource


def _empty_result(frame) -> FrameResult:
    return FrameResult(frame.index, frame.timestamp, ())


def _copy(src, dst, limit=None, **kwargs) -> VideoSink:
    with FileSource(src) as source:
        sink = VideoSink(dst, source.info, **kwargs)
        try:
            for frame in source:
                sink.write(frame, _empty_result(frame), frame.rgb)
                if limit and sink.frames >= limit:
                    break
        finally:
            sink.close()
    return sink


@pytest.mark.parametrize("name", list(CLIPS))
def test_video_keeps_frame_count_timing_and_audio(clips, tmp_path, name):
    src = clips[name]
    out = tmp_path / "out.mp4"
    _copy(src, out, preset="ultrafast")
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    assert audio_packets(out) == audio_packets(src)  # remuxed: same codec, every packet


def test_interrupted_video_is_playable_with_matching_audio(clips, tmp_path):
    src = clips["no_face.mp4"]  # audio from 0 s (face_noface.mov's starts at 2.4 s)
    out = tmp_path / "part.mp4"
    _copy(src, out, limit=40, preset="ultrafast")
    times = decode_times(out)
    assert times == pytest.approx(decode_times(src)[:40], abs=1e-6)
    (_, packets), = audio_packets(out)
    (_, all_packets), = audio_packets(src)
    assert 0 < packets < all_packets  # the audio stops with the video


def test_video_without_audio_copy(clips, tmp_path):
    out = tmp_path / "silent.mp4"
    _copy(clips["single_face.mp4"], out, limit=5, copy_audio=False, preset="ultrafast")
    assert audio_packets(out) == []
    assert len(decode_times(out)) == 5


def test_odd_frame_size_is_padded(tmp_path):
    src = synthetic_video(tmp_path / "odd.mp4", frames=4, size=(160, 120))
    with FileSource(src) as source:
        info = source.info
        frames = list(source)
    from dataclasses import replace

    odd = replace(info, width=159, height=119, has_audio=False)
    sink = VideoSink(tmp_path / "out.mp4", odd, preset="ultrafast")
    for f in frames:
        sink.write(f, _empty_result(f), f.rgb[:119, :159])
    sink.close()
    assert len(decode_times(tmp_path / "out.mp4")) == 4


def test_a_video_sink_with_no_frames_leaves_no_file(tmp_path):
    src = synthetic_video(tmp_path / "in.mp4", frames=2)
    with FileSource(src) as source:
        sink = VideoSink(tmp_path / "never.mp4", source.info)
    sink.close()
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.parametrize("path", ["/proc/x.mp4", "/sys/x.mp4", "/dev/null/x.mp4"])
def test_unwritable_paths_fail_up_front(path):
    with pytest.raises(StreamFerError, match="cannot write"):
        check_writable(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_fails_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StreamFerError, match="cannot write"):
            check_writable(ro / "out.mp4")
    finally:
        ro.chmod(0o755)


def test_check_writable_leaves_no_file_behind(tmp_path):
    check_writable(tmp_path / "sub" / "out.csv")
    assert not (tmp_path / "sub" / "out.csv").exists()


def test_csv_header_is_fixed_before_any_row_and_rows_are_flushed(tmp_path):
    path = tmp_path / "rows.csv"
    sink = CsvSink(path, ROW_FIELDS, to_row, flush_every=0.0)
    with open(path) as f:
        assert next(csv.reader(f)) == list(ROW_FIELDS)  # before any frame
    from stream_fer.frames import Frame

    frame = Frame(index=3, timestamp=0.1, capture_time=0.0, rgb=np.zeros((2, 2, 3), np.uint8))
    sink.write(frame, _empty_result(frame), None)
    with open(path) as f:  # readable while still open: a crash keeps what was written
        rows = list(csv.DictReader(f))
    sink.close()
    assert len(rows) == 1
    assert rows[0]["frame_index"] == "3" and rows[0]["num_faces"] == "0" and rows[0]["track_id"] == ""


def test_jsonl_rows(tmp_path):
    from stream_fer.frames import Frame

    path = tmp_path / "rows.jsonl"
    sink = JsonlSink(path, to_row)
    for i in range(3):
        frame = Frame(index=i, timestamp=i / 30, capture_time=0.0, rgb=np.zeros((2, 2, 3), np.uint8))
        sink.write(frame, _empty_result(frame), None)
    sink.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["frame_index"] for r in rows] == [0, 1, 2]
    assert list(rows[0]) == list(ROW_FIELDS) and rows[0]["label"] is None


def test_image_sink(tmp_path, stills):
    from stream_fer.images import read_rgb

    rgb = read_rgb(stills[0])
    sink = ImageSink(tmp_path / "out.png")
    sink.write(None, None, rgb)
    sink.close()
    assert np.array_equal(read_rgb(tmp_path / "out.png"), rgb)


def test_audio_the_output_cannot_hold_is_left_out_with_a_warning(clips, tmp_path, caplog):
    import av

    src = tmp_path / "mulaw.mov"  # G.711 audio: fine in .mov, not allowed in .mp4
    with av.open(str(clips["single_face.mp4"])) as i, av.open(str(src), "w") as o:
        video = o.add_stream_from_template(i.streams.video[0])
        audio = o.add_stream("pcm_mulaw", rate=8000, layout="mono")
        for packet in i.demux(i.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                o.mux(packet)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, k * 800
            for packet in audio.encode(frame):
                o.mux(packet)
        for packet in audio.encode(None):
            o.mux(packet)
    with caplog.at_level("WARNING", logger="stream_fer.sinks"):
        _copy(src, tmp_path / "out.mp4", preset="ultrafast")
    assert "writing video only" in caplog.text
    assert audio_packets(tmp_path / "out.mp4") == []
    assert len(decode_times(tmp_path / "out.mp4")) == CLIPS["single_face.mp4"]
    _copy(src, tmp_path / "out.mov", preset="ultrafast")  # .mov keeps it
    assert audio_packets(tmp_path / "out.mov") == [("pcm_mulaw", 10)]
