"""Ab-initio reconstruction on the standard datasets, against the known-pose ceiling.

For each standard dataset (HSP90 and 6UO9, 64 px, 10,000 particles, SNR 0.1, EMPIAR-10028 CTF,
centred and shifted; see ``datasets.py``) and each requested setting (``--modes``,
``--switch``), runs ``cryohydra reconstruct`` (the library entry point ``run_job``) in
``benchmarks/work/reconstruct/<dataset>/<setting>/`` and records: median and mean rotation
error and shift error (after global alignment), the FSC-vs-truth resolution at 0.5 of the final
map next to the known-pose map's (``results/backproject.json``), the epoch of the switch and
the wall time. HSP90 is a homodimer: its rotation errors are taken modulo its two-fold (a
particle seen from either symmetry mate gives the same image), 6UO9's without symmetry.
Every run checkpoints each epoch: an interrupted benchmark started again with the same
arguments resumes where it stopped, and finished runs are skipped.

Results go to ``benchmarks/results/reconstruct.json`` (one entry per dataset and setting,
updated as each finishes) and the pose error against epoch of every run to
``benchmarks/results/reconstruct_pose_error.png``.

  python benchmarks/bench_reconstruct.py                      # semi-amortized, --switch auto
  python benchmarks/bench_reconstruct.py --datasets hsp90_64px_centred_10000 \\
      --modes semi-amortized amortized cryoai                 # the mode comparison
  python benchmarks/bench_reconstruct.py --switch 1 2 3 4 5   # fixed switches vs auto
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_results  # noqa: E402
from cryohydra.io.star import read_star  # noqa: E402
from cryohydra.reconstruct.config import ReconstructConfig  # noqa: E402
from cryohydra.reconstruct.job import RUN_FILE, JobOptions, run_job  # noqa: E402
from datasets import WORK, all_standard  # noqa: E402

NAME = "reconstruct"


def _known_pose() -> dict:
    path = RESULTS / "backproject.json"
    if not path.exists():
        return {}
    return {e["dataset"]: e for e in json.loads(path.read_text()).get("known_pose", [])}


def _setting(mode: str, switch: str) -> str:
    return mode if mode != "semi-amortized" else f"semi-amortized_switch-{switch}"


def run_one(dataset, mode: str, switch: str, args) -> dict:
    folder = WORK / "reconstruct" / dataset.name / _setting(mode, switch)
    config = ReconstructConfig(
        mode=mode,
        epochs=args.epochs,
        switch=switch if switch == "auto" else int(switch),
        seed=args.seed,
    )
    options = JobOptions(
        outdir=folder,
        device=args.device,
        resume=(folder / RUN_FILE).exists(),
        reference_map=dataset.ground_truth,
        symmetry=dataset.symmetry,
        progress=not args.quiet,
    )
    start = time.perf_counter()
    summary = run_job(read_star(dataset.star), config, options)
    errors = summary["pose_error"]
    known = _known_pose().get(dataset.name, {})
    records = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines() if x]
    return {
        "dataset": dataset.name,
        "setting": _setting(mode, switch),
        "mode": mode,
        "switch": switch,
        "switch_epoch": summary["training"][0]["switch_epoch"],
        "epochs": args.epochs,
        "symmetry": errors["symmetry"],
        "median_rotation_error_deg": errors["median_rotation_error_deg"],
        "mean_rotation_error_deg": errors["mean_rotation_error_deg"],
        "median_shift_error_a": errors["median_shift_error_a"],
        "mean_shift_error_a": errors["mean_shift_error_a"],
        "resolution_vs_truth_a_0.5": summary.get("resolution_vs_reference_a_0.5"),
        "known_pose_resolution_a_0.5": known.get("resolution_vs_truth_a_fsc05"),
        "training_seconds": sum(r["seconds"] for r in records),
        "training_seconds_this_call": summary["training_seconds"],
        "wall_seconds_this_call": time.perf_counter() - start,
        "log": str((folder / "log.jsonl").relative_to(WORK.parent.parent)),
    }


def plot_pose_error(entries: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for entry in entries:
        log = WORK.parent.parent / entry["log"]
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        epochs = [r["epoch"] for r in records if "pose_error" in r]
        median = [r["pose_error"]["median_rotation_deg"] for r in records if "pose_error" in r]
        ax.plot(epochs, median, marker="o", label=f"{entry['dataset']} {entry['setting']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("median rotation error (degrees)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None, help="names (default: all four)")
    parser.add_argument("--modes", nargs="+", default=["semi-amortized"])
    parser.add_argument("--switch", nargs="+", default=["auto"])
    parser.add_argument("--epochs", type=int, default=ReconstructConfig().epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    entries = json.loads(path.read_text())["runs"] if path.exists() else []
    datasets = [d for d in all_standard() if args.datasets is None or d.name in args.datasets]
    for dataset in datasets:
        for mode in args.modes:
            for switch in args.switch if mode == "semi-amortized" else ["none"]:
                key = (dataset.name, _setting(mode, switch))
                if any((e["dataset"], e["setting"]) == key for e in entries):
                    continue
                entry = run_one(dataset, mode, switch, args)
                entries.append(entry)
                print(json.dumps(entry), flush=True)
                write_results(NAME, {"runs": entries})
                plot_pose_error(entries, RESULTS / f"{NAME}_pose_error.png")


if __name__ == "__main__":
    main()
