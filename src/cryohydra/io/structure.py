"""Atomic models from PDB / mmCIF files (read with gemmi), with each atom's electron
scattering factors (International Tables Vol. C Table 4.3.2.2, ``gemmi.Element.c4322``)."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np

from cryohydra.io.errors import InputFileError
from cryohydra.physics.atoms import AtomicModel

__all__ = ["read_atomic_model"]


def read_atomic_model(path: str | Path) -> AtomicModel:
    """Read the first model of a PDB or mmCIF file, without waters and hydrogens."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file does not exist")
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as err:
        raise InputFileError(path, f"not a readable PDB/mmCIF model: {err}") from err
    structure.remove_waters()
    structure.remove_hydrogens()
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise InputFileError(path, "contains no atoms")
    model = structure[0]
    coords, coefs = [], []
    cache: dict[str, list[float]] = {}
    for chain in model:
        for residue in chain:
            for atom in residue:
                name = atom.element.name
                if name not in cache:
                    cache[name] = atom.element.c4322.get_coefs()
                coords.append(atom.pos.tolist())
                coefs.append(cache[name])
    coefs_array = np.asarray(coefs, dtype=np.float64)
    if np.any(coefs_array[:, :5].sum(axis=1) == 0):
        raise InputFileError(path, "contains atoms with unknown elements")
    com = model.calculate_center_of_mass()
    return AtomicModel(
        coords_a=np.asarray(coords, dtype=np.float64),
        coef_a=coefs_array[:, :5],
        coef_b=coefs_array[:, 5:],
        center_of_mass_a=np.array([com.x, com.y, com.z]),
        source=path,
    )
