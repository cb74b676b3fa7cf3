"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_results(name: str, results: dict) -> Path:
    """``RESULTS/name.json``: the machine, the code (:func:`commit`) and ``results``, all
    written by the benchmark in one run (a file of rows from several runs gives each row its
    own ``commit`` instead)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    stamped = {"machine": machine(), "commit": commit(), **results}
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path


def read_rows(path: Path) -> list[dict]:
    """The rows of a results file written row by row (:func:`append_row`); none if absent."""
    return json.loads(path.read_text())["rows"] if path.exists() else []


def append_row(path: Path, row: dict) -> None:
    """Add ``row`` (which carries its own ``commit``) to the results file ``path``."""
    rows = [*read_rows(path), row]
    path.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


def timed(function, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls (s), after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def commit(root: Path | None = None) -> str:
    """The code a run used: the git commit, ``+changes`` when ``src/`` or ``benchmarks/``
    differs from it (tracked files; results files under ``benchmarks/results`` aside).
    ``root``: the repository (default: this one)."""
    root = Path(__file__).resolve().parent.parent if root is None else root
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "src",
                "benchmarks",
                ":!benchmarks/results",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+changes" if dirty else "")


class CountingBar:
    """A stand-in for a run's progress bar that counts the images it is told of."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n

    def set_description(self, _text: str) -> None:
        pass

    def set_postfix_str(self, *_args, **_kwargs) -> None:
        pass


def unfinished_run(outdir: Path, epochs: int) -> bool:
    """A run cut short: a checkpoint and fewer than ``epochs`` epochs in its log (a finished
    run whose row was removed is run again, not passed off as new)."""
    from cryohydra.io.run_folder import CHECKPOINT_FILE, LOG_FILE

    if not (outdir / CHECKPOINT_FILE).exists() or not (outdir / LOG_FILE).exists():
        return False
    lines = [x for x in (outdir / LOG_FILE).read_text().splitlines() if x.strip()]
    return bool(lines) and json.loads(lines[-1])["epoch"] < epochs


def logged_seconds(outdir: Path) -> float:
    """A run's time from its log: each epoch's training and evaluation seconds (every
    process's, when it was resumed)."""
    from cryohydra.io.run_folder import LOG_FILE, read_log

    return sum(r["seconds"] + r.get("evaluation_seconds", 0.0) for r in read_log(outdir / LOG_FILE))
