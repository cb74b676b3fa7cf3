"""The standard benchmark datasets, simulated on demand into ``benchmarks/work/datasets``.

HSP90 and 6UO9 at 64 px, 10,000 particles, SNR 0.1, CTF drawn from the EMPIAR-10028 table,
uniform orientations; each centred and with shifts of 3 Å standard deviation. A dataset
already simulated (its ``simulation.json`` exists) is reused.

  python benchmarks/datasets.py            # make all four
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cryohydra.data import default_structure
from cryohydra.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
CTF_TABLE = ROOT.parent / "tests" / "data" / "metadata" / "empiar10028_ctf.npy"
MODELS = {
    "hsp90": (ROOT / "data" / "hsp90_hsp82_dimer.pdb.gz", 2.5),  # max radius 67 Å
    "6uo9": (default_structure(), 3.5),  # max radius 94 Å
}


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: Path

    @property
    def star(self) -> Path:
        return self.folder / "particles.star"

    @property
    def ground_truth(self) -> Path:
        return self.folder / "ground_truth.mrc"


def config(model: str, shifted: bool, n_particles: int = 10_000, box: int = 64) -> SimulationConfig:
    path, pixel_at_64 = MODELS[model]
    return SimulationConfig(
        structure=str(path),
        box_size=box,
        pixel_size_a=pixel_at_64 * 64 / box,
        n_particles=n_particles,
        snr=0.1,
        shift_std_a=3.0 if shifted else 0.0,
        ctf_table=str(CTF_TABLE),
        seed=2026,
    )


def standard(model: str, shifted: bool, n_particles: int = 10_000, box: int = 64) -> Dataset:
    """The dataset, simulated first if it is not on disk yet."""
    name = f"{model}_{box}px_{'shifted' if shifted else 'centred'}_{n_particles}"
    folder = WORK / "datasets" / name
    if not (folder / "simulation.json").exists():
        simulate(config(model, shifted, n_particles, box), folder, force=True, progress=False)
    return Dataset(name, folder)


def all_standard() -> list[Dataset]:
    return [standard(m, s) for m in MODELS for s in (False, True)]


if __name__ == "__main__":
    for dataset in all_standard():
        print(dataset.name, dataset.folder, file=sys.stderr)
