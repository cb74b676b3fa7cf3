"""The standard benchmark datasets, simulated on demand into ``benchmarks/work/datasets``.

HSP90 and 6UO9 at 64 px, 10,000 particles, SNR 0.1, CTF drawn from the EMPIAR-10028 table,
uniform orientations; each centred and with shifts of 3 Å standard deviation. A dataset
already simulated (its ``simulation.json`` exists) is reused.

  python benchmarks/datasets.py            # make all four
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import gemmi
import numpy as np

from cryohydra.data import default_structure
from cryohydra.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
CTF_TABLE = ROOT.parent / "tests" / "data" / "metadata" / "empiar10028_ctf.npy"
MODELS = {
    "hsp90": (ROOT / "data" / "hsp90_hsp82_dimer.pdb.gz", 2.5),  # max radius 67 Å
    "6uo9": (default_structure(), 3.5),  # max radius 94 Å
    "5a1a": (ROOT.parent / "tests" / "data" / "models" / "5a1a.cif.gz", 3.5),  # D2 tetramer
}


def homodimer_two_fold(model_path: Path, chains: tuple[str, str] = ("A", "B")) -> np.ndarray:
    """The symmetry rotations ``{I, g}`` ``(2, 3, 3)`` of a homodimer in the simulated map's
    frame: ``g`` superposes one chain's CA atoms on the other's (``gemmi``), made an exact
    two-fold about its axis. The simulator only translates the atoms (centre of mass to the
    box centre), which the axis passes through, so ``V(g x) = V(x)`` in the map's frame."""
    model = gemmi.read_structure(str(model_path))[0]

    def ca(name: str) -> dict[int, gemmi.Position]:
        return {r.seqid.num: r["CA"][0].pos for r in model[name] if r.find_atom("CA", "*")}

    first, second = ca(chains[0]), ca(chains[1])
    common = sorted(set(first) & set(second))
    fit = gemmi.superpose_positions([first[i] for i in common], [second[i] for i in common])
    rotation = np.array(fit.transform.mat.tolist())
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], 0.0])
    axis[2] = rotation[1, 0] - rotation[0, 1]
    angle = np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0))
    if angle > 0.9 * np.pi:  # near 180 degrees the skew part is noise: the axis from R + I
        column = np.argmax(np.linalg.norm(rotation + np.eye(3), axis=0))
        axis = (rotation + np.eye(3))[:, column]
    axis /= np.linalg.norm(axis)
    two_fold = 2 * np.outer(axis, axis) - np.eye(3)
    return np.stack([np.eye(3), two_fold])


def tetramer_d2(model_path: Path, chains: str = "ABCD") -> np.ndarray:
    """The D2 rotations ``(4, 3, 3)`` of a tetramer in the simulated map's frame: the
    identity, two perpendicular two-folds superposing the first chain on others, and their
    product (in 5A1A the CA fit of A on C is not one of the three: two suffice)."""
    folds = [homodimer_two_fold(model_path, (chains[0], other))[1] for other in chains[1:]]
    for i, first in enumerate(folds):
        for second in folds[i + 1 :]:
            product = first @ second
            if abs(np.trace(product) + 1) < 1e-3:  # a half turn: the axes are perpendicular
                return np.stack([np.eye(3), first, second, product])
    raise ValueError(f"{model_path}: no two perpendicular two-folds between chains {chains}")


SYMMETRY = {
    "hsp90": lambda: homodimer_two_fold(MODELS["hsp90"][0]),
    "6uo9": lambda: "C1",
    "5a1a": lambda: tetramer_d2(MODELS["5a1a"][0]),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: Path

    @property
    def model(self) -> str:
        return self.name.split("_")[0]

    @property
    def symmetry(self) -> np.ndarray | str:
        """For pose errors: HSP90 is a two-fold homodimer, 6UO9 a heterodimer, 5A1A a D2
        tetramer."""
        return SYMMETRY[self.model]()

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


REAL_BACKGROUND = ROOT.parent / "tests" / "data" / "empiar10076_7" / "empiar_10076_7.star"


def realistic_config(model: str, n_particles: int = 20_000, box: int = 64) -> SimulationConfig:
    """A stack as RELION Extract gives one (issue 24): noise shaped like the real EMPIAR-10076
    particles' background, B = 100 Å^2, contrast sd 0.3 between particles, shifts of 6 Å sd,
    20 % junk (empty ice, aggregates, carbon edges), dark particles, the CTF applied on a
    canvas twice the box; SNR 0.1 and the EMPIAR-10028 CTF table as the standard sets."""
    return replace(
        config(model, True, n_particles, box),
        shift_std_a=6.0,
        bfactor_a2=100.0,
        contrast_sign=-1,
        noise_spectrum=str(REAL_BACKGROUND),
        contrast_sd=0.3,
        junk_fraction=0.2,
        ctf_canvas=2,
    )


def realistic(model: str, n_particles: int = 20_000, box: int = 64) -> Dataset:
    """The realistic set, simulated first if it is not on disk yet."""
    name = f"{model}_{box}px_realistic_{n_particles}"
    folder = WORK / "datasets" / name
    if not (folder / "simulation.json").exists():
        settings = realistic_config(model, n_particles, box)
        simulate(settings, folder, force=True, progress=False)
    return Dataset(name, folder)


def all_standard() -> list[Dataset]:
    return [standard(m, s) for m in MODELS for s in (False, True)]


if __name__ == "__main__":
    for dataset in all_standard():
        print(dataset.name, dataset.folder, file=sys.stderr)
