"""Installing stream-fer puts one top-level import name in site-packages: the wheel holds `stream_fer`
(with engines/ and train/ inside it as stream_fer.engines and stream_fer.train) and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_has_one_top_level_name(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the build backend)")
    tree = tmp_path / "src"  # a copy, so the build's build/ and egg-info never land in the working tree
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("stream_fer", "engines", "train"):
        shutil.copytree(REPO_ROOT / name, tree / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, tree / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(tree)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("stream_fer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"stream_fer"}
    for module in ("stream_fer/api.py", "stream_fer/engines/select.py", "stream_fer/train/__init__.py",
                   "stream_fer/engines/default/model.onnx"):
        assert module in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "stream-fer = stream_fer.cli:main" in entry_points
