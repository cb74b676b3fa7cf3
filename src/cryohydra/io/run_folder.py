"""The output folder of ``cryohydra reconstruct``: its layout, in one place.

Layout of ``OUTDIR`` (one run; with half-sets the training files are in ``half_a/`` and
``half_b/``)::

    cryohydra-run.json   what was run (input, settings); marks the folder as a cryohydra run
    log.jsonl            one JSON record per epoch: losses, time, and with true poses in the
                         input the pose error (and FSC vs --reference-map)
    checkpoint.pt        everything needed to continue (written after every epoch)
    starts/, starts.json with ``--starts N``: each start's log and poses up to its first
                         auto-decoding epoch, their losses there and the one continued
    history/             every epoch's poses; switch_state.pt: the encoder and volume at the
                         switch (:mod:`cryohydra.io.history`), for the analyses
    distributed.json     a torchrun run: the particles each rank trained on
    model_volume.mrc     the learned volume at the working pixel size
    particles.star       the poses (RELION 3.1), usable by RELION and cryoSPARC
    map.mrc              backprojection of all particles with their poses (Wiener-filtered)
    half_map_a.mrc, half_map_b.mrc, fsc.csv, fsc.png, fsc.json (fsc_vs_reference.json)
    report.html, report_*.png   the run report (:mod:`cryohydra.report`)
    summary.json         resolution, timings, pose error (when true poses are known), and
                         the warnings of a run that did not converge
                         (:mod:`cryohydra.inference.diagnostics`)
    class_1/, class_2/, ...  with ``--classes K``: each class's map.mrc, half-maps, FSC and
                         model_volume.mrc; the top-level maps are then the largest class's

The job (:mod:`cryohydra.jobs.abinitio`) writes the folder; the report, the analyses and the
benchmarks read it through this module. Nothing here does physics or training.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from cryohydra.io.errors import InputFileError
from cryohydra.io.history import HISTORY_DIR, SWITCH_FILE, read_history
from cryohydra.io.read import read_particles

__all__ = [
    "CHECKPOINT_FILE",
    "CLASS_COLUMN",
    "class_dir_name",
    "DISTRIBUTED_FILE",
    "FSC_CSV_FILE",
    "FSC_FILE",
    "FSC_PLOT_FILE",
    "FSC_REFERENCE_FILE",
    "HALF_MAP_FILES",
    "HALF_RUNS",
    "HISTORY_DIR",
    "LOG_FILE",
    "MAP_FILE",
    "MODEL_VOLUME_FILE",
    "PARTICLES_FILE",
    "POSE_ERROR_PLOT_FILE",
    "REPORT_FILE",
    "RUN_FILE",
    "STARTS_DIR",
    "STARTS_FILE",
    "SUMMARY_FILE",
    "SWITCH_FILE",
    "RunFolder",
    "atomic_save",
    "claim",
    "read_description",
    "read_log",
]

RUN_FILE = "cryohydra-run.json"
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
STARTS_FILE = "starts.json"
STARTS_DIR = "starts"
DISTRIBUTED_FILE = "distributed.json"
MODEL_VOLUME_FILE = "model_volume.mrc"
PARTICLES_FILE = "particles.star"
MAP_FILE = "map.mrc"
HALF_MAP_FILES = ("half_map_a.mrc", "half_map_b.mrc")
FSC_CSV_FILE = "fsc.csv"
FSC_PLOT_FILE = "fsc.png"
FSC_FILE = "fsc.json"
FSC_REFERENCE_FILE = "fsc_vs_reference.json"
POSE_ERROR_PLOT_FILE = "pose_error.png"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
HALF_RUNS = ("half_a", "half_b")
CLASS_COLUMN = "rlnClassNumber"  # --classes: each particle's class in particles.star, 1-based


def class_dir_name(klass: int) -> str:
    """The folder of class ``klass`` (1-based, as RELION's ``rlnClassNumber``)."""
    return f"class_{klass}"


def read_log(path: str | Path) -> list[dict]:
    """The records of a ``log.jsonl`` (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def atomic_save(state: dict, path: Path) -> None:
    """``torch.save`` through a temporary file, so a killed run never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_description(outdir: str | Path) -> dict:
    """The run's ``cryohydra-run.json``; ``FileNotFoundError`` when ``outdir`` is not a run."""
    marker = Path(outdir) / RUN_FILE
    if not marker.exists():
        raise FileNotFoundError(f"{outdir}: not a cryohydra run (no {RUN_FILE})")
    return json.loads(marker.read_text())


# What a run writes into its folder (everything else there, a user's notes say, is kept).
_RUN_OUTPUTS = (
    LOG_FILE,
    CHECKPOINT_FILE,
    STARTS_FILE,
    STARTS_DIR,
    DISTRIBUTED_FILE,
    MODEL_VOLUME_FILE,
    PARTICLES_FILE,
    MAP_FILE,
    *HALF_MAP_FILES,
    FSC_CSV_FILE,
    FSC_PLOT_FILE,
    FSC_FILE,
    FSC_REFERENCE_FILE,
    POSE_ERROR_PLOT_FILE,
    SUMMARY_FILE,
    REPORT_FILE,
    HISTORY_DIR,
    SWITCH_FILE,
    *HALF_RUNS,
)


def _differences(before: dict, now: dict, defaults: dict | None = None) -> list[str]:
    """``key: old -> new`` for each setting that differs; a setting the earlier run did not
    have (an older version) counts as its default from ``defaults``."""
    defaults = defaults or {}
    keys = sorted(set(before) | set(now))
    old = {k: before.get(k, defaults.get(k)) for k in keys}
    return [f"{k}: {old[k]!r} -> {now.get(k)!r}" for k in keys if old[k] != now.get(k)]


def _clear_run(outdir: Path) -> None:
    """Remove a previous run's outputs (and its report figures), nothing else."""
    for name in _RUN_OUTPUTS:
        path = outdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for figure in outdir.glob("report_*.png"):
        figure.unlink()
    for folder in outdir.glob("class_*"):
        if folder.is_dir() and not folder.is_symlink() and folder.name[6:].isdigit():
            shutil.rmtree(folder)


def claim(
    outdir: Path,
    description: dict,
    resume: bool,
    force: bool,
    config_defaults: dict | None = None,
) -> None:
    """Claim ``outdir``: new or empty, our own run (``resume``/``force``), never a user's.

    A resumed run must be of the same particles (``description["particles"]``, a
    :meth:`~cryohydra.io.particles.ParticleSet.fingerprint`) with the same settings (its
    ``config``, ``init_poses`` and ``whitening``); the error
    says what differs (``config_defaults``: the value of a setting that an earlier version did
    not record). ``force`` removes the previous run's outputs (history, checkpoints,
    maps, report) before the new run writes ``cryohydra-run.json``.
    """
    marker = outdir / RUN_FILE
    if resume:
        if not marker.exists():
            raise InputFileError(outdir, f"is not a cryohydra run to resume (no {RUN_FILE})")
        previous = json.loads(marker.read_text())
        before, now = previous.get("particles"), description.get("particles")
        if before is not None and now is not None and before != now:
            raise InputFileError(
                outdir,
                f"was run on other particles ({previous.get('input')}: {before['count']} "
                f"particles; now {description.get('input')}: {now['count']}, "
                + ("other images" if before["count"] == now["count"] else "another count")
                + "); resume with the same input, or start a new run",
            )
        changed = _differences(previous.get("config", {}), description["config"], config_defaults)
        for key in ("init_poses", "whitening"):
            if previous.get(key) != description.get(key):
                changed.append(f"{key}: {previous.get(key)!r} -> {description.get(key)!r}")
        if changed:
            raise InputFileError(
                outdir,
                "was run with other settings; resume with the same options ("
                + "; ".join(changed)
                + ")",
            )
        return
    if outdir.exists() and any(outdir.iterdir()):
        if not marker.exists():
            raise InputFileError(
                outdir, "exists and is not a cryohydra run; choose another output folder"
            )
        if not force:
            raise InputFileError(
                outdir, "holds a cryohydra run; use --resume to continue it or --force to redo it"
            )
        _clear_run(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(description, indent=2) + "\n")


@dataclass
class RunFolder:
    """What a run folder holds, read once: its description, the per-epoch logs of its runs
    (one, or ``half_a`` and ``half_b``), and on demand its summary, input and poses."""

    outdir: Path
    description: dict
    logs: dict[str, list[dict]] = field(default_factory=dict)

    @staticmethod
    def read(outdir: str | Path) -> RunFolder:
        outdir = Path(outdir)
        folder = RunFolder(outdir, read_description(outdir))
        for name in folder.run_names:
            folder.logs[name] = read_log(folder.run_dir(name) / LOG_FILE)
        return folder

    @property
    def run_names(self) -> list[str]:
        return list(HALF_RUNS) if self.description.get("half_sets") else ["run"]

    def run_dir(self, name: str) -> Path:
        return self.outdir if name == "run" else self.outdir / name

    @property
    def first_run_dir(self) -> Path:
        """Where the (first) run trained: ``OUTDIR``, or ``OUTDIR/half_a``."""
        return self.run_dir(self.run_names[0])

    @property
    def config(self) -> dict:
        return self.description.get("config", {})

    @cached_property
    def summary(self) -> dict | None:
        path = self.outdir / SUMMARY_FILE
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def read_input(self, datadir: str | Path | None = None):
        """The input particle set named in the description."""
        return read_particles(self.description["input"], datadir=datadir)

    def working_pixel_size_a(self, particles) -> float | None:
        """The pixel size (Å) the run trained at, from the input's and the working box."""
        if particles is None or particles.box_size is None:
            return None
        box = self.config.get("working_box") or particles.box_size
        return float(particles.pixel_size_a[0]) * particles.box_size / box

    def final_poses(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Rotations and shifts of the output STAR, when written."""
        star = self.outdir / PARTICLES_FILE
        if star.exists():
            estimated = read_particles(star)
            if estimated.has_poses:
                return estimated.require_poses()
        return None

    def latest_poses(self) -> tuple[np.ndarray, np.ndarray, str] | None:
        """The output STAR's poses, else the latest epoch's poses of the first run."""
        final = self.final_poses()
        if final is not None:
            return final[0], final[1], "final poses"
        history = read_history(self.first_run_dir)
        if history:
            last = history[-1]
            return last.rotations, last.shifts_a, f"poses after epoch {last.epoch}"
        return None

    def fsc_records(self) -> dict[str, dict]:
        """The FSC curves written (``fsc.json``, ``fsc_vs_reference.json``) as dictionaries
        (:meth:`cryohydra.metrics.fsc.FSCCurve.to_dict`), by label."""
        out = {}
        for name, label in (
            (FSC_FILE, "half-maps (masked)"),
            (FSC_REFERENCE_FILE, "map vs reference"),
        ):
            path = self.outdir / name
            if path.exists():
                out[label] = json.loads(path.read_text())
        return out

    def class_folders(self) -> list[tuple[int, Path]]:
        """``(class, folder)`` of each class of a ``--classes`` run that has its folder, by
        class number (none for one class)."""
        found = []
        for path in self.outdir.glob("class_*"):
            if path.is_dir() and path.name[6:].isdigit():
                found.append((int(path.name[6:]), path))
        return sorted(found)

    def switch_state_path(self) -> Path:
        return self.first_run_dir / SWITCH_FILE
