"""The public Python API on the shipped sample clip, with the real model (ONNX Runtime) and real MediaPipe:
analyze() writes every output itself and its DataFrame has one typed row per face per frame; the CSV, JSON
Lines and Parquet of one run read back to the same DataFrame; an Analyzer over a frame loop gives what
analyze() gives on the file; lazy iteration; bad input is one StreamFerError with the CLI's own line."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

import stream_fer
from stream_fer.errors import StreamFerError
from stream_fer.records import ROW_FIELDS
from stream_fer.results import file_metadata, pandas_dtypes

FRAMES = 36  # 1.5 s of the sample: the hand leaves the mouth and the smile starts


@pytest.fixture(scope="module")
def run(sample_video, landmarker_model, tmp_path_factory):
    """One analyze() of the sample's first FRAMES frames with every row output."""
    folder = tmp_path_factory.mktemp("api-run")
    paths = {"csv": folder / "rows.csv", "jsonl": folder / "rows.jsonl", "parquet": folder / "rows.parquet"}
    res = stream_fer.analyze(sample_video, **paths, max_frames=FRAMES, backend="onnxruntime",
                             landmarker=landmarker_model)
    return res, paths


def test_import_is_light_until_an_analysis_starts():
    heavy = ("torch", "gradio", "onnxruntime", "mediapipe", "cv2", "pandas", "pyarrow", "matplotlib")
    code = ("import sys, stream_fer; stream_fer.analyze; stream_fer.Analyzer; stream_fer.StreamFerError; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert set(stream_fer.__all__) >= {"analyze", "Analyzer", "Results", "read_results", "StreamFerError"}
    assert stream_fer.StreamFerError is StreamFerError


def test_dataframe_has_one_typed_row_per_face_per_frame(run):
    res, paths = run
    assert res.done and set(res.outputs) == set(paths) and all(p.is_file() for p in paths.values())
    df = res.to_pandas()
    assert list(df.columns) == list(ROW_FIELDS)
    assert {c: str(t) for c, t in df.dtypes.items()} == pandas_dtypes()
    assert str(df["track_id"].dtype) == "Int64" and str(df["label"].dtype) == "string"
    assert df["p_happiness"].dtype == np.float32 and df["frame_index"].dtype == np.int64
    # one face in every frame of the sample (max_faces=1): one row per frame, in order
    assert df["frame_index"].tolist() == list(range(FRAMES))
    assert (df["num_faces"] == 1).all() and df["track_id"].notna().all()
    probs = df[[f"p_{c}" for c in res.class_names]].to_numpy(dtype=np.float64)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=2e-3)
    assert (df["label"] == pd.Series(np.array(res.class_names)[probs.argmax(axis=1)])).all()
    # neutral has no AU map: its cosine is a null, the others are numbers
    assert (df["att_au_cosine"].isna() == (df["label"] == "neutral")).all()
    assert res.stats.frames_out == FRAMES


def test_a_frame_without_faces_is_one_row_of_nulls(sample_video, landmarker_model):
    import av

    with av.open(str(sample_video)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), container.decode(video=0))]
    frames.insert(1, np.zeros_like(frames[0]))  # a black frame between faces
    df = stream_fer.analyze(frames, fps=24.0, backend="onnxruntime", landmarker=landmarker_model).to_pandas()
    assert df["num_faces"].tolist() == [1, 0, 1, 1]
    empty = df.iloc[1]
    assert empty["timestamp"] == pytest.approx(1 / 24.0, abs=1e-6)  # rows keep 6 decimals
    assert empty["track_id"] is pd.NA and empty["label"] is pd.NA
    assert np.isnan(empty["p_neutral"]) and np.isnan(empty["box_x0"])
    assert str(df["track_id"].dtype) == "Int64"


def test_csv_jsonl_and_parquet_read_back_to_the_same_dataframe(run):
    res, paths = run
    expected = res.to_pandas()
    for path in paths.values():
        pd.testing.assert_frame_equal(stream_fer.read_results(path), expected, check_exact=True)
    # Parquet: real types for any reader, and how the file was made
    plain = pd.read_parquet(paths["parquet"])
    assert plain["p_happiness"].dtype == np.float32 and plain["frame_index"].dtype == np.int64
    meta = file_metadata(paths["parquet"])
    assert meta["stream_fer_version"] == stream_fer.__version__
    assert meta["model_sha256"] == res.metadata["model_sha256"] and len(meta["model_sha256"]) == 64
    assert meta["settings"]["max_faces"] == 1 and meta["settings"]["smoothing"] == "ema"
    assert meta["fps"] == pytest.approx(24000 / 1001, abs=1e-3)
    assert "sample.mp4" in meta["source"]["description"]
    assert stream_fer.read_results(paths["parquet"]).attrs["stream_fer"]["model_sha256"] == meta["model_sha256"]
    assert not list(paths["parquet"].parent.glob(".*.part"))  # written under a temporary name, renamed


def test_analyzer_over_a_frame_loop_gives_what_analyze_gives(run, sample_video, landmarker_model):
    import av

    from stream_fer.records import to_row
    from stream_fer.results import rows_to_table, table_to_pandas

    res, _ = run
    rows = []
    with stream_fer.Analyzer(backend="onnxruntime", landmarker=landmarker_model) as analyzer, \
            av.open(str(sample_video)) as container:
        for _, frame in zip(range(FRAMES), container.decode(video=0)):
            result = analyzer.process(frame.to_ndarray(format="rgb24"), timestamp=float(frame.time))
            rows.extend(to_row(result))
    mine = table_to_pandas(rows_to_table(rows))
    expected = res.to_pandas()
    floats = [c for c in expected.columns if expected[c].dtype == np.float32]
    pd.testing.assert_frame_equal(mine.drop(columns=floats), expected.drop(columns=floats))
    assert np.allclose(mine[floats].to_numpy(np.float64), expected[floats].to_numpy(np.float64), atol=2e-4,
                       equal_nan=True)


def test_analyzer_annotates_and_rejects_what_is_not_an_rgb_frame(sample_video, landmarker_model):
    import av

    with av.open(str(sample_video)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with stream_fer.Analyzer(backend="onnxruntime", landmarker=landmarker_model) as analyzer:
        result, annotated = analyzer.process(rgb, annotate=True)
        assert len(result.faces) == 1 and annotated.shape == rgb.shape and not np.array_equal(annotated, rgb)
        assert "render" in result.latency_ms
        for bad in (rgb[..., 0], rgb.astype(np.float32), "frame.png"):
            with pytest.raises(StreamFerError, match="uint8 RGB"):
                analyzer.process(bad)
        with pytest.raises(StreamFerError, match="timestamps must increase"):
            analyzer.process(rgb, timestamp=0.0)


def test_results_iterate_lazily_and_once(sample_video, landmarker_model):
    res = stream_fer.analyze(sample_video, max_frames=8, backend="onnxruntime", landmarker=landmarker_model)
    assert not res.done  # nothing analysed before the first frame is asked for
    seen = [fr.frame_index for fr in res]
    assert seen == list(range(8)) and res.done
    assert len(res.to_pandas()) == 8
    with pytest.raises(StreamFerError, match="already read"):
        next(iter(res))
    # breaking out early stops the analysis and its threads
    for fr in stream_fer.analyze(sample_video, backend="onnxruntime", landmarker=landmarker_model):
        if fr.frame_index == 2:
            break
    assert not [t for t in threading.enumerate() if t.name.startswith(("stream-fer-analyze", "pipeline-"))]


def _cli_error(cli, *args) -> str:
    result = cli(*args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["missing file", "text file named .mp4", "bad smoothing", "output is a dir"])
def test_bad_input_raises_one_error_with_the_cli_line(case, cli, sample_video, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    inputs = {"missing file": (tmp_path / "missing.mp4", {}), "text file named .mp4": (text, {}),
              "bad smoothing": (sample_video, {"smoothing": "bogus"}), "output is a dir": (sample_video, {})}
    source, options = inputs[case]
    out = tmp_path if case == "output is a dir" else tmp_path / "rows.csv"
    with pytest.raises(StreamFerError) as caught:
        stream_fer.analyze(source, csv=out, **options)
    flags = [f"--{k}" for k in options] + list(options.values())
    line = _cli_error(cli, source, "--csv", out, *flags)
    assert line == f"stream-fer: error: {caught.value}"
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "rows.csv").exists()


def test_read_results_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(StreamFerError, match="not found"):
        stream_fer.read_results(tmp_path / "none.parquet")
    (tmp_path / "x.txt").write_text("a,b\n1,2\n")
    with pytest.raises(StreamFerError, match="expected one of"):
        stream_fer.read_results(tmp_path / "x.txt")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(StreamFerError, match="no frame_index"):
        stream_fer.read_results(tmp_path / "x.csv")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(StreamFerError, match="not a readable"):
        stream_fer.read_results(tmp_path / "x.parquet")


def _sample_frames(sample_video, n: int) -> list[np.ndarray]:
    import av

    with av.open(str(sample_video)) as container:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), container.decode(video=0))]


def test_ctrl_c_closes_every_output_readable(sample_video, landmarker_model, tmp_path):
    import os
    import signal

    from stream_fer.api import AnalysisInterrupted

    frames = _sample_frames(sample_video, 24)

    def frames_then_ctrl_c():
        for i in range(10_000):
            if i == 30:  # the run is under way: Ctrl-C, as a user would press it
                os.kill(os.getpid(), signal.SIGINT)
            yield frames[i % len(frames)]

    paths = {"csv": tmp_path / "rows.csv", "parquet": tmp_path / "rows.parquet", "report": tmp_path / "r.html"}
    with pytest.raises(AnalysisInterrupted) as caught:
        stream_fer.analyze(frames_then_ctrl_c(), **paths, backend="onnxruntime", landmarker=landmarker_model)
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.results.interrupted
    written = stream_fer.read_results(paths["parquet"])
    assert 30 <= len(written) < 100  # every frame read was finished and written, then it stopped
    pd.testing.assert_frame_equal(written, stream_fer.read_results(paths["csv"]))
    pd.testing.assert_frame_equal(written, caught.value.results.to_pandas())
    assert "Track 1" in paths["report"].read_text()
    assert not list(tmp_path.glob(".*.part"))


def test_an_error_mid_run_leaves_readable_rows_up_to_there(sample_video, landmarker_model, tmp_path):
    frames = _sample_frames(sample_video, 12)

    def frames_then_a_bad_one():
        yield from frames
        yield np.zeros((4, 4), dtype=np.uint8)  # not an RGB frame

    paths = {"csv": tmp_path / "rows.csv", "parquet": tmp_path / "rows.parquet"}
    with pytest.raises(StreamFerError, match="uint8 RGB"):
        stream_fer.analyze(frames_then_a_bad_one(), **paths, backend="onnxruntime", landmarker=landmarker_model)
    written = stream_fer.read_results(paths["parquet"])
    assert written["frame_index"].tolist() == list(range(12))
    pd.testing.assert_frame_equal(written, stream_fer.read_results(paths["csv"]))


def test_a_model_that_does_not_load_leaves_no_output_behind(sample_video, tmp_path):
    paths = {"out": tmp_path / "a.mp4", "csv": tmp_path / "rows.csv", "parquet": tmp_path / "rows.parquet"}
    with pytest.raises(StreamFerError):
        stream_fer.analyze(sample_video, **paths, model=tmp_path / "no-model-here")
    assert not list(tmp_path.iterdir())


def test_without_the_mirror_each_face_is_the_crop_alone(sample_video, landmarker_model):
    """mirror=False: the raw probabilities are the engine's reading of the aligned crop alone (checked against
    the engine on that crop); with the mirror they differ (averaged with the mirror image); both give a trust."""
    from stream_fer.align import align_faces

    rgb = _sample_frames(sample_video, 20)[-1]
    readings = {}
    for mirror in (True, False):  # (mirror_below=1: the mirror image read whatever the crop's confidence)
        with stream_fer.Analyzer(backend="onnxruntime", landmarker=landmarker_model, mode="image",
                                 mirror=mirror, mirror_below=1.0) as analyzer:
            (face,) = analyzer.process(rgb).faces
            readings[mirror] = face
            crops, _ = align_faces(rgb, [face.landmarks], analyzer.crop_size)
            alone = analyzer.engine.infer(crops)
    np.testing.assert_allclose(readings[False].raw_probs, alone.probs[0], atol=1e-6)
    assert np.abs(readings[True].raw_probs - readings[False].raw_probs).max() > 1e-3
    assert all(0.0 <= readings[m].trust <= 1.0 for m in (True, False))
    with pytest.raises(StreamFerError, match="mirror_below must be a probability"):
        stream_fer.Analyzer(backend="onnxruntime", landmarker=landmarker_model, mirror_below=0)


def test_the_run_records_whether_faces_were_read_with_their_mirror(sample_video, landmarker_model, tmp_path):
    res = stream_fer.analyze(sample_video, parquet=tmp_path / "rows.parquet", max_frames=3, backend="onnxruntime",
                             landmarker=landmarker_model, mirror=False)
    assert file_metadata(tmp_path / "rows.parquet")["settings"]["mirror"] is False
    assert len(res.to_pandas()) == 3
    stream_fer.analyze(sample_video, parquet=tmp_path / "some.parquet", max_frames=3, backend="onnxruntime",
                       landmarker=landmarker_model, mirror_below=0.8)
    settings = file_metadata(tmp_path / "some.parquet")["settings"]
    assert settings["mirror"] is True and settings["mirror_below"] == 0.8
