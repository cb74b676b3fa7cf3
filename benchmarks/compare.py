"""Side by side with the tools people run today: cryohydra, cryoDRGN and ASPIRE on the same data,
on the same machine, in one run (``make compare``).

What it does, from a fresh clone:

1. Installs each peer, pinned, from the package registry into its own virtual environment
   under the ignored ``benchmarks/work/peers/`` (``torch==2.13.0`` first, the frozen versions
   of ``benchmarks/peers/requirements-*.txt`` as constraints), never into cryohydra's own.
2. Simulates the data (``datasets.py``): the standard HSP90 set (SNR 0.1, the EMPIAR-10028
   CTF, uniform orientations, centred) with ``--particles`` particles (default 10,000) of
   ``--box`` px (64 at 2.5 Å/px or 128 at 1.25 Å/px), and, if ``--sweep-snrs`` names any, an
   SNR sweep of the same structure at 64 px (``--sweep-particles``). Every method gets a STAR
   file without the true poses; the truth stays aside for the evaluation.
3. Runs every method as its own process, one CPU thread each, ``--lanes`` processes at a time,
   each stopped at the same wall-clock cap (``--cap-minutes``, default 60; 0: let each run
   its own schedule to the end): cryohydra semi-amortized (with ``--all-modes`` also its
   amortized and cryoAI modes and ``orient``, a network trained on the same atomic model);
   ``cryodrgn abinit --zdim 0`` with
   its explicit volume and with its neural one, and ``cryodrgn abinit_homo_old``, each on its
   default schedule (departures in :func:`cryodrgn_runs`); ASPIRE's route for noisy data:
   class averages of every particle, common lines (``CLSyncVoting``, ``CommonlineIRLS``) on
   them, each particle posed from its class, its mean-volume map
   (``peers/aspire_classavg_run.py``); and two ceilings from the true poses, cryohydra's
   ``backproject`` and cryoDRGN's ``backproject_voxel``. On the sweep, cryohydra
   semi-amortized and ASPIRE common lines on 200 raw images, to show where each breaks.
4. Measures for each: FSC 0.5 resolution against the true map after aligning the maps
   (hand included), median rotation error after global alignment (modulo HSP90's two-fold),
   wall time, CPU time and peak memory (RSS, from ``wait4``), and resolution against time from
   the maps each tool writes on the way (cryohydra: its per-epoch model against the truth,
   evaluated inside the run and timed apart; cryoDRGN: its per-epoch maps).
5. Writes ``benchmarks/results/compare-<dataset>.json``, ``compare-<dataset>.md`` (the table
   quoted in the README) and ``compare-<dataset>.png`` (resolution against time), and
   ``compare-sweep.*`` for the SNR sweep.

Each finished run leaves ``done.json`` in its folder under ``benchmarks/work/compare/`` and
is not run again: an interrupted comparison started again with the same arguments goes on
where it stopped (a run cut in the middle starts over). ``--rerun NAME`` forgets one.

  python benchmarks/compare.py                       # 10,000 x 64 px: about 3 h on 2 cores
  python benchmarks/compare.py --box 128             # 10,000 x 128 px
  python benchmarks/compare.py --only semi-amortized cryodrgn-explicit
  python benchmarks/compare.py --quick               # a small end-to-end check (minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import starfile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, commit, machine  # noqa: E402
from cryohydra.io.mrc import read_map  # noqa: E402
from cryohydra.io.read import read_particles  # noqa: E402
from cryohydra.io.run_folder import (  # noqa: E402
    LOG_FILE,
    MAP_FILE,
    PARTICLES_FILE,
    SUMMARY_FILE,
    read_log,
)
from cryohydra.metrics.pose_error import pose_errors  # noqa: E402
from cryohydra.metrics.reference import reference_fsc  # noqa: E402
from cryohydra.simulate import simulate  # noqa: E402
from datasets import SYMMETRY, WORK, config  # noqa: E402

ROOT = Path(__file__).resolve().parent
COMPARE = WORK / "compare"
PEERS = WORK / "peers"
PINS = {"cryodrgn": "cryodrgn==4.3.1", "aspire": "aspire==0.14.3"}
TORCH = "torch==2.13.0"
MODEL = "hsp90"
MAX_CURVE_MAPS = 8  # per-epoch maps of a peer scored against the truth


# ----------------------------------------------------------------------------- environments


def peer_python(peer: str) -> Path:
    return PEERS / f"{peer}-venv" / "bin" / "python"


def ensure_peer(peer: str) -> Path:
    """The peer's own virtual environment, made and installed (pinned) if it is not there."""
    python = peer_python(peer)
    name, version = PINS[peer].split("==")
    probe = f"import importlib.metadata as m; print(m.version('{name}'))"
    if python.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    print(f"installing {PINS[peer]} into {python.parent.parent}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", python.parent.parent], check=True)
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, TORCH], check=True)  # the local CPU build, before anything pulls CUDA
    constraints = ROOT / "peers" / f"requirements-{peer}.txt"
    subprocess.run([*pip, "-c", constraints, PINS[peer]], check=True)
    return python


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Data:
    """A simulated set: ``truth`` (with poses), ``input`` (the same, poses removed)."""

    name: str
    folder: Path
    snr: float
    n: int

    @property
    def truth(self) -> Path:
        return self.folder / "particles.star"

    @property
    def input(self) -> Path:
        return COMPARE / "data" / self.name / "input.star"

    @property
    def ground_truth(self) -> Path:
        return self.folder / "ground_truth.mrc"

    @property
    def ctf_pkl(self) -> Path:
        return COMPARE / "data" / self.name / "ctf.pkl"


def make_data(snr: float, n: int, box: int = 64) -> Data:
    """HSP90 centred at SNR ``snr``, ``n`` particles of ``box`` px (``datasets.config``: 2.5 Å/px
    at 64 px, 1.25 Å/px at 128 px: the same field of view)."""
    name = f"{MODEL}_{box}px_centred_snr{snr:g}_{n}"
    folder = WORK / "datasets" / name
    if not (folder / "simulation.json").exists():
        settings = replace(config(MODEL, shifted=False, n_particles=n, box=box), snr=snr)
        simulate(settings, folder, force=True, progress=False)
    data = Data(name, folder, snr, n)
    if not data.input.exists():
        blocks = starfile.read(data.truth, always_dict=True)
        table = blocks["particles"]
        table = table.drop(
            columns=[c for c in table.columns if c.startswith(("rlnAngle", "rlnOrigin"))]
        )
        table["rlnImageName"] = [  # absolute: each tool resolves names its own way
            f"{name.split('@')[0]}@{folder / name.split('@')[1]}" for name in table["rlnImageName"]
        ]
        data.input.parent.mkdir(parents=True, exist_ok=True)
        starfile.write({"optics": blocks["optics"], "particles": table}, data.input)
    return data


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One method on one dataset, as one process."""

    name: str
    method: str
    family: str
    data: Data
    command: list
    note: str = ""
    needs: str | None = None  # a peer environment
    prepare: list[tuple[list, Path]] = field(default_factory=list)  # (command, its output):
    # each run first, untimed, unless its output is there
    capped: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return COMPARE / "runs" / self.data.name / self.name

    @property
    def done(self) -> Path:
        return self.folder / "done.json"


def _threads_env(threads: int) -> dict:
    env = dict(os.environ)
    for library in ("OMP", "OPENBLAS", "MKL", "NUMEXPR"):
        env[f"{library}_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _excluded(run: Run) -> float:
    """Seconds of a cryohydra run spent scoring its model against the truth (not its work)."""
    log = run.folder / "out" / LOG_FILE
    if run.family != "cryohydra" or not log.exists():
        return 0.0
    lines = log.read_text().splitlines()
    return sum(json.loads(x).get("evaluation_seconds", 0.0) for x in lines if x.endswith("}"))


def _peak_rss_mb(pid: int) -> float | None:
    """The process's own peak RSS so far (``VmHWM``: since its ``exec``, so not counting the
    memory of the forked parent, which ``wait4``'s ``ru_maxrss`` would include)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class Lanes:
    """Up to ``lanes`` processes at once; each one's wall time, CPU time and peak RSS from
    ``wait4`` (peak RSS from ``/proc``, sampled every poll), and a SIGTERM (then SIGKILL) at
    the cap."""

    def __init__(self, lanes: int, threads: int, cap_s: float):
        self.lanes, self.threads, self.cap_s = lanes, threads, cap_s
        self.running: dict[int, tuple[Run, subprocess.Popen, float, object]] = {}

    def start(self, run: Run) -> None:
        if run.folder.exists():
            shutil.rmtree(run.folder)  # a run cut in the middle starts over
        run.folder.mkdir(parents=True)
        env = _threads_env(self.threads)
        log = open(run.folder / "stdout.log", "w")
        for command, output in run.prepare:
            if not output.exists():
                subprocess.run(
                    [str(c) for c in command], stdout=log, stderr=subprocess.STDOUT, env=env
                )
        log.write(" ".join(str(c) for c in run.command) + "\n")
        log.flush()
        began = time.time()
        process = subprocess.Popen(
            [str(c) for c in run.command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run.folder,
            start_new_session=True,
        )
        self.running[process.pid] = (run, process, began, log)
        print(f"[{time.strftime('%H:%M:%S')}] started {run.data.name}/{run.name}", flush=True)

    def _stop(self, process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def poll(self) -> list[Run]:
        finished = []
        for pid, (run, process, began, log) in list(self.running.items()):
            peak = _peak_rss_mb(pid)  # before reaping: a zombie has no memory left to read
            if peak is not None:
                run.extra["peak_rss_mb"] = max(peak, run.extra.get("peak_rss_mb", 0.0))
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            elapsed = time.time() - began
            if waited == 0:
                if run.capped and self.cap_s and elapsed - _excluded(run) > self.cap_s:
                    if not run.extra.get("stopped_at"):
                        run.extra["stopped_at"] = elapsed
                        self._stop(process)
                    elif elapsed > run.extra["stopped_at"] + 60:
                        os.killpg(process.pid, signal.SIGKILL)
                continue
            process.returncode = os.waitstatus_to_exitcode(status)
            log.close()
            record = {
                "name": run.name,
                "method": run.method,
                "family": run.family,
                "dataset": run.data.name,
                "command": " ".join(str(c) for c in run.command),
                "note": run.note,
                "started": began,
                "wall_seconds": elapsed,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": run.extra.get("peak_rss_mb", math.nan),
                "returncode": process.returncode,
                "stopped_at_cap": bool(run.extra.get("stopped_at")),
                "threads": self.threads,
                "commit": commit(),
            }
            run.done.write_text(json.dumps(record, indent=2) + "\n")
            del self.running[pid]
            print(
                f"[{time.strftime('%H:%M:%S')}] finished {run.data.name}/{run.name}: "
                f"{elapsed:.0f} s, rc {process.returncode}"
                + (" (stopped at the cap)" if record["stopped_at_cap"] else ""),
                flush=True,
            )
            finished.append(run)
        return finished

    def run_all(self, runs: list[Run]) -> None:
        queue = [r for r in runs if not r.done.exists()]
        while queue or self.running:
            while queue and len(self.running) < self.lanes:
                self.start(queue.pop(0))
            self.poll()
            time.sleep(1)


def cryohydra_runs(data: Data, args, modes: list[str], curve: bool = True) -> list[Run]:
    """``curve``: score the model against the truth after every epoch (timed apart)."""
    python = sys.executable
    scored = ["--reference-map", data.ground_truth] if curve else []
    runs = []
    for mode in modes:
        runs.append(
            Run(
                name=mode,
                method=f"cryohydra {mode}",
                family="cryohydra",
                data=data,
                command=[
                    python, "-m", "cryohydra", "reconstruct", data.input, "-o", "out",
                    "--mode", mode, "--epochs", args.epochs, "--no-shifts", "--seed", 0,
                    *scored, "--quiet",
                ],
                note=f"{args.epochs} epochs, 7 heads, shifts not estimated",
            )
        )  # fmt: skip
    return runs


def orient_run(data: Data, args) -> Run:
    return Run(
        name="orient",
        method="cryohydra orient",
        family="cryohydra",
        data=data,
        command=[
            sys.executable, ROOT / "compare_orient.py", MODEL, data.input, "out",
            "--train", args.orient_train, "--epochs", args.orient_epochs, "--snr", data.snr,
            "--box", args.box,
        ],
        note=f"network trained on {args.orient_train:,} simulated images of the same atomic "
        f"model, {args.orient_epochs} epochs (time included)",
        capped=False,
    )  # fmt: skip


def known_pose_run(data: Data) -> Run:
    return Run(
        name="known-poses",
        method="known poses (ceiling)",
        family="ceiling",
        data=data,
        command=[
            sys.executable, "-m", "cryohydra", "backproject", data.truth, "-o", "out", "--quiet",
        ],
        note="cryohydra backproject with the true poses",
        capped=False,
    )  # fmt: skip


def cryodrgn_runs(data: Data, args) -> list[Run]:
    """cryoDRGN 4.3.1 on its default schedules. Departures, all forced or facts of the data:
    one thread and no loader processes (``--max-threads 1 --num-workers 0``: one CPU thread
    per method); ``--no-amp`` (its mixed precision is CUDA's); ``--no-trans --t-extent 0``
    (``--t-ngrid 1`` for ``abinit_homo_old``): the particles are centred, as cryohydra is told
    with ``--no-shifts``; ``--checkpoint 1`` (``abinit``'s default is 5) so that every
    epoch leaves a map for the resolution-against-time curve; ``--no-analysis``; seed 0.
    ``--drgn-epochs`` / ``--drgn-search-epochs`` (default: its own, 30 and 3) only if given."""
    drgn = peer_python("cryodrgn").parent / "cryodrgn"
    parse = ([drgn, "parse_ctf_star", data.input, "-o", data.ctf_pkl], data.ctf_pkl)
    common = ["--num-workers", 0, "--max-threads", 1, "--no-amp", "--seed", 0]
    search = ["--t-extent", 0, "--no-trans"]
    abinit = [drgn, "abinit", data.input, "--ctf", data.ctf_pkl, "-o", "out", "--zdim", 0]
    schedule = ["--checkpoint", 1, "--no-analysis"]
    if args.drgn_epochs is not None:
        schedule += ["-n", args.drgn_epochs]
    if args.drgn_search_epochs is not None:
        schedule += ["--epochs-pose-search", args.drgn_search_epochs]
    old = [drgn, "abinit_homo_old", data.input, "--ctf", data.ctf_pkl, "-o", "out"]
    old += ["--t-extent", 0, "--t-ngrid", 1, "--no-amp", "--seed", 0]
    if args.drgn_old_epochs is not None:
        old += ["-n", args.drgn_old_epochs]
    epochs = args.drgn_epochs or 30
    searched = args.drgn_search_epochs or 3
    described = (
        f"{searched} pose-search epochs then SGD on the pose table, {epochs} epochs in all "
        f"({'its default' if args.drgn_epochs is None else 'not its default'}); no shifts"
    )
    old_epochs = args.drgn_old_epochs or 30
    return [
        Run(
            name="cryodrgn-explicit",
            method="cryoDRGN abinit --zdim 0 --explicit-volume",
            family="cryodrgn",
            data=data,
            command=[*abinit, "--explicit-volume", *schedule, *search, *common],
            note=described,
            needs="cryodrgn",
            prepare=[parse],
        ),
        Run(
            name="cryodrgn-mlp",
            method="cryoDRGN abinit --zdim 0 (neural volume)",
            family="cryodrgn",
            data=data,
            command=[*abinit, *schedule, *search, *common],
            note=described,
            needs="cryodrgn",
            prepare=[parse],
        ),
        Run(
            name="cryodrgn-homo-old",
            method="cryoDRGN abinit_homo_old",
            family="cryodrgn",
            data=data,
            command=old,
            note=f"{old_epochs} epochs ("
            f"{'its default' if args.drgn_old_epochs is None else 'not its default'}), pose "
            "search every 5 (its default); no shifts",
            needs="cryodrgn",
            prepare=[parse],
        ),
    ]


def cryodrgn_backproject_run(data: Data) -> Run:
    """The second ceiling: cryoDRGN's ``backproject_voxel`` from the true poses (its
    defaults: CTF multiplied, Wiener weight 1)."""
    drgn = peer_python("cryodrgn").parent / "cryodrgn"
    poses = data.ctf_pkl.with_name("true_poses.pkl")
    return Run(
        name="cryodrgn-backproject",
        method="known poses, cryoDRGN backproject_voxel (ceiling)",
        family="ceiling",
        data=data,
        command=[
            drgn, "backproject_voxel", data.input, "--poses", poses, "--ctf", data.ctf_pkl,
            "-o", "out",
        ],
        note="cryoDRGN backproject_voxel with the true poses",
        needs="cryodrgn",
        prepare=[
            ([drgn, "parse_ctf_star", data.input, "-o", data.ctf_pkl], data.ctf_pkl),
            ([drgn, "parse_pose_star", data.truth, "-o", poses], poses),
        ],
        capped=False,
    )  # fmt: skip


def aspire_runs(data: Data, args, class_averages: bool = False) -> list[Run]:
    """ASPIRE common lines on the first ``--aspire-images`` raw images (the SNR sweep), or
    with ``class_averages`` its route for noisy data: class averages of every particle (its
    defaults), common lines on them, each particle posed from its class
    (``peers/aspire_classavg_run.py``), capped like the others."""
    runs = []
    for method, label in (("sync", "CLSyncVoting"), ("irls", "CommonlineIRLS")):
        if class_averages:
            script, options = "aspire_classavg_run.py", []
            name, title = f"aspire-classavg-{method}", f"class averages + {label}"
            note = (
                "all particles: RIRClass2D class averages at 32 px (its defaults, the 1000 "
                "first in its ranking, 10 images each), common lines on them, each particle "
                "posed from its class; map at full size"
            )
        else:
            script, name, title = "aspire_run.py", f"aspire-{method}", label
            options = ["--images", args.aspire_images, "--cl-box", args.aspire_cl_box]
            note = (
                f"first {args.aspire_images} particles; common lines at "
                f"{args.aspire_cl_box} px, map at 64 px"
            )
        command = [peer_python("aspire"), ROOT / "peers" / script, data.input, "out"]
        runs.append(
            Run(
                name=name,
                method=f"ASPIRE {title} + mean volume",
                family="aspire",
                data=data,
                command=[*command, "--method", method, *options],
                note=note,
                needs="aspire",
                capped=class_averages,
            )
        )
    return runs


# ----------------------------------------------------------------------------- evaluation


def _rotation_error(data: Data, rotations: np.ndarray, chosen: np.ndarray | None = None) -> float:
    """Median error of the first ``len(rotations)`` particles' rotations (no shifts); only of
    the ``chosen`` ones (a boolean mask) if given."""
    true_rot = read_particles(data.truth).require_poses()[0][: len(rotations)]
    if chosen is not None:
        rotations, true_rot = rotations[chosen], true_rot[chosen]
    zeros = np.zeros((len(rotations), 2))
    errors = pose_errors(rotations, true_rot, zeros, zeros, symmetry=SYMMETRY[MODEL]())
    return float(errors.median_rotation_error_deg)


def _map_resolution(data: Data, path: Path) -> float:
    volume, pixel_size_a = read_map(path)
    return float(reference_fsc(volume, data.ground_truth, pixel_size_a))


def _spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, spread evenly, the last always kept."""
    if len(items) <= n:
        return items
    picks = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in picks]


def _cryohydra(run: Run, record: dict) -> dict:
    out = run.folder / "out"
    log = read_log(out / LOG_FILE)
    evaluation = sum(r.get("evaluation_seconds", 0.0) for r in log)
    curve, clock = [], 0.0
    summary_path = out / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    setup = max(0.0, record["wall_seconds"] - summary.get("total_seconds", record["wall_seconds"]))
    for entry in log:  # time: process start + setup + epochs so far, evaluation excluded
        clock += entry["seconds"]
        if "model_fsc_vs_reference_a_0.5" in entry:
            curve.append([setup + clock, entry["model_fsc_vs_reference_a_0.5"]])
    result = {"evaluation_seconds_excluded": evaluation, "epochs_run": len(log)}
    if (out / MAP_FILE).exists():
        result["resolution_a"] = _map_resolution(run.data, out / MAP_FILE)
        rotations, _ = read_particles(out / PARTICLES_FILE).require_poses()
        result["median_rotation_error_deg"] = _rotation_error(run.data, rotations)
        curve.append([record["wall_seconds"] - evaluation, result["resolution_a"]])
    elif curve:  # stopped at the cap before the final map: its last model
        result["resolution_a"] = curve[-1][1]
    result["curve"] = curve
    result["wall_seconds"] = record["wall_seconds"] - evaluation
    return result


def _orient(run: Run, record: dict) -> dict:
    out = run.folder / "out"
    rotations, _ = read_particles(out / "poses.star").require_poses()
    resolution = _map_resolution(run.data, out / MAP_FILE)
    return {
        "resolution_a": resolution,
        "median_rotation_error_deg": _rotation_error(run.data, rotations),
        "curve": [[record["wall_seconds"], resolution]],
        "timings": json.loads((out / "orient.json").read_text()),
    }


def _known(run: Run, record: dict) -> dict:
    out = run.folder / "out"
    path = out / MAP_FILE if (out / MAP_FILE).exists() else out / "backproject.mrc"  # cryoDRGN's
    resolution = _map_resolution(run.data, path)
    return {"resolution_a": resolution, "median_rotation_error_deg": 0.0}


def _log_text(out: Path) -> str:
    log = out / "run.log"
    return log.read_text(errors="replace") if log.exists() else ""


def _cryodrgn(run: Run, record: dict) -> dict:
    out = run.folder / "out"
    homo_old = run.name.endswith("homo-old")
    maps = sorted(out.glob("reconstruct.*.mrc"), key=lambda p: int(p.name.split(".")[1]))
    if homo_old and (out / "reconstruct.mrc").exists():
        maps.append(out / "reconstruct.mrc")
    maps = [m for m in maps if not m.name.startswith("reconstruct.0.")]  # before any search
    curve = []
    for path in _spread(maps, MAX_CURVE_MAPS):
        curve.append([path.stat().st_mtime - record["started"], _map_resolution(run.data, path)])
    result = {"curve": curve, "epochs_written": len(maps)}
    if not maps:
        stage = (
            "its first pose search"
            if "pose search" in _log_text(out).lower()
            else "its pretraining"
        )
        result["outcome"] = f"no map: still in {stage} at the cap"
        return result
    result["resolution_a"] = curve[-1][1]
    pose_file = maps[-1].with_name(maps[-1].name.replace("reconstruct", "pose")[:-4] + ".pkl")
    if pose_file.exists():
        with open(pose_file, "rb") as f:
            poses = pickle.load(f)
        rotations = poses[0] if isinstance(poses, tuple) else poses
        result["median_rotation_error_deg"] = _rotation_error(run.data, np.asarray(rotations))
    result["map"] = str(maps[-1].relative_to(ROOT.parent))
    return result


def _aspire(run: Run, record: dict) -> dict:
    out = run.folder / "out"
    if not (out / MAP_FILE).exists():
        return {"curve": [], "outcome": "no map at the cap"}
    resolution = _map_resolution(run.data, out / MAP_FILE)
    rotations = np.load(out / "rotations.npy")
    timings = json.loads((out / "aspire.json").read_text())
    result = {
        "resolution_a": resolution,
        "median_rotation_error_deg": _rotation_error(run.data, rotations),
        "curve": [[record["wall_seconds"], resolution]],
        "timings": timings,
    }
    if timings.get("unassigned"):  # in no kept class: no pose (scored as the identity)
        posed = np.ones(len(rotations), dtype=bool)
        posed[np.load(out / "classes.npz")["owner"] < 0] = False
        result["posed_fraction"] = float(posed.mean())
        result["median_rotation_error_posed_deg"] = _rotation_error(run.data, rotations, posed)
        result["outcome"] = (
            f"{posed.mean():.0%} of the particles in a kept class; the others have no pose "
            f"(median error {result['median_rotation_error_posed_deg']:.1f} deg on the posed)"
        )
    return result


EVALUATE = {
    "cryohydra": _cryohydra,
    "ceiling": _known,
    "cryodrgn": _cryodrgn,
    "aspire": _aspire,
}


def evaluate(run: Run) -> dict:
    """The run's record and scores (kept in ``evaluation.json``: scored once)."""
    record = json.loads(run.done.read_text())
    cached = run.folder / "evaluation.json"
    if cached.exists() and cached.stat().st_mtime >= run.done.stat().st_mtime:
        measured = json.loads(cached.read_text())
    else:
        evaluator = _orient if run.name == "orient" else EVALUATE[run.family]
        try:
            measured = evaluator(run, record)
        except (OSError, ValueError, KeyError) as error:  # a run that left no usable output
            measured = {"curve": [], "error": f"{type(error).__name__}: {error}"}
        cached.write_text(json.dumps(measured, indent=2) + "\n")
    # the scoring inside a cryohydra run is single-threaded work: out of its CPU time too
    cpu = record["cpu_seconds"] - measured.get("evaluation_seconds_excluded", 0.0)
    return {**record, **measured, "cpu_seconds": cpu}


# ----------------------------------------------------------------------------- outputs


def _cell(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def markdown(title: str, entries: list[dict], args, data_desc: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Written by `benchmarks/compare.py` on {machine()['date']} ({os.cpu_count()} CPU cores, "
        f"{machine()['platform']}, no GPU). {data_desc} Each method ran as its own process on "
        f"one CPU thread, {args.lanes} at a time, stopped at {args.cap_minutes:g} min of wall "
        "time unless marked otherwise. Resolution: FSC 0.5 of the final map against the "
        "true map after aligning the two (hand included); rotation error: median after global "
        "alignment, modulo HSP90's two-fold. cryohydra's wall and CPU times leave out the "
        "scoring of its model against the truth after each epoch (done for the curve only). "
        "Resolution against time: the `.png` beside this file.",
        "",
        "| method | what was run | FSC 0.5 vs truth (Å) | median rotation error (°) | wall (min) "
        "| CPU (min) | peak RSS (MB) | stopped at cap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['method']} | {e['note']}{'; ' + e['outcome'] if e.get('outcome') else ''} "
            f"| {_cell(e.get('resolution_a'), 2)} "
            f"| {_cell(e.get('median_rotation_error_deg'), 2)} | {_cell(e['wall_seconds'] / 60)} "
            f"| {_cell(e['cpu_seconds'] / 60)} | {_cell(e['peak_rss_mb'], 0)} "
            f"| {'yes' if e['stopped_at_cap'] else 'no'} |"
        )
    problems = [e for e in entries if e.get("error") or e["returncode"] not in (0, -15, 143)]
    if problems:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {e['method']}: rc {e['returncode']} {e.get('error', '')}" for e in problems]
    return "\n".join(lines) + "\n"


def plot(entries: list[dict], path: Path, title: str, cap_minutes: float = 0.0) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for e in entries:
        curve = e.get("curve") or []
        if e["family"] == "ceiling" and e.get("resolution_a"):
            ax.axhline(e["resolution_a"], color="k", ls=":", label=f"{e['method']}")
            continue
        if not curve:
            continue
        t, r = zip(*curve, strict=True)
        style = "o-" if len(curve) > 1 else "s"
        ax.plot(np.array(t) / 60, r, style, label=e["method"], ms=5)
    if cap_minutes:
        ax.axvline(cap_minutes, color="grey", ls="--", lw=1, label="the cap")
    ax.set_xlabel("wall time (min, one CPU thread)")
    ax.set_ylabel("FSC 0.5 vs truth (Å)")
    ax.invert_yaxis()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_markdown(entries: list[dict], args) -> str:
    snrs = sorted({e["snr"] for e in entries}, reverse=True)
    methods = list(dict.fromkeys(e["method"] for e in entries))
    lines = [
        "# Where each method breaks: SNR sweep",
        "",
        f"Written by `benchmarks/compare.py` on {machine()['date']}. HSP90, 64 px, CTF, "
        f"{args.sweep_particles:,} particles per SNR (ASPIRE: the first {args.aspire_images}, "
        f"common lines at {args.aspire_cl_box} px). Cells: median rotation error (°) / "
        "FSC 0.5 vs truth (Å) / wall (min).",
        "",
        "| method | " + " | ".join(f"SNR {s:g}" for s in snrs) + " |",
        "|---|" + "---|" * len(snrs),
    ]
    for method in methods:
        cells = []
        for snr in snrs:
            found = [e for e in entries if e["method"] == method and e["snr"] == snr]
            if not found:
                cells.append("-")
                continue
            e = found[0]
            cells.append(
                f"{_cell(e.get('median_rotation_error_deg'))}° / {_cell(e.get('resolution_a'))} Å"
                f" / {_cell(e['wall_seconds'] / 60)}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(entries: list[dict], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(e["method"] for e in entries):
        found = sorted((e for e in entries if e["method"] == method), key=lambda e: e["snr"])
        snr = [e["snr"] for e in found]
        errors = [e.get("median_rotation_error_deg", np.nan) for e in found]
        left.plot(snr, errors, "o-", label=method)
        right.plot(snr, [e.get("resolution_a", np.nan) for e in found], "o-", label=method)
    for axis, label in ((left, "median rotation error (°)"), (right, "FSC 0.5 vs truth (Å)")):
        axis.set_xscale("log")
        axis.set_xlabel("SNR")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    right.invert_yaxis()
    fig.suptitle("HSP90, 64 px: accuracy against SNR", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=10_000, help="main set (HSP90, SNR 0.1)")
    parser.add_argument("--box", type=int, default=64, help="main set's box (64 or 128 px)")
    parser.add_argument("--cap-minutes", type=float, default=60.0, help="0: no cap")
    parser.add_argument("--lanes", type=int, default=2, help="processes at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--epochs", type=int, default=20, help="cryohydra reconstruct")
    parser.add_argument("--orient-train", type=int, default=5000)
    parser.add_argument("--orient-epochs", type=int, default=20)
    parser.add_argument("--drgn-epochs", type=int, default=None, help="abinit (default: its 30)")
    parser.add_argument("--drgn-search-epochs", type=int, default=None, help="(default: its 3)")
    parser.add_argument("--drgn-old-epochs", type=int, default=None, help="abinit_homo_old (30)")
    parser.add_argument("--aspire-images", type=int, default=200)
    parser.add_argument("--aspire-cl-box", type=int, default=32)
    parser.add_argument(
        "--sweep-snrs", type=float, nargs="*", default=[], help="e.g. 10 3 1 0.1 (64 px)"
    )
    parser.add_argument("--sweep-particles", type=int, default=1000)
    parser.add_argument(
        "--all-modes", action="store_true", help="also cryohydra amortized, cryoAI and orient"
    )
    parser.add_argument("--only", nargs="*", default=None, help="run names to run")
    parser.add_argument("--rerun", nargs="*", default=[], help="run names to run again")
    parser.add_argument(
        "--report", action="store_true", help="only score the finished runs and write the tables"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: an end-to-end check in minutes"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.particles, args.cap_minutes, args.epochs = 300, 3.0, 2
        args.orient_train, args.orient_epochs = 300, 1
        args.drgn_epochs, args.drgn_search_epochs, args.drgn_old_epochs = 2, 1, 2
        args.aspire_images, args.sweep_snrs, args.sweep_particles = 50, [3], 300
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    tag = "quick" if args.quick else ""
    for peer in PINS:
        ensure_peer(peer)
    main_data = make_data(0.1, args.particles, args.box)
    sweep = [make_data(snr, args.sweep_particles) for snr in args.sweep_snrs]
    drgn = cryodrgn_runs(main_data, args)
    semi = cryohydra_runs(main_data, args, ["semi-amortized"])
    aspire = aspire_runs(main_data, args)
    runs = [  # the longest first, so that the two lanes end together
        drgn[0],
        known_pose_run(main_data),
        cryodrgn_backproject_run(main_data),
        *semi,
        *drgn[1:],
        *aspire_runs(main_data, args, class_averages=True),
    ]
    if args.all_modes:  # cryohydra's other modes and orient
        runs += [
            *cryohydra_runs(main_data, args, ["amortized", "cryoai"]),
            orient_run(main_data, args),
        ]
    sweep_runs = []
    for data in sweep:
        if data == main_data:  # the main set is the sweep's point at its SNR
            sweep_runs += [*semi, *aspire]
            continue
        sweep_runs += [
            *cryohydra_runs(data, args, ["semi-amortized"], curve=False),
            *aspire_runs(data, args),
        ]
    everything = runs + [r for r in sweep_runs if r not in runs]
    if args.only is not None:
        everything = [r for r in everything if r.name in args.only]
    for run in everything:
        if run.name in args.rerun and run.done.exists():
            run.done.unlink()

    def write() -> None:
        main_entries = [evaluate(r) for r in runs if r.done.exists()]
        stem = f"compare-{main_data.name}{'-' + tag if tag else ''}"
        description = (
            f"Dataset {main_data.name}: HSP90 (C2), {args.box} px at {160 / args.box:g} Å/px, "
            f"{args.particles:,} "
            "particles, SNR 0.1, EMPIAR-10028 CTF, uniform orientations, centred."
        )
        payload = {"machine": machine(), "settings": vars(args), "runs": main_entries}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(
            markdown("cryohydra, cryoDRGN and ASPIRE side by side", main_entries, args, description)
        )
        title = f"{main_data.name}: resolution against time"
        plot(main_entries, RESULTS / f"{stem}.png", title, args.cap_minutes)
        sweep_entries = []
        for r in sweep_runs:
            if r.done.exists():
                sweep_entries.append({**evaluate(r), "snr": r.data.snr})
        if sweep_entries:
            stem = f"compare-sweep{'-' + tag if tag else ''}"
            payload = {"machine": machine(), "settings": vars(args), "runs": sweep_entries}
            (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
            (RESULTS / f"{stem}.md").write_text(sweep_markdown(sweep_entries, args))
            plot_sweep(sweep_entries, RESULTS / f"{stem}.png")

    if not args.report:
        Lanes(args.lanes, args.threads, args.cap_minutes * 60).run_all(everything)
    write()
    print(f"Written: {RESULTS}/compare-*.md, .json, .png", flush=True)


if __name__ == "__main__":
    main()
