"""Input discovery, output names and --shard: real files in a temporary tree (discovery reads no content)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream_fer.batch.inputs import Shard, discover
from stream_fer.batch.layout import output_bases, video_outputs
from stream_fer.errors import StreamFerError


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _touch(root, "s1/a.mp4", "s1/b.MOV", "s1/deep/c.mkv", "s2/d.mp4", "s2/notes.txt", "s2/.hidden.mp4",
           ".git/x.mp4", "e.webm")
    return root


def names(videos) -> list[str]:
    return [v.name for v in videos]


def test_a_folder_is_searched_recursively_for_videos_only(tree: Path):
    assert names(discover([str(tree)])) == ["e.webm", "s1/a.mp4", "s1/b.MOV", "s1/deep/c.mkv", "s2/d.mp4"]


def test_names_are_relative_to_the_common_root_of_mixed_inputs(tree: Path):
    videos = discover([str(tree / "s1" / "deep" / "c.mkv"), str(tree / "s2")])
    assert names(videos) == ["s1/deep/c.mkv", "s2/d.mp4"]
    assert all(v.path.is_absolute() for v in videos)
    assert names(discover([str(tree / "s2" / "d.mp4")])) == ["d.mp4"]  # one file: its folder is the root


def test_glob_patterns_and_duplicates(tree: Path):
    videos = discover([str(tree / "**" / "*.mp4"), str(tree / "s1" / "a.mp4")])
    assert names(videos) == ["s1/a.mp4", "s2/d.mp4"]  # each video once


def test_the_output_folder_inside_an_input_folder_is_not_searched(tree: Path):
    _touch(tree, "results/s1/a.annotated.mp4")
    assert "results/s1/a.annotated.mp4" not in names(discover([str(tree)], exclude=tree / "results"))
    assert "results/s1/a.annotated.mp4" in names(discover([str(tree)]))


def test_outputs_beside_the_inputs_are_not_inputs(tree: Path):
    _touch(tree, "s2/d.annotated.mp4", "s2/d.parquet")
    assert names(discover([str(tree / "s2")], exclude=tree)) == ["d.mp4"]
    assert names(discover([str(tree / "s2")], exclude=tree / "s2")) == ["d.mp4"]


def test_text_manifest_relative_to_its_folder(tree: Path):
    manifest = tree / "list.txt"
    manifest.write_text("# session one\ns1/a.mp4\n\n" + str(tree / "s2" / "d.mp4") + "\n")
    assert names(discover([str(manifest)])) == ["s1/a.mp4", "s2/d.mp4"]


def test_csv_manifest_uses_its_path_column(tree: Path):
    manifest = tree / "list.csv"
    manifest.write_text("subject,path\n1,s1/deep/c.mkv\n2,e.webm\n")
    assert names(discover([str(manifest)])) == ["e.webm", "s1/deep/c.mkv"]


@pytest.mark.parametrize("content, message", [
    ("subject,file\n1,e.webm\n", "has no 'path' column"),
    ("path\nmissing.mp4\ne.webm\n", "names a file that does not exist: "),
    ("path\n", "lists no videos"),
])
def test_bad_manifests_are_one_clear_error(tree: Path, content: str, message: str):
    manifest = tree / "list.csv"
    manifest.write_text(content)
    with pytest.raises(StreamFerError, match=message):
        discover([str(manifest)])


@pytest.mark.parametrize("arg, message", [("nope.mp4", "input not found"), ("nothing/*.mp4", "no video files match")])
def test_an_input_that_names_nothing_is_an_error(tree: Path, arg: str, message: str):
    with pytest.raises(StreamFerError, match=message):
        discover([str(tree / "s1"), str(tree / arg)])


def test_an_empty_folder_is_an_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StreamFerError, match="no video files"):
        discover([str(tmp_path / "empty")])


def test_shards_are_a_deterministic_partition(tree: Path):
    videos = discover([str(tree)])
    shards = [Shard.parse(f"{k}/3").select(videos) for k in (1, 2, 3)]
    assert sorted(names(v for s in shards for v in s)) == names(videos)
    assert sum(len(s) for s in shards) == len(videos)
    assert names(Shard.parse("2/3").select(discover([str(tree)]))) == names(shards[1])


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0"])
def test_bad_shards(text: str):
    with pytest.raises(StreamFerError, match="--shard"):
        Shard.parse(text)


def test_output_names_keep_the_suffix_only_where_needed(tmp_path: Path):
    _touch(tmp_path, "x/p01.mp4", "x/p01.mov", "x/p02.mp4", "batch.mp4")
    bases = output_bases(discover([str(tmp_path)]))
    assert {k: str(v) for k, v in bases.items()} == {
        "x/p01.mp4": "x/p01.mp4", "x/p01.mov": "x/p01.mov", "x/p02.mp4": "x/p02", "batch.mp4": "batch.mp4"}
    out = video_outputs(tmp_path / "out", bases["x/p02.mp4"], csv=True, video=True)
    assert sorted(p.name for p in out.data_files.values()) == [
        "p02.annotated.mp4", "p02.csv", "p02.parquet", "p02.summary.json"]
    assert out.done.name == "p02.done.json" and out.jsonl is None


def test_symlinked_file_is_named_as_given(tmp_path: Path):
    _touch(tmp_path, "real/a.mp4")
    (tmp_path / "links").mkdir()
    os.symlink(tmp_path / "real" / "a.mp4", tmp_path / "links" / "b.mp4")
    assert names(discover([str(tmp_path / "links")])) == ["b.mp4"]
