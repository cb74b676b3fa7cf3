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
updated as each finishes), a table in ``benchmarks/results/reconstruct.md``, the pose error
against epoch of every run to ``reconstruct_pose_error.png``, the comparison of modes on a
dataset (pose error and map resolution against epoch) to ``reconstruct_modes_<dataset>.png``
and the fixed switches against ``--switch auto`` to ``reconstruct_switch_<dataset>.png``.

  python benchmarks/bench_reconstruct.py                      # semi-amortized, --switch auto
  python benchmarks/bench_reconstruct.py --datasets hsp90_64px_centred_10000 \\
      --modes semi-amortized amortized cryoai                 # the mode comparison
  python benchmarks/bench_reconstruct.py --switch 1 2 3 4 5   # fixed switches vs auto
  python benchmarks/bench_reconstruct.py --set encoder_lr=1e-4 # an ablation
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
from common import RESULTS, commit, write_results  # noqa: E402
from cryohydra.inference.config import ReconstructConfig  # noqa: E402
from cryohydra.io.run_folder import LOG_FILE, RUN_FILE, read_log  # noqa: E402
from cryohydra.io.star import read_star  # noqa: E402
from cryohydra.jobs.abinitio import JobOptions, run_job  # noqa: E402
from datasets import WORK, all_standard  # noqa: E402

NAME = "reconstruct"


def _known_pose() -> dict:
    path = RESULTS / "backproject.json"
    if not path.exists():
        return {}
    return {e["dataset"]: e for e in json.loads(path.read_text()).get("known_pose", [])}


def _overrides(pairs: list[str]) -> dict:
    """``--set key=value`` pairs as config fields (values parsed as JSON where they can be)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _setting(mode: str, switch: str, overrides: dict | None = None) -> str:
    name = mode if mode != "semi-amortized" else f"semi-amortized_switch-{switch}"
    return name + "".join(f"_{k}-{v}" for k, v in sorted((overrides or {}).items()))


def run_one(dataset, mode: str, switch: str, args) -> dict:
    overrides = _overrides(args.set)
    setting = _setting(mode, switch, overrides)
    folder = WORK / "reconstruct" / dataset.name / setting
    config = ReconstructConfig(
        mode=mode,
        epochs=args.epochs,
        switch=int(switch) if switch.isdigit() else "auto",  # "none": modes without a switch
        seed=args.seed,
        **overrides,
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
    code = commit()
    summary = run_job(read_star(dataset.star), config, options)
    errors = summary["pose_error"]
    known = _known_pose().get(dataset.name, {})
    records = read_log(folder / LOG_FILE)
    return {
        "dataset": dataset.name,
        "setting": setting,
        "mode": mode,
        "overrides": overrides,
        "commit": code,
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
        "known_pose_commit": known.get("commit"),
        "training_seconds": sum(r["seconds"] for r in records),
        "training_seconds_this_call": summary["training_seconds"],
        "wall_seconds_this_call": time.perf_counter() - start,
        "log": str((folder / LOG_FILE).relative_to(WORK.parent.parent)),
    }


def plot_pose_error(entries: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for entry in entries:
        log = WORK.parent.parent / entry["log"]
        if not log.exists():  # an older run whose folder is gone
            continue
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


def _records(entry: dict) -> list[dict]:
    log = WORK.parent.parent / entry["log"]
    if not log.exists():  # an older run whose folder is gone (e.g. on another machine)
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def plot_modes(entries: list[dict], dataset: str, path: Path) -> bool:
    """Semi-amortized vs amortized vs cryoAI on one dataset; False if not all have run."""
    wanted = ("semi-amortized_switch-auto", "amortized", "cryoai")
    runs = {e["setting"]: e for e in entries if e["dataset"] == dataset}
    if not all(w in runs and _records(runs[w]) for w in wanted):
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {
        "semi-amortized_switch-auto": "semi-amortized (7 heads, auto switch)",
        "amortized": "amortized (7 heads to the end)",
        "cryoai": "cryoAI (1 head, symmetrised loss)",
    }
    for setting in wanted:
        records = _records(runs[setting])
        epochs = [r["epoch"] for r in records]
        left.plot(
            epochs,
            [r["pose_error"]["median_rotation_deg"] for r in records],
            "o-",
            label=labels[setting],
        )
        right.plot(
            epochs,
            [r["model_fsc_vs_reference_a_0.5"] for r in records],
            "o-",
            label=labels[setting],
        )
        if runs[setting]["switch_epoch"]:
            for axis in (left, right):
                axis.axvline(runs[setting]["switch_epoch"] + 0.5, color="grey", ls=":")
    left.set_yscale("log")
    left.set_ylabel("median rotation error (degrees)")
    right.set_ylabel("model FSC 0.5 vs truth (Å)")
    right.invert_yaxis()
    for axis in (left, right):
        axis.set_xlabel("epoch (dotted: the switch)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"{dataset}: pose inference modes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _fixed_switches(entries: list[dict], dataset: str) -> list[dict]:
    return sorted(
        (
            e
            for e in entries
            if e["dataset"] == dataset
            and e["switch"] not in ("auto", "none")
            and not e.get("overrides")
        ),
        key=lambda e: int(e["switch"]),
    )


def plot_switch(entries: list[dict], dataset: str, path: Path) -> bool:
    """Final resolution and pose error against the fixed switch epoch, ``auto`` marked."""
    fixed = _fixed_switches(entries, dataset)
    auto = [
        e
        for e in entries
        if e["dataset"] == dataset and e["switch"] == "auto" and not e.get("overrides")
    ]
    if not fixed or not auto:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [int(e["switch"]) for e in fixed]
    for axis, key, label in (
        (left, "resolution_vs_truth_a_0.5", "final map FSC 0.5 vs truth (Å)"),
        (right, "median_rotation_error_deg", "final median rotation error (degrees)"),
    ):
        axis.plot(x, [e[key] for e in fixed], "o-", label="--switch N")
        axis.plot([auto[0]["switch_epoch"]], [auto[0][key]], "r*", ms=14, label="--switch auto")
        axis.set_xlabel("switch after epoch")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"{dataset}: when to switch to auto-decoding", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def markdown(entries: list[dict]) -> str:
    lines = [
        "# Ab-initio reconstruction benchmark",
        "",
        "Written by `benchmarks/bench_reconstruct.py` (machine and date in `reconstruct.json`).",
        "64 px, 10,000 particles, SNR 0.1, EMPIAR-10028 CTF; rotation errors after global",
        "alignment (HSP90 modulo its two-fold); FSC 0.5 of the final map against the truth next",
        "to the map from the true poses.",
        "",
        "| dataset | setting | switch | median rot. (°) | mean rot. (°) | median shift (Å) "
        "| FSC 0.5 (Å) | known poses (Å) | training (min) | code | known-pose code |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        known = e.get("known_pose_resolution_a_0.5")
        lines.append(
            f"| {e['dataset']} | {e['setting']} | {e['switch_epoch'] or '-'} "
            f"| {e['median_rotation_error_deg']:.2f} | {e['mean_rotation_error_deg']:.2f} "
            f"| {e['median_shift_error_a']:.2f} | {e['resolution_vs_truth_a_0.5']:.2f} "
            f"| {f'{known:.2f}' if known else '-'} | {e['training_seconds'] / 60:.1f} "
            f"| {e.get('commit', '?')} | {e.get('known_pose_commit') or '?'} |"
        )
    notes = [f"- {e['dataset']}, {e['setting']}: {e['note']}" for e in entries if e.get("note")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def write_outputs(entries: list[dict]) -> None:
    write_results(NAME, {"runs": entries})
    (RESULTS / f"{NAME}.md").write_text(markdown(entries))
    plot_pose_error(entries, RESULTS / f"{NAME}_pose_error.png")
    for dataset in sorted({e["dataset"] for e in entries}):
        plot_modes(entries, dataset, RESULTS / f"{NAME}_modes_{dataset}.png")
        plot_switch(entries, dataset, RESULTS / f"{NAME}_switch_{dataset}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None, help="names (default: all four)")
    parser.add_argument("--modes", nargs="+", default=["semi-amortized"])
    parser.add_argument("--switch", nargs="+", default=["auto"])
    parser.add_argument("--epochs", type=int, default=ReconstructConfig().epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="other config fields (ablations)"
    )
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="run again the settings asked for that already have results (after a code change; "
        "delete their folders under benchmarks/work/reconstruct first)",
    )
    parser.add_argument(
        "--refresh-known-pose",
        action="store_true",
        help="only update every entry's known-pose ceiling from results/backproject.json (after "
        "a change to the backprojection; the ab-initio figures keep their own commit)",
    )
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    entries = json.loads(path.read_text())["runs"] if path.exists() else []
    if args.refresh_known_pose:
        known = _known_pose()
        for entry in entries:
            ceiling = known.get(entry["dataset"], {})
            entry["known_pose_resolution_a_0.5"] = ceiling.get("resolution_vs_truth_a_fsc05")
            entry["known_pose_commit"] = ceiling.get("commit")
        # The table only: the figures need the runs' logs, which this does not touch.
        write_results(NAME, {"runs": entries})
        (RESULTS / f"{NAME}.md").write_text(markdown(entries))
        return
    datasets = [d for d in all_standard() if args.datasets is None or d.name in args.datasets]
    for dataset in datasets:
        for mode in args.modes:
            for switch in args.switch if mode == "semi-amortized" else ["none"]:
                key = (dataset.name, _setting(mode, switch, _overrides(args.set)))
                done = [e for e in entries if (e["dataset"], e["setting"]) == key]
                if done and not args.rerun:
                    continue
                entry = run_one(dataset, mode, switch, args)
                entries = [e for e in entries if (e["dataset"], e["setting"]) != key] + [entry]
                print(json.dumps(entry), flush=True)
                write_outputs(entries)


if __name__ == "__main__":
    main()
