"""Helpers for the batch tests: run the real CLI in a subprocess, read what it wrote, find its workers."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stream_fer.samples import SAMPLE_FRAMES, SAMPLE_VIDEO

__all__ = ["SAMPLE_FRAMES", "batch_command", "children", "is_alive", "leftovers", "make_inputs", "read_table",
           "run_batch_cli", "wait_for"]


def make_inputs(folder: Path, good: list[str], broken: list[str] = ()) -> Path:
    """Copies of the shipped sample clip at the `good` names, and files cut from it (unreadable) at the
    `broken` names."""
    for name in good:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_VIDEO, folder / name)
    for name in broken:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(SAMPLE_VIDEO.read_bytes()[:4000])
    return folder


def batch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_fer.cli", "batch", *args, "--no-progress"]


def run_batch_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(*args), capture_output=True, text=True, timeout=timeout)


def read_table(out_dir: Path, name: str = "batch.csv") -> dict[str, dict]:
    with open(out_dir / name, newline="") as f:
        return {row["video"]: row for row in csv.DictReader(f)}


def leftovers(out_dir: Path) -> list[str]:
    """Staging folders and temporary files anywhere under out_dir."""
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                  if ".partial-" in p.name or p.name.endswith(".tmp"))


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of a process's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                cmdline = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append((int(kid), cmdline))
    return found


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the batch ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
