"""RtspSource against a real RTSP server on 127.0.0.1 (tests/stream_fer/rtsp_server.py): it reads the
stream as a normal TCP client, reconnects with backoff when the server goes away, ends cleanly when it does
not come back, drops the oldest frames for a slow reader, and fails in one line when nothing listens."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time

import pytest
from rtsp_server import RtspServer, encode_h264, split_annexb, synthetic_frames

from stream_fer.errors import StreamFerError
from stream_fer.pipeline import Stage, run_stages
from stream_fer.sources import RtspSource, SourceState, open_source


@pytest.fixture(scope="module")
def units():
    return encode_h264(synthetic_frames(60, 320, 240), fps=30, gop=15)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_encoded_units_are_h264_with_parameter_sets(units):
    assert len(units) == 60
    types = [n[0] & 0x1F for n in units[0]]
    assert 7 in types and 8 in types and 5 in types  # SPS, PPS, IDR
    assert split_annexb(b"\x00\x00\x00\x01\x67ab\x00\x00\x01\x68c") == [b"\x67ab", b"\x68c"]


def test_reads_a_loopback_stream(units):
    with RtspServer(units, fps=30) as server:
        source = open_source(server.url)
        assert isinstance(source, RtspSource)
        with source:
            info = source.info
            assert (info.width, info.height, info.codec, info.live) == (320, 240, "h264", True)
            assert source.state is SourceState.STREAMING
            frames = []
            for frame in source:
                frames.append(frame)
                if len(frames) == 20:
                    break
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert frames[0].rgb.shape == (240, 320, 3)
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(frames))
    assert 0.3 < frames[-1].timestamp - frames[0].timestamp < 2.0  # paced at ~30 fps


def test_server_that_stops_leads_to_reconnect_attempts_then_a_clean_end(units, caplog):
    server = RtspServer(units, fps=30).start()
    source = RtspSource(server.url, reconnect_attempts=3, backoff_initial=0.1)
    count = 0
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="stream_fer.sources"), source:
        for _ in source:  # ends by itself, without an exception
            count += 1
            if count == 10:
                server.stop()
    assert time.monotonic() - t0 < 15
    assert count >= 10
    assert source.state is SourceState.STOPPED and source.reconnects == 0
    text = caplog.text
    assert "interrupted" in text and "attempt 3 of 3" in text and "gave up" in text


def test_reconnects_when_the_server_comes_back(units):
    server = RtspServer(units, fps=30).start()
    source = RtspSource(server.url, reconnect_attempts=6, backoff_initial=0.2)
    count = 0
    try:
        with source:
            for _ in source:
                count += 1
                if count == 10:
                    server.stop()
                    threading.Timer(0.3, server.restart).start()
                if count == 40:
                    break
    finally:
        time.sleep(0.4)
        server.stop()
    assert count == 40 and source.reconnects >= 1 and server.connections >= 2


def test_unreachable_url_is_one_clear_error_after_bounded_retries():
    url = f"rtsp://127.0.0.1:{_closed_port()}/x"
    t0 = time.monotonic()
    with pytest.raises(StreamFerError, match=r"cannot open RTSP stream .* after 2 attempt\(s\)"):
        RtspSource(url, connect_attempts=2, backoff_initial=0.1).open()
    assert time.monotonic() - t0 < 10


def test_slow_reader_gets_the_newest_frames(units):
    with RtspServer(units, fps=30) as server, RtspSource(server.url, buffer_size=1) as source:
        got = []
        for frame in source:
            got.append(frame.index)
            time.sleep(0.1)  # 10 fps reader on a 30 fps stream
            if len(got) == 8:
                break
    assert source.dropped > 0
    assert got[-1] - got[0] > len(got)  # indices jump: old frames were skipped


def test_pipeline_on_a_live_stream_reports_latency_and_writes_video(units, tmp_path):
    from media import decode_times

    from stream_fer.frames import FrameResult
    from stream_fer.sinks import VideoSink

    with RtspServer(units, fps=30) as server:
        source = RtspSource(server.url)
        info = source.open()
        sink = VideoSink(tmp_path / "live.mp4", info, preset="ultrafast")
        stages = [Stage("render", lambda frame, _: (FrameResult(frame.index, frame.timestamp, ()), frame.rgb))]
        stats = run_stages(source, stages, [sink], max_frames=30)
    assert stats.frames_out == 30
    assert stats.latency_median_ms is not None and stats.latency_median_ms < 1000
    times = decode_times(tmp_path / "live.mp4")
    assert len(times) == 30 and all(b > a for a, b in itertools.pairwise(times))
