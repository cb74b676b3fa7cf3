"""Data shipped with cryohydra.

``6uo9.pdb.gz``: human GABA(B) receptor heterodimer, PDB entry 6UO9 (cryo-EM, 4.8 Å),
asymmetric and elongated; wwPDB data are CC0 (public domain dedication).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["default_structure"]


def default_structure() -> Path:
    """Path of the bundled default atomic model (PDB 6UO9)."""
    return Path(str(files("cryohydra.data").joinpath("6uo9.pdb.gz")))
