"""The `stream-fer` command as a user runs it (a fresh interpreter): subcommands, `regions`, `models`, and
bad input answered with one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from stream_fer.images import read_rgb, write_rgb
from stream_fer.model_files import LANDMARKER_SHA256, file_sha256

SUBCOMMANDS = ("run", "models", "regions", "export", "build-engine", "serve")


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit non-zero with exactly one stderr line, `stream-fer: error: ...`, containing each fragment."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{result.stderr}"
    assert lines[0].startswith("stream-fer: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def smile_path(smile):
    return smile.path


@pytest.fixture
def model_env(landmarker_model, tmp_path):
    """A verified model by STREAM_FER_LANDMARKER, and an empty cache so nothing else is used."""
    return {"STREAM_FER_LANDMARKER": str(landmarker_model), "STREAM_FER_CACHE": str(tmp_path / "cache")}


def test_help_lists_every_subcommand(cli):
    result = cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    for name in SUBCOMMANDS:
        assert name in result.stdout


def test_version(cli):
    from stream_fer import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"stream-fer {__version__}"


def test_regions_draws_the_au_regions_on_the_face(cli, smile_path, model_env, tmp_path, landmarker):
    out = tmp_path / "out" / "regions.png"
    result = cli("regions", smile_path, "--out", out, env=model_env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # MediaPipe's start-up chatter stays off stderr
    assert "1 face(s), 18 AU(s)" in result.stdout
    before, after = read_rgb(smile_path), read_rgb(out)
    assert after.shape == before.shape
    changed = np.argwhere((after != before).any(axis=2))  # (row, col)
    assert len(changed) > 500, "hardly anything was drawn"
    # The drawing is on the face: inside the mesh's box, widened by a quarter on each side.
    x0, y0, x1, y1 = landmarker.detect(before)[0].box
    mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    inside = ((changed[:, 1] >= x0 - mx) & (changed[:, 1] <= x1 + mx)
              & (changed[:, 0] >= y0 - my) & (changed[:, 0] <= y1 + my))
    assert inside.mean() > 0.98


def test_regions_of_one_expression_draws_less(cli, smile_path, model_env, tmp_path):
    out_all, out_one = tmp_path / "all.png", tmp_path / "happiness.png"
    assert cli("regions", smile_path, "--out", out_all, env=model_env).returncode == 0
    result = cli("regions", smile_path, "--out", out_one, "--expression", "happiness", env=model_env)
    assert result.returncode == 0 and "3 AU(s)" in result.stdout
    before = read_rgb(smile_path)
    drawn_all = (read_rgb(out_all) != before).any(axis=2).sum()
    drawn_one = (read_rgb(out_one) != before).any(axis=2).sum()
    assert 0 < drawn_one < drawn_all


@pytest.fixture
def blank_png(tmp_path):
    """A readable image without a face."""
    return write_rgb(tmp_path / "blank.png", np.full((360, 640, 3), 128, dtype=np.uint8))


def test_missing_image(cli, tmp_path):
    missing = tmp_path / "nowhere.png"
    result = cli("regions", missing, "--out", tmp_path / "x.png")
    assert_one_error_line(result, "image not found", str(missing))
    assert not (tmp_path / "x.png").exists()


def test_corrupt_image(cli, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    result = cli("regions", corrupt, "--out", tmp_path / "x.png")
    assert_one_error_line(result, "not a readable image", str(corrupt))


def test_image_without_a_face(cli, tmp_path, model_env, blank_png):
    result = cli("regions", blank_png, "--out", tmp_path / "x.png", env=model_env)
    assert_one_error_line(result, "no face", str(blank_png))
    assert not (tmp_path / "x.png").exists()


def test_wrong_landmark_model(cli, blank_png, tmp_path):
    bogus = tmp_path / "face_landmarker.task"
    bogus.write_bytes(b"not the model")
    env = {"STREAM_FER_LANDMARKER": str(bogus), "STREAM_FER_CACHE": str(tmp_path / "cache")}
    result = cli("regions", blank_png, "--out", tmp_path / "x.png", env=env)
    assert_one_error_line(result, "sha256", str(bogus))


def test_missing_landmark_model(cli, blank_png, tmp_path):
    env = {"STREAM_FER_LANDMARKER": None, "STREAM_FER_CACHE": str(tmp_path / "empty-cache")}
    result = cli("regions", blank_png, "--out", tmp_path / "x.png", env=env)
    assert_one_error_line(result, "stream-fer models fetch")
    result = cli("regions", blank_png, "--out", tmp_path / "x.png", "--landmarker", tmp_path / "no.task",
                 env=env)
    assert_one_error_line(result, "not found")


def test_models_fetch_and_path(cli, landmarker_model, tmp_path):
    env = {"STREAM_FER_LANDMARKER": None, "STREAM_FER_CACHE": str(tmp_path / "cache")}
    fetched = cli("models", "fetch", "--path", landmarker_model, env=env)
    assert fetched.returncode == 0 and fetched.stderr == ""
    cached = tmp_path / "cache" / "models" / "face_landmarker.task"
    assert str(cached) in fetched.stdout and file_sha256(cached) == LANDMARKER_SHA256
    shown = cli("models", "path", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == str(cached)


def test_models_fetch_rejects_a_wrong_file(cli, tmp_path):
    bogus = tmp_path / "face_landmarker.task"
    bogus.write_bytes(b"not the model")
    env = {"STREAM_FER_LANDMARKER": None, "STREAM_FER_CACHE": str(tmp_path / "cache")}
    assert_one_error_line(cli("models", "fetch", "--path", bogus, env=env), "sha256")
    assert not (tmp_path / "cache" / "models" / "face_landmarker.task").exists()


@pytest.mark.parametrize("argv, expected", [
    (["in.mp4", "--out", "o.mp4"], ["run", "in.mp4", "--out", "o.mp4"]),
    (["--max-faces", "2", "in.mp4"], ["run", "--max-faces", "2", "in.mp4"]),
    (["-v", "--debug", "in.mp4"], ["-v", "--debug", "run", "in.mp4"]),
    (["-v", "models", "fetch"], ["-v", "models", "fetch"]),
    (["serve", "--port", "1"], ["serve", "--port", "1"]),
    (["--help"], ["--help"]),
])
def test_run_is_the_default_subcommand(argv, expected):
    from stream_fer.cli import _with_default_command

    assert _with_default_command(argv) == expected


@pytest.mark.parametrize("argv, preset, expected", [
    (["--help"], None, "1"),  # the program: numpy's OpenBLAS starts no spinning workers
    (["--help"], "3", "3"),  # a user's own setting wins
    (["train", "--help"], None, None),  # training leaves the BLAS threads to torch and numpy's defaults
])
def test_the_program_keeps_openblas_to_one_thread_unless_told_otherwise(argv, preset, expected):
    code = ("import os, sys\n"
            f"sys.argv = ['stream-fer', *{argv!r}]\n"
            "from stream_fer import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('OPENBLAS=' + str(os.environ.get('OPENBLAS_NUM_THREADS')))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert f"OPENBLAS={expected}" in out.stdout.splitlines()


def test_the_mirror_threshold_is_documented_with_its_value_and_checked(cli, tmp_path, model_env):
    """`--mirror-below` says the analyzer's own default in its help, and a value that is not a probability is one
    clear line before any output is written, for `run` and for `batch`."""
    from stream_fer.reading import MIRROR_BELOW

    for command in ("run", "batch"):
        result = cli(command, "--help")
        assert result.returncode == 0 and f"(default {MIRROR_BELOW}" in " ".join(result.stdout.split())
    from stream_fer.samples import sample_video

    out = tmp_path / "rows.csv"
    assert_one_error_line(cli("run", sample_video(), "--csv", out, "--mirror-below", "1.5", env=model_env),
                          "mirror_below must be a probability")
    assert not out.exists()
    assert_one_error_line(cli("batch", tmp_path, "--out-dir", tmp_path / "b", "--mirror-below", "0", env=model_env),
                          "mirror_below must be a probability")
