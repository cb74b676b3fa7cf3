"""The standard benchmark datasets, simulated on demand into ``benchmarks/work/datasets``.

HSP90 and 6UO9 at 64 px, 10,000 particles, SNR 0.1, CTF drawn from the EMPIAR-10028 table,
uniform orientations; each centred and with shifts of 3 Å standard deviation. A dataset
already simulated (its ``simulation.json`` exists) is reused.

  python benchmarks/datasets.py            # make all four
"""

from __future__ import annotations

import json
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
    # HSP90 with chain A's N-terminal domain turned 20 degrees (made by ``hinged``)
    "hsp90-hinge20": (WORK / "models" / "hsp90_hinge20.pdb", 2.5),
}
# Yeast Hsp82: N-terminal domain up to residue 220, the charged linker (221-272, absent from
# the model), middle domain 273-527, C-terminal domain 528-677.
HSP90_NTD_LAST, HSP90_MD_FIRST, HSP90_MD_LAST = 220, 273, 527


def hinged(
    source: Path, out: Path, chain: str, domain_last: int, rest: tuple[int, int], angle_deg: float
) -> dict:
    """A second conformation of a model: chain ``chain``'s residues up to ``domain_last``
    turned by ``angle_deg`` about the hinge between them and the residues ``rest`` (an
    inclusive range) of the same chain, written to ``out`` (PDB). The hinge point is midway
    between the domain's last CA and the rest's first; the axis is normal to the plane of the
    two domains' CA centroids and the hinge, so the turn opens or closes the angle between
    them. Returns what was done (the axis, the point, the atoms moved)."""
    structure = gemmi.read_structure(str(source))
    residues = list(structure[0][chain])

    def cas(chosen) -> np.ndarray:
        return np.array([r["CA"][0].pos.tolist() for r in chosen if r.find_atom("CA", "*")])

    domain = [r for r in residues if r.seqid.num <= domain_last]
    other = [r for r in residues if rest[0] <= r.seqid.num <= rest[1]]
    hinge = (cas(domain[-1:])[0] + cas(other[:1])[0]) / 2
    axis = np.cross(cas(domain).mean(0) - hinge, cas(other).mean(0) - hinge)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(angle_deg)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew
    moved = 0
    for residue in domain:
        for atom in residue:
            position = rotation @ (np.array(atom.pos.tolist()) - hinge) + hinge
            atom.pos = gemmi.Position(*position)
            moved += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    structure.write_pdb(str(out))
    return {"axis": axis.tolist(), "hinge_a": hinge.tolist(), "atoms_moved": moved}


def ensure_model(model: str) -> Path:
    """The model's file, made first for a derived conformation."""
    path = MODELS[model][0]
    if model == "hsp90-hinge20" and not path.exists():
        done = hinged(
            MODELS["hsp90"][0], path, "A", HSP90_NTD_LAST, (HSP90_MD_FIRST, HSP90_MD_LAST), 20.0
        )
        path.with_suffix(".json").write_text(json.dumps(done, indent=2) + "\n")
    return path


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
    "hsp90-hinge20": lambda: "C1",  # one chain's domain turned: no two-fold any more
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


TRUE_CLASS_COLUMN = "cryohydraTrueClass"  # which structure a particle is (1-based)


@dataclass(frozen=True)
class Mixture:
    """Several structures' particles in one STAR file (``--classes``, issue 26): each
    component is simulated on its own (``components[k]``, a :class:`Dataset` with its ground
    truth) and ``particles.star`` lists them one after the other, with the structure of each
    particle in ``TRUE_CLASS_COLUMN`` and junk marked by the simulator's junk column."""

    name: str
    folder: Path
    components: tuple[Dataset, ...]

    @property
    def star(self) -> Path:
        return self.folder / "particles.star"


def mixture(
    models: tuple[str, ...] = ("hsp90", "6uo9"),
    per_model: int = 10_000,
    junk_fraction: float = 0.2,
    box: int = 64,
) -> Mixture:
    """``per_model`` particles of each model (SNR 0.1, the EMPIAR-10028 CTF table, 3 Å shifts,
    at the largest of the models' pixel sizes, so that each fits the box: 3.5 Å/px at 64 px
    for HSP90 and 6UO9) plus junk, ``junk_fraction`` of the whole (each component holds its
    share: empty ice, aggregates, carbon edges), simulated first if not on disk."""
    from cryohydra.io.particles import concatenate
    from cryohydra.io.star import read_star, write_star

    total = round(per_model / (1 - junk_fraction))
    name = f"mixture_{'+'.join(models)}_{box}px_{per_model}_junk{junk_fraction:g}"
    folder = WORK / "datasets" / name
    components = []
    for k, model in enumerate(models):
        ensure_model(model)
        part = folder / model
        if not (part / "simulation.json").exists():
            settings = replace(
                config(model, True, total, box),
                pixel_size_a=max(MODELS[m][1] for m in models) * 64 / box,
                junk_fraction=junk_fraction,
                seed=2026 + k,
            )
            simulate(settings, part, force=True, progress=False)
        components.append(Dataset(f"{model}_{name}", part))
    star = folder / "particles.star"
    if not star.exists():
        sets = []
        for k, component in enumerate(components):
            particles = read_star(component.star)
            label = np.full(len(particles), k + 1, dtype=np.int64)
            sets.append(
                replace(
                    particles, extra_columns={**particles.extra_columns, TRUE_CLASS_COLUMN: label}
                )
            )
        write_star(star, concatenate(sets, star))
    return Mixture(name, folder, tuple(components))


def all_standard() -> list[Dataset]:
    return [standard(m, s) for m in MODELS for s in (False, True)]


if __name__ == "__main__":
    for dataset in all_standard():
        print(dataset.name, dataset.folder, file=sys.stderr)
