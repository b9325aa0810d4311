"""A batch worker keeps one Analyzer (engine, MediaPipe landmarker, trust model) across its videos and runs
each on the sequential pipeline: every video's rows and metadata are those of a fresh analyze() on the
threaded pipeline, with the real engine and the real landmarker on the shipped sample."""

from __future__ import annotations

import pandas as pd
import pytest

import stream_fer
from stream_fer.batch.job import BatchSettings, worker_analyzer
from stream_fer.errors import StreamFerError
from stream_fer.samples import SAMPLE_VIDEO


def _fresh(tmp_path, name: str, **kwargs) -> tuple[pd.DataFrame, dict]:
    res = stream_fer.analyze(SAMPLE_VIDEO, parquet=tmp_path / f"{name}.parquet", **kwargs)
    return stream_fer.read_results(tmp_path / f"{name}.parquet"), res.metadata


def test_one_analyzer_in_turn_gives_each_video_the_rows_of_a_fresh_run(tmp_path):
    settings = BatchSettings()
    analyzer = worker_analyzer(settings)
    assert worker_analyzer(settings) is analyzer  # one per worker process and settings
    # the first run stops with a face in view, so any state carried into the second run would show there
    # (track ids continuing, smoothing and MediaPipe's face tracking starting from the last frame)
    runs = [("first", {"max_frames": 40}), ("second", {}), ("third", {"max_frames": 12})]
    for name, kwargs in runs:
        reused = stream_fer.analyze(SAMPLE_VIDEO, parquet=tmp_path / f"{name}_reused.parquet", pipeline="sequential",
                                    analyzer=analyzer, **kwargs)
        fresh_rows, fresh_metadata = _fresh(tmp_path, f"{name}_fresh", **kwargs)
        reused_rows = stream_fer.read_results(tmp_path / f"{name}_reused.parquet")
        assert len(reused_rows) == kwargs.get("max_frames", 96)
        assert set(reused_rows["track_id"].dropna()) == {1}
        pd.testing.assert_frame_equal(reused_rows, fresh_rows)
        assert reused.metadata == fresh_metadata
    analyzer.reset()
    assert len(analyzer.process(_first_frame()).faces) == 1  # left open: still usable after the runs


def _first_frame():
    import av

    with av.open(str(SAMPLE_VIDEO)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_a_lent_analyzer_serves_one_run_at_a_time_and_only_its_mode(tmp_path):
    with stream_fer.Analyzer(mode="image") as image_analyzer:
        with pytest.raises(StreamFerError, match="this Analyzer is in image mode; a video needs"):
            stream_fer.analyze(SAMPLE_VIDEO, parquet=tmp_path / "a.parquet", analyzer=image_analyzer)
        assert not (tmp_path / "a.parquet").exists()
    with stream_fer.Analyzer() as analyzer:
        lazy = stream_fer.analyze(SAMPLE_VIDEO, analyzer=analyzer, max_frames=3)  # not started: lent until read
        with pytest.raises(StreamFerError, match="in use by another analyze"):
            stream_fer.analyze(SAMPLE_VIDEO, parquet=tmp_path / "b.parquet", analyzer=analyzer)
        assert len(list(lazy)) == 3
        assert len(stream_fer.analyze(SAMPLE_VIDEO, analyzer=analyzer, max_frames=2).to_pandas()) == 2
    with pytest.raises(StreamFerError, match="this Analyzer is closed"):
        stream_fer.analyze(SAMPLE_VIDEO, parquet=tmp_path / "c.parquet", analyzer=analyzer)
    with pytest.raises(StreamFerError, match="analyzer must be a stream_fer.Analyzer"):
        stream_fer.analyze(SAMPLE_VIDEO, parquet=tmp_path / "d.parquet", analyzer=object())


def test_the_largest_videos_start_first_and_the_table_keeps_input_order(tmp_path):
    """One worker, so the start times show the order of work: largest input first (a short video last
    keeps the workers finishing together); batch.csv lists the videos in input order all the same."""
    from batch_helpers import make_inputs, read_table, run_batch_cli

    inputs = make_inputs(tmp_path / "in", good=["a_small.mp4", "b_large.mp4", "c_medium.mp4"])
    with open(inputs / "b_large.mp4", "ab") as f:  # trailing bytes: a larger file, the same video
        f.write(b"\0" * 200_000)
    with open(inputs / "c_medium.mp4", "ab") as f:
        f.write(b"\0" * 100_000)
    out = tmp_path / "out"
    proc = run_batch_cli(str(inputs), "--out-dir", str(out), "--workers", "1", "--max-frames", "2")
    assert proc.returncode == 0, proc.stderr
    table = read_table(out)
    assert list(table) == ["a_small.mp4", "b_large.mp4", "c_medium.mp4"]
    assert sorted(table, key=lambda v: table[v]["started"]) == ["b_large.mp4", "c_medium.mp4", "a_small.mp4"]
