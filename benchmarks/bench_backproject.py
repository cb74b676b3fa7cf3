"""Known-pose reconstruction against cryoDRGN's ``backproject_voxel``, and its throughput.

Sweep (``--sweep``): HSP90 (the standard model, 2.5 Å/px at 64 px, same field of view at every
box) at 32 / 64 / 128 px, 1,000 and 10,000 particles, SNR 0.1 and 1, the EMPIAR-10028 CTF
table, centred and with 3 Å shifts: 24 sets. On each, ``cryohydra backproject`` and cryoDRGN
4.3.1's ``backproject_voxel`` (its pinned environment from ``compare.py``; poses and CTF
through its own ``parse_pose_star`` / ``parse_ctf_star``) each run as one process on the same
STAR file, and every map is scored by the same code:

- FSC 0.5 and 0.143 of the full map against the true map (standard soft mask);
- the gold-standard resolution each tool reports (cryohydra: masked half-map FSC 0.143, as
  ``backproject --half-maps`` prints; cryoDRGN: the "res @ FSC=0.143" of its log), and the
  masked half-map FSC of both scored by our code;
- whether the half-maps' claim is honest: the half-map FSC predicts the full map's FSC
  against the truth as ``sqrt(2 F / (1 + F))``, so its 0.143 crossing should be where the
  FSC against the truth crosses 0.5 (``gold_vs_truth_ratio`` = gold 0.143 Å / truth 0.5 Å);
- particles/s (cryohydra: timed inside its process around the reconstruction; cryoDRGN: from
  its own log's timestamps, first line to the FSC, so its imports are left out; one-second
  resolution), wall time of the whole process and its peak RSS (``/usr/bin/time``).

Throughput (``--throughput``): ``reconstruct_known_poses`` in-process on 10,000 particles at
64, 128 and 256 px (HSP90, SNR 0.1, CTF, shifts), three repeats each: mean and median
particles/s, seconds, peak RSS of a fresh process.

Results go to ``benchmarks/results/backproject.json`` (a row per set and tool, written as it
finishes, each with the commit of ``src/`` and ``benchmarks/``; a row already there is not
run again) and ``backproject.md`` (the tables, written from the JSON).

  python benchmarks/bench_backproject.py --sweep --throughput
  python benchmarks/bench_backproject.py --report        # rewrite the tables only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import mrcfile
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, commit, machine  # noqa: E402
from compare import ensure_peer, peer_python  # noqa: E402
from cryohydra.io.mrc import write_map  # noqa: E402
from cryohydra.io.star import read_star  # noqa: E402
from cryohydra.metrics.fsc import FSCCurve, masked_fsc  # noqa: E402
from cryohydra.reconstruct.backproject import reconstruct_known_poses  # noqa: E402
from cryohydra.simulate import simulate  # noqa: E402
from datasets import WORK, all_standard, config  # noqa: E402

NAME = "backproject"
BOXES = (32, 64, 128)
COUNTS = (1_000, 10_000)
SNRS = (0.1, 1.0)
THROUGHPUT_BOXES = (64, 128, 256)
REPEATS = 3
ROOT = WORK / "backproject"


# ----------------------------------------------------------------------------- data


def dataset(box: int, n: int, snr: float, shifted: bool) -> Path:
    """The simulated set's folder, simulated first if it is not there."""
    name = f"hsp90_{box}px_{'shifted' if shifted else 'centred'}_snr{snr:g}_{n}"
    folder = ROOT / "datasets" / name
    if not (folder / "simulation.json").exists():
        settings = dataclasses.replace(config("hsp90", shifted, n, box), snr=snr)
        simulate(settings, folder, force=True, progress=False)
    return folder


# ----------------------------------------------------------------------------- runs


def _timed(command: list, log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; its wall seconds and peak RSS (MB)."""
    with log.open("w") as out:
        subprocess.run(["/usr/bin/time", "-v", *map(str, command)], stdout=out, stderr=out)
    text = log.read_text()
    if "Exit status: 0" not in text:
        raise RuntimeError(f"{command[0]} failed, see {log}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = (float(g or 0) for g in clock.groups())
    return {"wall_s": hours * 3600 + minutes * 60 + seconds, "peak_rss_mb": rss_kb / 1024}


def run_cryohydra(folder: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--worker", folder / "particles.star", out]
    record = _timed(command, out / "time.log")
    record.update(json.loads((out / "worker.json").read_text()))
    # What `backproject --half-maps` prints: the masked half-map FSC, filled in by score().
    return record


def worker(star: Path, out: Path) -> None:
    """In a process of its own: the reconstruction, timed, and its maps written."""
    particles = read_star(star)
    start = time.perf_counter()
    result = reconstruct_known_poses(particles, progress=False)
    seconds = time.perf_counter() - start
    pixel = result.pixel_size_a
    for name, volume in (
        ("map", result.full),
        ("half_map_a", result.half_a),
        ("half_map_b", result.half_b),
    ):
        write_map(out / f"{name}.mrc", volume.cpu().numpy(), pixel, force=True)
    (out / "worker.json").write_text(
        json.dumps(
            {
                "seconds": seconds,
                "particles_per_s": len(particles) / seconds,
                "pixel_size_a": pixel,
                "peak_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def _log_seconds(log: str) -> float:
    """Seconds from cryoDRGN's first log line to its last (timestamps to the second)."""
    stamps = re.findall(r"\((\d\d-\w\w\w-\d{4} \d\d:\d\d:\d\d)\)", log)
    first, last = (datetime.strptime(s, "%d-%b-%Y %H:%M:%S") for s in (stamps[0], stamps[-1]))
    return max((last - first).total_seconds(), 1.0)


def run_cryodrgn(star: Path, out: Path, n: int) -> dict:
    """cryoDRGN's ``backproject_voxel`` on ``star`` (``n`` rows); maps linked into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    drgn = peer_python("cryodrgn").parent / "cryodrgn"
    for command, pkl in (("parse_ctf_star", "ctf.pkl"), ("parse_pose_star", "pose.pkl")):
        subprocess.run([drgn, command, star, "-o", out / pkl], check=True, capture_output=True)
    record = _timed(
        [
            drgn,
            "backproject_voxel",
            star,
            "--ctf",
            out / "ctf.pkl",
            "--poses",
            out / "pose.pkl",
            "-o",
            out / "maps",
        ],
        out / "time.log",
    )
    log = (out / "time.log").read_text()
    record["seconds"] = _log_seconds(log)
    record["particles_per_s"] = n / record["seconds"]
    record["reported_gold_a"] = float(re.search(r"res @ FSC=0.143: ([\d.]+) ang", log).group(1))
    maps = out / "maps"
    for ours, theirs in (
        ("map", "backproject"),
        ("half_map_a", "half_map_a"),
        ("half_map_b", "half_map_b"),
    ):
        (out / f"{ours}.mrc").unlink(missing_ok=True)
        (out / f"{ours}.mrc").symlink_to(maps / f"{theirs}.mrc")
    return record


def _read(path: Path) -> torch.Tensor:
    return torch.from_numpy(mrcfile.read(path).astype(np.float32))


def score(folder: Path, out: Path, pixel_size_a: float) -> dict:
    truth = _read(folder / "ground_truth.mrc")
    full = _read(out / "map.mrc")
    versus: FSCCurve = masked_fsc(full, truth, pixel_size_a)
    gold = masked_fsc(_read(out / "half_map_a.mrc"), _read(out / "half_map_b.mrc"), pixel_size_a)
    truth_05 = versus.resolution_a(0.5)
    gold_0143 = gold.resolution_a(0.143)
    return {
        "truth_fsc05_a": truth_05,
        "truth_fsc0143_a": versus.resolution_a(0.143),
        "gold_fsc0143_a": gold_0143,
        "gold_vs_truth_ratio": gold_0143 / truth_05,
        "nyquist_a": 2 * pixel_size_a,
    }


# ----------------------------------------------------------------------------- results


def _load() -> dict:
    path = RESULTS / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.pop("machine", None)
    for key in ("sweep", "throughput", "known_pose"):
        results.setdefault(key, [])
    # Rows of the code before the sweep (no mean/median, no commit) are not comparable.
    results["throughput"] = [r for r in results["throughput"] if "commit" in r]
    results["known_pose"] = [r for r in results["known_pose"] if "commit" in r]
    return results


def _save(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(
        json.dumps({"machine": machine(), **results}, indent=2) + "\n"
    )
    (RESULTS / f"{NAME}.md").write_text(markdown(results))


def sweep(results: dict, boxes: tuple[int, ...] = BOXES) -> None:
    done = {(r["dataset"], r["tool"]) for r in results["sweep"]}
    ensure_peer("cryodrgn")
    for box in boxes:
        for n in COUNTS:
            for snr in SNRS:
                for shifted in (False, True):
                    folder = dataset(box, n, snr, shifted)
                    for tool in ("cryohydra", "cryodrgn"):
                        if (folder.name, tool) in done:
                            continue
                        out = ROOT / "runs" / folder.name / tool
                        simulation = json.loads((folder / "simulation.json").read_text())
                        pixel = float(simulation["pixel_size_a"])
                        if tool == "cryohydra":
                            record = run_cryohydra(folder, out)
                        else:
                            record = run_cryodrgn(folder / "particles.star", out, n)
                        row = {
                            "dataset": folder.name,
                            "tool": tool,
                            "box": box,
                            "n_particles": n,
                            "snr": snr,
                            "shifted": shifted,
                            "commit": commit(),
                            **score(folder, out, pixel),
                            **record,
                        }
                        row.setdefault("reported_gold_a", row["gold_fsc0143_a"])
                        results["sweep"].append(row)
                        _save(results)
                        print(
                            json.dumps(
                                {
                                    k: row[k]
                                    for k in (
                                        "dataset",
                                        "tool",
                                        "truth_fsc05_a",
                                        "gold_fsc0143_a",
                                        "particles_per_s",
                                    )
                                }
                            ),
                            flush=True,
                        )


def throughput_worker(box: int) -> dict:
    """In a fresh process: REPEATS timed reconstructions of 10,000 particles at ``box``."""
    particles = read_star(dataset(box, 10_000, 0.1, True) / "particles.star")
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        reconstruct_known_poses(particles, progress=False)
        seconds.append(time.perf_counter() - start)
    rates = [len(particles) / s for s in seconds]
    return {
        "box": box,
        "n_particles": len(particles),
        "repeats": REPEATS,
        "seconds": seconds,
        "particles_per_s_mean": statistics.mean(rates),
        "particles_per_s_median": statistics.median(rates),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "commit": commit(),
    }


def throughput(results: dict) -> None:
    done = {r["box"] for r in results["throughput"]}
    for box in THROUGHPUT_BOXES:
        if box in done:
            continue
        dataset(box, 10_000, 0.1, True)  # simulated here, outside the timed process
        out = subprocess.run(
            [sys.executable, __file__, "--throughput-worker", str(box)],
            check=True,
            capture_output=True,
            text=True,
        )
        results["throughput"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        _save(results)
        print(results["throughput"][-1], flush=True)


def known_pose(results: dict) -> None:
    """The maps from the true poses of the four standard sets: the ceilings that
    ``bench_reconstruct.py`` compares ab initio with."""
    done = {r["dataset"] for r in results["known_pose"]}
    for data in all_standard():
        if data.name in done:
            continue
        particles = read_star(data.star)
        start = time.perf_counter()
        result = reconstruct_known_poses(particles, progress=False)
        seconds = time.perf_counter() - start
        pixel = result.pixel_size_a
        versus = masked_fsc(result.full.cpu(), _read(data.ground_truth), pixel)
        gold = masked_fsc(result.half_a.cpu(), result.half_b.cpu(), pixel)
        out = WORK / "known_pose" / data.name
        write_map(out / "map.mrc", result.full.cpu().numpy(), pixel, force=True)
        results["known_pose"].append(
            {
                "dataset": data.name,
                "n_particles": len(particles),
                "pixel_size_a": pixel,
                "seconds": seconds,
                "resolution_vs_truth_a_fsc05": versus.resolution_a(0.5),
                "gold_standard_a_fsc0143": gold.resolution_a(0.143),
                "nyquist_a": 2 * pixel,
                "map": str((out / "map.mrc").relative_to(WORK.parent.parent)),
                "commit": commit(),
            }
        )
        _save(results)
        print(results["known_pose"][-1], flush=True)


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    lines = [
        "# Known-pose reconstruction: cryohydra against cryoDRGN's `backproject_voxel`",
        "",
        "Written by `benchmarks/bench_backproject.py` from `backproject.json`. HSP90, "
        "EMPIAR-10028 CTF, 2.5 Å/px at 64 px (same field of view at every box). FSC against the "
        "true map and between half-maps with the standard soft mask; *ratio* is the half-map "
        "FSC 0.143 resolution over the FSC 0.5 resolution against the truth (1 when the "
        "half-maps' claim is honest). particles/s leaves out each tool's start-up. In the run "
        "of 2026-12-02 the sweep shared the two cores with simulations and the test suite "
        "(its particles/s are for comparing the two tools row by row); the throughput table "
        "below was measured alone.",
        "",
        "| set | tool | vs truth 0.5 (Å) | vs truth 0.143 (Å) | half-maps 0.143, our score (Å) | "
        "reported by the tool (Å) | ratio | particles/s | wall (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results.get("sweep", []):
        lines.append(
            f"| {row['dataset']} (Nyquist {row['nyquist_a']:.1f}) | {row['tool']} | "
            f"{_cell(row['truth_fsc05_a'])} | {_cell(row['truth_fsc0143_a'])} | "
            f"{_cell(row['gold_fsc0143_a'])} | {_cell(row['reported_gold_a'])} | "
            f"{_cell(row['gold_vs_truth_ratio'])} | {row['particles_per_s']:.0f} | "
            f"{row['wall_s']:.0f} | {row['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "The standard sets (10,000 particles, 64 px, SNR 0.1): the map from the true poses, the "
        "ceiling of `reconstruct.md`:",
        "",
        "| set | vs truth 0.5 (Å) | half-maps 0.143 (Å) | Nyquist (Å) | seconds | commit |",
        "|---|---|---|---|---|---|",
    ]
    for row in results.get("known_pose", []):
        lines.append(
            f"| {row['dataset']} | {row['resolution_vs_truth_a_fsc05']:.2f} | "
            f"{row['gold_standard_a_fsc0143']:.2f} | {row['nyquist_a']:.1f} | "
            f"{row['seconds']:.1f} | {row['commit']} |"
        )
    lines += [
        "",
        "Throughput, 10,000 particles (HSP90, SNR 0.1, CTF, 3 Å shifts), in-process, "
        f"{REPEATS} repeats:",
        "",
        "| box | particles/s mean | median | seconds (each) | peak RSS (MB) | commit |",
        "|---|---|---|---|---|---|",
    ]
    for row in results.get("throughput", []):
        lines.append(
            f"| {row['box']} | {row['particles_per_s_mean']:.0f} | "
            f"{row['particles_per_s_median']:.0f} | "
            f"{', '.join(f'{s:.1f}' for s in row['seconds'])} | {row['peak_rss_mb']:.0f} | "
            f"{row['commit']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--boxes", type=int, nargs="+", default=BOXES, help="sweep only these")
    parser.add_argument("--known-pose", action="store_true", help="the four standard sets")
    parser.add_argument("--simulate", action="store_true", help="only make the sweep's sets")
    parser.add_argument("--report", action="store_true", help="rewrite backproject.md only")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--throughput-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]))
        return
    if args.throughput_worker:
        print(json.dumps(throughput_worker(args.throughput_worker)))
        return
    if args.simulate:
        for box in BOXES:
            for n in COUNTS:
                for snr in SNRS:
                    for shifted in (False, True):
                        print(dataset(box, n, snr, shifted), flush=True)
        for box in THROUGHPUT_BOXES:
            print(dataset(box, 10_000, 0.1, True), flush=True)
        return
    results = _load()
    if args.known_pose:
        known_pose(results)
    if args.sweep:
        sweep(results, tuple(args.boxes))
    if args.throughput:
        throughput(results)
    _save(results)
    print("machine:", machine(), "\nwritten to", RESULTS / f"{NAME}.json")


if __name__ == "__main__":
    main()
