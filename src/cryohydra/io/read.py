"""Read a particle set from any supported metadata file, chosen by its suffix."""

from __future__ import annotations

from pathlib import Path

from cryohydra.io.cryosparc import read_cs
from cryohydra.io.errors import InputFileError
from cryohydra.io.particles import ParticleSet
from cryohydra.io.star import read_star

__all__ = ["read_particles"]

_READERS = {".star": read_star, ".cs": read_cs}


def read_particles(path: str | Path, datadir: str | Path | None = None) -> ParticleSet:
    """Read RELION ``.star`` or cryoSPARC ``.cs`` particles (see :func:`read_star`,
    :func:`read_cs`); ``datadir`` is an extra folder to look for the image stacks in.

    Raises :class:`InputFileError` for any other suffix.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InputFileError(
            path,
            f"unsupported particle file type {path.suffix or '(no suffix)'!r}; "
            "expected a RELION .star or a cryoSPARC .cs file",
        )
    return reader(path, datadir=datadir)
