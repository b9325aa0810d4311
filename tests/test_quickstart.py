"""The README's Quick start is what CI runs (.ci/run takes its two fenced blocks): the install command must
work on a machine that has nothing but a clone, so it may not reach for the shared development data."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
    """The first fenced block between <!-- ci:NAME --> and <!-- /ci:NAME --> (as .ci/run reads it)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(rf"^<!-- ci:{name} -->\n(.*?)^<!-- /ci:{name} -->", text, re.S | re.M)
    assert section, f"README.md has no <!-- ci:{name} --> section"
    fenced = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.S | re.M)
    assert fenced and fenced.group(1).strip(), f"the ci:{name} section has no fenced command block"
    return fenced.group(1)


def test_the_install_command_needs_nothing_but_the_clone():
    install = readme_block("install")
    for needs_shared in ("../shared", "STREAM_FER_SHARED", "shared/"):
        assert needs_shared not in install, f"the install command refers to {needs_shared!r}:\n{install}"
    assert "stream-fer demo --out annotated.mp4" in install  # the main job, on the shipped sample
    assert "pip install -e '.[all]'" in install and "stream-fer models fetch" in install


def test_ci_runs_the_readme_blocks():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "run_step install" in ci and "run_step test" in ci
    assert readme_block("test").strip() == ". .venv/bin/activate && python -m pytest -q"


def test_the_sample_clip_is_small_and_credited():
    from stream_fer.samples import SAMPLE_VIDEO

    assert SAMPLE_VIDEO.stat().st_size < 1_000_000
    credit = (SAMPLE_VIDEO.parent / "SAMPLE_CREDIT.txt").read_text(encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for text in (credit, readme):
        assert "Wolfgang Langer" in text and "pexels.com/@wolfgang-langer-1415383" in text
