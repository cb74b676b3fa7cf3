"""Every benchmark row records the code it ran: the commit, and ``+changes`` when ``src/`` or
``benchmarks/`` differed from it (results files aside), so no row can pass for code it did not
run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def commit():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from common import commit
    finally:
        sys.path.remove(str(BENCHMARKS))
    return commit


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_commit_marks_changes_to_src_and_benchmarks_only(commit, tmp_path):
    root = tmp_path / "repo"
    for name in ("src/a.py", "benchmarks/b.py", "benchmarks/results/r.json", "docs/d.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("1\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = _git(root, "rev-parse", "--short", "HEAD")
    assert commit(root) == head
    for ignored in ("benchmarks/results/r.json", "docs/d.md"):
        (root / ignored).write_text("2\n")
        assert commit(root) == head, ignored
    for counted in ("src/a.py", "benchmarks/b.py"):
        (root / counted).write_text("2\n")
        assert commit(root) == head + "+changes", counted
        _git(root, "checkout", "--", counted)
    assert commit(root) == head
