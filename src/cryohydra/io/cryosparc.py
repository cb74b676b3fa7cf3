"""cryoSPARC ``.cs`` particle files (NumPy structured arrays) to and from :class:`ParticleSet`.

Fields read (cryoSPARC units in brackets, converted to the project conventions):

* ``blob/path`` (bytes; a leading ``>`` means relative to the project folder and is dropped),
  ``blob/idx`` (0-based), ``blob/shape`` (px), ``blob/psize_A`` (Å/px) — required;
* ``ctf/df1_A``, ``ctf/df2_A`` (Å), ``ctf/df_angle_rad``, ``ctf/accel_kv``, ``ctf/cs_mm``,
  ``ctf/amp_contrast``, optional ``ctf/phase_shift_rad`` and ``ctf/bfactor`` (Å^2);
* ``alignments3D/pose`` (axis-angle, radians) -> ``R = exp([e]_x)^T``,
  ``alignments3D/shift`` (px) -> ``t`` in Å by ``alignments3D/psize_A`` (else ``blob/psize_A``).

A file with only ``alignments2D`` has no 3D poses. ``ctf/exp_group_id`` values become optics
groups 1..K in increasing order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryohydra.geometry.rotations import cryosparc_pose_to_matrix, matrix_to_cryosparc_pose
from cryohydra.io.errors import InputFileError
from cryohydra.io.particles import CTFParams, ParticleSet
from cryohydra.io.paths import (
    atomic_output,
    check_finite,
    relative_image_paths,
    resolve_image_paths,
    stack_search_dirs,
)

__all__ = ["read_cs", "write_cs"]

_BLOB = ("blob/path", "blob/idx", "blob/shape", "blob/psize_A")
# CTFParams field -> .cs field, for the fields that must all be present together.
_CTF_REQUIRED = {
    "defocus_u_a": "ctf/df1_A",
    "defocus_v_a": "ctf/df2_A",
    "astigmatism_angle_rad": "ctf/df_angle_rad",
    "voltage_kv": "ctf/accel_kv",
    "cs_mm": "ctf/cs_mm",
    "amplitude_contrast": "ctf/amp_contrast",
}
# Optional fields and their value when absent (``ctf/scale``: the CTF's amplitude scale, as
# RELION's rlnCtfScalefactor).
_CTF_OPTIONAL = {
    "phase_shift_rad": ("ctf/phase_shift_rad", 0.0),
    "bfactor_a2": ("ctf/bfactor", 0.0),
    "scale": ("ctf/scale", 1.0),
}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _load(path: Path) -> np.ndarray:
    """The structured array of a .cs file; InputFileError if it is not one."""
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputFileError(path, f"not a readable cryoSPARC .cs (NumPy) file: {err}") from err
    if not isinstance(data, np.ndarray) or data.dtype.names is None or data.ndim != 1:
        raise InputFileError(path, "not a cryoSPARC .cs file (expected a 1D structured array)")
    missing = [name for name in _BLOB if name not in data.dtype.names]
    if missing:
        raise InputFileError(path, f"lacks the field(s) {', '.join(missing)}")
    if len(data) == 0:
        raise InputFileError(path, "holds no particles")
    return data


def _field(data: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Numeric field ``name`` as float64; every value must be finite."""
    return check_finite(data[name], path, f"field {name}")


def _stack_names(data: np.ndarray) -> list[str]:
    """``blob/path`` as str, without cryoSPARC's project-relative ``>`` prefix."""
    names = []
    for raw in data["blob/path"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        names.append(name[1:] if name.startswith(">") else name)
    return names


def _box_size(data: np.ndarray, path: Path) -> int | None:
    """Square image side from ``blob/shape`` ``(N, 2)`` = (ny, nx); None when 0."""
    shapes = np.unique(np.asarray(data["blob/shape"]).reshape(len(data), -1), axis=0)
    if len(shapes) != 1:
        raise InputFileError(path, f"particles have different blob/shape values {shapes.tolist()}")
    shape = shapes[0]
    if np.any(shape != shape[0]):
        raise InputFileError(path, f"images are not square (blob/shape {shape.tolist()})")
    return int(shape[0]) if shape[0] > 0 else None


def _ctf(data: np.ndarray, path: Path) -> CTFParams | None:
    names = data.dtype.names
    present = [field for field in _CTF_REQUIRED.values() if field in names]
    if not present:
        return None
    missing = [field for field in _CTF_REQUIRED.values() if field not in names]
    if missing:
        raise InputFileError(path, f"has some CTF fields but lacks {', '.join(missing)}")
    values = {key: _field(data, path, field) for key, field in _CTF_REQUIRED.items()}
    for key, (field, absent) in _CTF_OPTIONAL.items():
        values[key] = _field(data, path, field) if field in names else np.full(len(data), absent)
    if np.any(values["scale"] <= 0):
        row = int(np.argmax(values["scale"] <= 0))
        raise InputFileError(
            path, f"ctf/scale must be > 0, found {values['scale'][row]:g} in row {row + 1}"
        )
    return CTFParams(**values)


def _poses(
    data: np.ndarray, path: Path, pixel_size_a: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(N, 3, 3)`` rotations and ``(N, 2)`` shifts in Å from ``alignments3D``, or Nones."""
    names = data.dtype.names
    if "alignments3D/pose" not in names:
        return None, None
    pose = _field(data, path, "alignments3D/pose").reshape(len(data), 3)
    rotations = cryosparc_pose_to_matrix(torch.from_numpy(pose)).numpy()
    if "alignments3D/shift" not in names:
        return rotations, np.zeros((len(data), 2))
    shift_px = _field(data, path, "alignments3D/shift").reshape(len(data), 2)
    if "alignments3D/psize_A" in names:
        pixel_size_a = _field(data, path, "alignments3D/psize_A")
    return rotations, shift_px * pixel_size_a[:, None]


def _optics_groups(data: np.ndarray) -> np.ndarray | None:
    """``ctf/exp_group_id`` renumbered 1..K (in increasing order), or None."""
    if "ctf/exp_group_id" not in data.dtype.names:
        return None
    _, ranks = np.unique(data["ctf/exp_group_id"], return_inverse=True)
    return ranks.reshape(-1).astype(np.int64) + 1


def read_cs(path: str | Path, datadir: str | Path | None = None) -> ParticleSet:
    """Read a cryoSPARC ``.cs`` particle file.

    Stacks are looked for relative to the working folder (a cryoSPARC project's root), then
    to the .cs file's folder; with ``datadir``, there first, under their full relative name
    and under their base name (:func:`cryohydra.io.paths.resolve_stack_path`). Returns a
    :class:`ParticleSet` in the project conventions (Å, radians, RELION matrices
    ``(N, 3, 3)``, shifts ``(N, 2)`` Å).
    Raises :class:`InputFileError` naming the file for anything it cannot use.
    """
    path = Path(path)
    data = _load(path)
    pixel = _field(data, path, "blob/psize_A")
    if np.any(pixel <= 0):
        raise InputFileError(path, f"blob/psize_A must be > 0, found {pixel.min()} Å")
    indices = np.asarray(data["blob/idx"], dtype=np.int64)
    rotations, shifts = _poses(data, path, pixel)
    bases = [Path.cwd(), path.parent]  # a cryoSPARC project's root first, then the file's folder
    return ParticleSet(
        source=path,
        image_paths=resolve_image_paths(_stack_names(data), bases, datadir, path),
        search_dirs=stack_search_dirs(bases, datadir),
        image_indices=indices,
        pixel_size_a=pixel,
        box_size=_box_size(data, path),
        ctf=_ctf(data, path),
        rotations=rotations,
        shifts_a=shifts,
        optics_group=_optics_groups(data),
    )


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _dtype(particles: ParticleSet, path_chars: int) -> np.dtype:
    fields = [
        ("uid", "<u8"),
        ("blob/path", f"S{max(path_chars, 1)}"),
        ("blob/idx", "<u4"),
        ("blob/shape", "<u4", (2,)),
        ("blob/psize_A", "<f4"),
    ]
    if particles.ctf is not None:
        fields.append(("ctf/exp_group_id", "<u4"))
        names = [*_CTF_REQUIRED.values(), *(field for field, _ in _CTF_OPTIONAL.values())]
        fields += [(name, "<f4") for name in names]
    if particles.rotations is not None:
        fields += [
            ("alignments3D/shift", "<f4", (2,)),
            ("alignments3D/pose", "<f4", (3,)),
            ("alignments3D/psize_A", "<f4"),
        ]
    return np.dtype(fields)


def _to_array(particles: ParticleSet, out_dir: Path) -> np.ndarray:
    """The structured array cryoSPARC expects, stack paths relative to ``out_dir``."""
    names = [p.encode() for p in relative_image_paths(particles.image_paths, out_dir)]
    out = np.zeros(len(particles), dtype=_dtype(particles, max(map(len, names), default=1)))
    out["uid"] = np.arange(len(particles), dtype=np.uint64)
    out["blob/path"] = names
    out["blob/idx"] = particles.image_indices
    out["blob/shape"] = particles.box_size or 0
    out["blob/psize_A"] = particles.pixel_size_a
    if particles.ctf is not None:
        out["ctf/exp_group_id"] = particles.optics_group
        ctf = particles.ctf.as_dict()
        for key, field in _CTF_REQUIRED.items():
            out[field] = ctf[key]
        for key, (field, _) in _CTF_OPTIONAL.items():
            out[field] = ctf[key]
    if particles.rotations is not None:
        rotations = torch.from_numpy(particles.rotations)
        out["alignments3D/pose"] = matrix_to_cryosparc_pose(rotations).numpy()
        shifts = particles.shifts_a if particles.shifts_a is not None else 0.0
        out["alignments3D/shift"] = shifts / particles.pixel_size_a[:, None]
        out["alignments3D/psize_A"] = particles.pixel_size_a
    return out


def write_cs(path: str | Path, particles: ParticleSet, force: bool = False) -> Path:
    """Write ``particles`` as a cryoSPARC ``.cs`` file named exactly ``path``.

    Fields: ``uid``, ``blob/*`` (stack paths relative to ``path``'s folder), ``ctf/*`` when
    the set has a CTF, ``alignments3D/pose|shift|psize_A`` (shifts in px) when it has poses.
    Refuses to overwrite an existing file unless ``force``; the file appears complete or not
    at all.
    """
    path = Path(path)
    array = _to_array(particles, path.parent)
    with atomic_output(path, force) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    return path
