# %% [markdown]
# # stream-fer from Python
#
# A notebook-style script (cells marked `# %%`: VS Code, PyCharm and Jupytext open it as a notebook; or run
# it whole: `python docs/example_notebook.py [VIDEO] [--out DIR]`). It analyses a video (default: the
# sample clip shipped with stream-fer), looks at the results with pandas, summarises them per face track,
# plots a timeline, writes an HTML report, and then does the same per frame in a loop of its own.
# tests/api/test_example_notebook.py runs it end to end.

# %%
import argparse
from pathlib import Path

import stream_fer
from stream_fer.samples import sample_video

parser = argparse.ArgumentParser(description="stream-fer from Python, end to end")
parser.add_argument("video", nargs="?", help="a video file (default: the sample clip shipped with stream-fer)")
parser.add_argument("--out", default="example_out", help="folder for what this writes (default: example_out)")
args, _ = parser.parse_known_args()  # parse_known_args: a notebook kernel passes arguments of its own
VIDEO = Path(args.video) if args.video else sample_video()
OUT = Path(args.out)
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## One call: analyse the whole video
# `analyze` writes every output you name (an annotated video, CSV, JSON Lines, Parquet, an HTML report)
# and returns the results. `max_faces`, `smoothing`, `backend` and the rest mirror `stream-fer run`.

# %%
res = stream_fer.analyze(VIDEO, out=OUT / "annotated.mp4", parquet=OUT / "frames.parquet",
                         report=OUT / "report.html", max_faces=2)
print(res)
print("\n".join(res.stats.summary_lines()[:2]))

# %% [markdown]
# ## The per-frame table
# One row per face per frame (a frame without a face has one row with the face columns empty), with real
# dtypes: integers, float32 probabilities, nullable track ids and labels.

# %%
df = res.to_pandas()
print(df.shape)
print(df[["frame_index", "timestamp", "track_id", "label", "confidence", "att_au_cosine"]].head())
print(df.dtypes[["frame_index", "track_id", "label", "p_happiness", "att_au_cosine"]])

# %% [markdown]
# Plain pandas from here: the mean probability of happiness per second, and the most confident frame.

# %%
per_second = df.groupby(df["timestamp"].floordiv(1.0))["p_happiness"].mean()
print(per_second.round(2))
best = df.loc[df["confidence"].idxmax()]
print(f"most confident: {best['label']} {best['confidence']:.0%} at {best['timestamp']:.2f} s")

# %% [markdown]
# ## Per track: time tracked, expression shares, switches, trust
# `low_trust_share` is the share of frames whose trust score (the calibrated chance that the label is
# right) is below 0.5; `low_cosine_share` the share whose attention-to-AU cosine is below 0.7 (see
# stream_fer/summary.py for where both thresholds come from).

# %%
summary = res.summary()
print(summary[["track", "frames", "duration_s", "share_neutral", "share_happiness", "mean_confidence",
               "switches_per_min", "att_au_cosine_mean", "trust_mean", "low_trust_share",
               "low_cosine_share"]].round(3).to_string(index=False))

# %% [markdown]
# ## A timeline, and the report
# `plot_timeline` returns a matplotlib figure (the `report` extra); the HTML report was written by
# `analyze(report=...)` and opens in any browser, offline.

# %%
fig = res.plot_timeline()
fig.savefig(OUT / "timeline.png", dpi=100)
print(f"timeline: {OUT / 'timeline.png'}, report: {res.outputs['report']}")

# %% [markdown]
# ## Reading results back
# What the CLI or `analyze` wrote, as the same typed DataFrame; a Parquet file also says how it was made.

# %%
again = stream_fer.read_results(OUT / "frames.parquet")
assert again.equals(df)
meta = again.attrs["stream_fer"]
print(f"stream-fer {meta['stream_fer_version']}, model {meta['model_sha256'][:12]}, {meta['source']['description']}")

# %% [markdown]
# ## Your own frame loop
# `Analyzer` takes RGB frames one at a time (from OpenCV, PyAV, a robot's camera) and keeps the face tracks
# and their smoothing between calls. Here PyAV decodes the first second of the same video.

# %%
import av  # noqa: E402  (a notebook imports where it needs to)

with stream_fer.Analyzer(max_faces=2) as analyzer, av.open(str(VIDEO)) as container:
    for frame in container.decode(video=0):
        if frame.time > 1.0:
            break
        result = analyzer.process(frame.to_ndarray(format="rgb24"), timestamp=frame.time)
        for face in result.faces:
            print(f"{frame.time:5.2f} s  track {face.track_id}: {face.label:<9} {face.confidence:.0%}  "
                  f"cosine {'-' if face.att_au_cosine is None else f'{face.att_au_cosine:.2f}'}")

# %% [markdown]
# ## Lazily, frame by frame
# Without outputs, `analyze` returns at once and analyses as you iterate: for long or live sources
# (`stream_fer.analyze(0)` is the first webcam, `"rtsp://..."` a stream).

# %%
labels = [fr.faces[0].label if fr.faces else None for fr in stream_fer.analyze(VIDEO, max_frames=12)]
print(labels)
