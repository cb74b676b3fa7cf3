"""RELION STAR particle files (3.0, 3.1, 5) to and from :class:`ParticleSet`.

Reading converts to the project conventions (``docs/CONVENTIONS.md``): lengths and shifts in
Å, angles in radians, poses as RELION's matrix ``R = Euler_angles2matrix(rot, tilt, psi)`` and
``t = (rlnOriginXAngst, rlnOriginYAngst)`` with no sign flip. Writing produces RELION 3.1
files (blocks ``optics`` and ``particles``), angles in degrees.

Layouts read:

* RELION 3.0: a single data block of any name (``data_``, ``data_images``,
  ``data_model_class_1``...) holding everything; shifts ``rlnOriginX/Y`` in pixels; pixel size
  from ``rlnImagePixelSize``, else ``rlnDetectorPixelSize * 1e4 / rlnMagnification``, else the
  voxel size in the first stack's header.
* RELION 3.1 / 5: blocks ``optics`` and ``particles`` in either order; per-group values
  (pixel size, voltage, Cs, amplitude contrast, image size) are looked up by
  ``rlnOpticsGroup``. A column present in ``particles`` wins over the same column in ``optics``.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
import torch

from cryohydra.geometry.rotations import euler_relion_to_matrix, matrix_to_euler_relion
from cryohydra.io.errors import InputFileError
from cryohydra.io.particles import CTFParams, ParticleSet
from cryohydra.io.paths import (
    atomic_output,
    check_finite,
    first_stack_header,
    relative_image_paths,
    resolve_image_paths,
    stack_search_dirs,
)

__all__ = ["read_star", "write_star"]

_DEFOCUS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
_CTF_REQUIRED = (*_DEFOCUS, "rlnVoltage", "rlnSphericalAberration")
_ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
# Written with this format so that a read -> write -> read round trip loses nothing that
# matters (a rotation matrix changes by < 1e-9, a defocus by < 1e-6 Å).
_FLOAT_FORMAT = "%.12g"
# Columns read into the ParticleSet's own fields (or rewritten from them); any other column of
# the input is carried through unchanged into the STAR files written from the set.
_INTERPRETED = {
    "rlnImageName",
    "rlnOpticsGroup",
    *_DEFOCUS,
    "rlnPhaseShift",
    "rlnCtfBfactor",
    "rlnCtfScalefactor",
    *_ANGLES,
    "rlnOriginX",
    "rlnOriginY",
    "rlnOriginXAngst",
    "rlnOriginYAngst",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnDetectorPixelSize",
    "rlnMagnification",
}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


@dataclass
class _Columns:
    """The particle table, with optics-group values looked up per particle."""

    source: Path
    particles: pd.DataFrame
    optics: pd.DataFrame | None
    optics_rows: np.ndarray | None  # (N,) row of ``optics`` for each particle
    groups: np.ndarray  # (N,) int64 optics group

    def __len__(self) -> int:
        return len(self.particles)

    def has(self, name: str) -> bool:
        return name in self.particles.columns or (
            self.optics is not None and name in self.optics.columns
        )

    def raw(self, name: str) -> np.ndarray:
        """Column ``name`` per particle, as stored (from ``particles``, else ``optics``)."""
        if name in self.particles.columns:
            return self.particles[name].to_numpy()
        return self.optics[name].to_numpy()[self.optics_rows]

    def numeric(self, name: str) -> np.ndarray:
        """Column ``name`` per particle as ``(N,)`` float64; every value must be a finite number."""
        values = pd.to_numeric(pd.Series(self.raw(name)), errors="coerce").to_numpy(np.float64)
        return check_finite(values, self.source, f"column {name}")


def _as_frame(block) -> pd.DataFrame:
    """A STAR data block as a DataFrame (a key-value block becomes one row)."""
    if isinstance(block, pd.DataFrame):
        return block
    return pd.DataFrame([dict(block)])


def _read_blocks(path: Path) -> dict[str, pd.DataFrame]:
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises many kinds of errors on bad input
        raise InputFileError(path, f"not a readable STAR file: {err}") from err
    if not blocks:
        raise InputFileError(path, "no data block found (not a STAR file?)")
    return {name: _as_frame(block) for name, block in blocks.items()}


def _pick_particles(path: Path, blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The ``particles`` block, or the first block with an ``rlnImageName`` column."""
    ordered = sorted(blocks.items(), key=lambda item: item[0] != "particles")
    for _name, block in ordered:
        if "rlnImageName" in block.columns:
            if len(block) == 0:
                raise InputFileError(path, "the particle table has no rows")
            return block.reset_index(drop=True)
    raise InputFileError(
        path, f"no data block has an rlnImageName column (blocks: {', '.join(blocks) or 'none'})"
    )


def _group_rows(path: Path, optics: pd.DataFrame, groups: np.ndarray) -> np.ndarray:
    """Row of the optics table for each particle's optics group."""
    numbers = check_finite(
        pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce"), path, "optics rlnOpticsGroup"
    ).astype(np.int64)
    if len(np.unique(numbers)) != len(numbers):
        raise InputFileError(path, "data_optics lists the same rlnOpticsGroup more than once")
    row_of = {int(g): i for i, g in enumerate(numbers)}
    unknown = sorted({int(g) for g in np.unique(groups)} - row_of.keys())
    if unknown:
        raise InputFileError(
            path, f"particles refer to optics group(s) {unknown} missing from data_optics"
        )
    return np.array([row_of[int(g)] for g in groups], dtype=np.int64)


def _columns(path: Path) -> _Columns:
    blocks = _read_blocks(path)
    particles = _pick_particles(path, blocks)
    optics = blocks.get("optics")
    if optics is not None and "rlnOpticsGroup" not in optics.columns:
        optics = None
    if "rlnOpticsGroup" in particles.columns:
        groups = check_finite(
            pd.to_numeric(particles["rlnOpticsGroup"], errors="coerce"), path, "rlnOpticsGroup"
        ).astype(np.int64)
    else:
        groups = np.ones(len(particles), dtype=np.int64)
    rows = None if optics is None else _group_rows(path, optics, groups)
    return _Columns(path, particles, optics, rows, groups)


def _parse_image_names(cols: _Columns) -> tuple[np.ndarray, np.ndarray]:
    """``rlnImageName`` (``000001@stack.mrcs`` or ``stack.mrcs``) -> (stack names, 0-based idx)."""
    names = pd.Series(cols.particles["rlnImageName"]).astype(str).str.strip()
    parts = names.str.partition("@")
    has_at = parts[1] == "@"
    stacks = parts[2].where(has_at, parts[0])
    numbers = pd.to_numeric(parts[0].where(has_at, "1"), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(numbers) | (numbers < 1) | (numbers != np.round(numbers))
    bad |= stacks.str.len().to_numpy() == 0
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise InputFileError(
            cols.source,
            f"rlnImageName {names.iloc[row]!r} in row {row + 1} is not of the form "
            "'000001@stack.mrcs' (1-based image number, then the stack)",
        )
    # A name without '@' is a file of one image: several rows naming one such file would all
    # read its first image.
    bare = stacks[~has_at]
    repeated = bare[bare.duplicated(keep=False)]
    if len(repeated):
        rows = np.nonzero((~has_at & stacks.isin([repeated.iloc[0]])).to_numpy())[0][:2] + 1
        raise InputFileError(
            cols.source,
            f"rlnImageName {repeated.iloc[0]!r} in rows {rows[0]} and {rows[1]} has no image "
            "number: each row would read the same first image; write '000001@stack.mrcs', "
            "'000002@stack.mrcs', ...",
        )
    return stacks.to_numpy(dtype=object), numbers.astype(np.int64) - 1


def _pixel_size(cols: _Columns, header) -> np.ndarray:
    """``(N,)`` Å/px: rlnImagePixelSize, else detector pixel / magnification, else the header."""
    if cols.has("rlnImagePixelSize"):
        pixel = cols.numeric("rlnImagePixelSize")
    elif cols.has("rlnDetectorPixelSize") and cols.has("rlnMagnification"):
        pixel = cols.numeric("rlnDetectorPixelSize") * 1e4 / cols.numeric("rlnMagnification")
    elif header() is not None and header()[1] is not None:
        pixel = np.full(len(cols), header()[1])
    else:
        raise InputFileError(
            cols.source,
            "no pixel size: no rlnImagePixelSize, no rlnDetectorPixelSize with "
            "rlnMagnification, and no voxel size in the header of an image stack",
        )
    if np.any(pixel <= 0):
        raise InputFileError(cols.source, f"pixel size must be > 0, found {pixel.min()} Å")
    return pixel


def _box_size(cols: _Columns, header) -> int | None:
    """Image side in px: rlnImageSize (one value for all particles), else the first header."""
    if cols.has("rlnImageSize"):
        sizes = np.unique(cols.numeric("rlnImageSize"))
        if len(sizes) != 1:
            raise InputFileError(
                cols.source, f"particles have different rlnImageSize values {sizes.tolist()}"
            )
        if sizes[0] < 1 or sizes[0] != round(sizes[0]):
            raise InputFileError(cols.source, f"rlnImageSize {sizes[0]} is not a positive integer")
        return int(sizes[0])
    found = header()
    return None if found is None else found[0]


def _ctf(cols: _Columns) -> CTFParams | None:
    """CTF from the particle/optics columns (file units: Å, degrees, kV, mm), or None."""
    if not any(cols.has(name) for name in _DEFOCUS):
        return None
    missing = [name for name in _CTF_REQUIRED if not cols.has(name)]
    if missing:
        raise InputFileError(cols.source, f"has some CTF columns but lacks {', '.join(missing)}")
    if cols.has("rlnAmplitudeContrast"):
        amplitude = cols.numeric("rlnAmplitudeContrast")
    else:
        warnings.warn(
            f"{cols.source}: no rlnAmplitudeContrast column; using 0, as RELION does",
            UserWarning,
            stacklevel=3,
        )
        amplitude = np.zeros(len(cols))

    def optional(name: str) -> np.ndarray:
        return cols.numeric(name) if cols.has(name) else np.zeros(len(cols))

    voltage = cols.numeric("rlnVoltage")
    if np.any(voltage <= 0):
        row = int(np.argmax(voltage <= 0))
        raise InputFileError(
            cols.source, f"rlnVoltage must be > 0 kV, found {voltage[row]:g} in row {row + 1}"
        )
    if np.any((amplitude < 0) | (amplitude >= 1)):
        row = int(np.argmax((amplitude < 0) | (amplitude >= 1)))
        raise InputFileError(
            cols.source,
            f"rlnAmplitudeContrast must be in [0, 1), found {amplitude[row]:g} in row {row + 1}",
        )
    return CTFParams(
        defocus_u_a=cols.numeric("rlnDefocusU"),
        defocus_v_a=cols.numeric("rlnDefocusV"),
        astigmatism_angle_rad=np.deg2rad(cols.numeric("rlnDefocusAngle")),
        voltage_kv=voltage,
        cs_mm=cols.numeric("rlnSphericalAberration"),
        amplitude_contrast=amplitude,
        phase_shift_rad=np.deg2rad(optional("rlnPhaseShift")),
        bfactor_a2=optional("rlnCtfBfactor"),
        scale=_scale(cols),
    )


def _scale(cols: _Columns) -> np.ndarray:
    """``rlnCtfScalefactor`` (each particle's CTF amplitude), 1 when absent; refused unless
    positive and finite."""
    if not cols.has("rlnCtfScalefactor"):
        return np.ones(len(cols))
    scale = cols.numeric("rlnCtfScalefactor")
    bad = ~np.isfinite(scale) | (scale <= 0)
    if np.any(bad):
        row = int(np.argmax(bad))
        raise InputFileError(
            cols.source, f"rlnCtfScalefactor must be > 0, found {scale[row]:g} in row {row + 1}"
        )
    return scale


def _rotations(cols: _Columns) -> np.ndarray | None:
    """``(N, 3, 3)`` float64 RELION matrices from rot/tilt/psi (degrees), or None."""
    if not all(cols.has(name) for name in _ANGLES):
        return None
    degrees = np.stack([cols.numeric(name) for name in _ANGLES], axis=-1)
    return euler_relion_to_matrix(torch.from_numpy(np.deg2rad(degrees))).numpy()


def _shifts(cols: _Columns, pixel_size_a: np.ndarray, has_poses: bool) -> np.ndarray | None:
    """``(N, 2)`` ``t = (x, y)`` in Å from rlnOrigin{X,Y}Angst (Å) or rlnOrigin{X,Y} (px)."""
    for x_name, y_name, scale in (
        ("rlnOriginXAngst", "rlnOriginYAngst", np.ones_like(pixel_size_a)),
        ("rlnOriginX", "rlnOriginY", pixel_size_a),
    ):
        if cols.has(x_name) != cols.has(y_name):
            raise InputFileError(cols.source, f"has only one of {x_name} and {y_name}")
        if cols.has(x_name):
            xy = np.stack([cols.numeric(x_name), cols.numeric(y_name)], axis=-1)
            return xy * scale[:, None]
    return np.zeros((len(cols), 2)) if has_poses else None


def read_star(path: str | Path, datadir: str | Path | None = None) -> ParticleSet:
    """Read a RELION 3.0 / 3.1 / 5 particle STAR file.

    Image stacks are looked for as RELION does, relative to the working folder (a RELION
    project's root: ``Refine3D/job050/run_data.star`` names ``Extract/job012/...``), then
    relative to the STAR file's folder; with ``datadir``, there first, under their full relative
    name and under their base name (:func:`cryohydra.io.paths.resolve_stack_path`). A stack
    found nowhere is reported, naming the STAR file and the folders searched, when images are
    read.

    Returns a :class:`ParticleSet` in the project conventions: pixel size and shifts in Å,
    angles in radians, rotations ``(N, 3, 3)`` float64. Raises :class:`InputFileError` naming
    the file for anything it cannot use.
    """
    path = Path(path)
    cols = _columns(path)
    if cols.has("rlnCtfDataAreCtfPremultiplied") and np.any(
        cols.numeric("rlnCtfDataAreCtfPremultiplied") != 0
    ):
        raise InputFileError(
            path,
            "rlnCtfDataAreCtfPremultiplied is 1: the images were multiplied by their CTF "
            "(RELION's --ctf_premultiplied extraction), which cryohydra's imaging model does "
            "not describe; re-extract the particles without premultiplication",
        )
    stack_names, indices = _parse_image_names(cols)
    bases = [Path.cwd(), path.parent]  # a RELION project's root first, as RELION does
    image_paths = resolve_image_paths(stack_names, bases, datadir, path)
    header = functools.cache(lambda: first_stack_header(image_paths))
    pixel = _pixel_size(cols, header)
    rotations = _rotations(cols)
    return ParticleSet(
        source=path,
        image_paths=image_paths,
        image_indices=indices,
        pixel_size_a=pixel,
        box_size=_box_size(cols, header),
        ctf=_ctf(cols),
        rotations=rotations,
        shifts_a=_shifts(cols, pixel, rotations is not None),
        optics_group=cols.groups,
        search_dirs=stack_search_dirs(bases, datadir),
        image_names=stack_names,
        extra_columns={
            name: cols.particles[name].to_numpy()
            for name in cols.particles.columns
            if name not in _INTERPRETED
        },
        extra_optics_columns={}
        if cols.optics is None
        else {
            name: cols.optics[name].to_numpy()[cols.optics_rows]
            for name in cols.optics.columns
            if name not in _INTERPRETED and name not in cols.particles.columns
        },
    )


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _optics_keys(particles: ParticleSet) -> pd.DataFrame:
    """Per particle, the values that must be equal within one output optics group."""
    keys = {
        "rlnOpticsGroup": particles.optics_group,
        "rlnImagePixelSize": particles.pixel_size_a,
    }
    if particles.ctf is not None:
        keys["rlnVoltage"] = particles.ctf.voltage_kv
        keys["rlnSphericalAberration"] = particles.ctf.cs_mm
        keys["rlnAmplitudeContrast"] = particles.ctf.amplitude_contrast
    keys.update(particles.extra_optics_columns)
    return pd.DataFrame(keys)


def _optics_table(particles: ParticleSet) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``optics`` block and each particle's group number in it.

    One group per distinct (optics group, pixel size, voltage, Cs, amplitude contrast). The
    input group numbers are kept when they already identify the groups; else 1..K.
    """
    keys = _optics_keys(particles)
    unique = keys.drop_duplicates().reset_index(drop=True)
    row = keys.merge(unique.reset_index(), on=list(keys.columns), how="left")["index"]
    if unique["rlnOpticsGroup"].is_unique:
        numbers = unique["rlnOpticsGroup"].to_numpy(np.int64)
    else:
        numbers = np.arange(1, len(unique) + 1, dtype=np.int64)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": numbers,
            "rlnOpticsGroupName": unique["rlnOpticsGroupName"].to_numpy()
            if "rlnOpticsGroupName" in unique.columns
            else [f"opticsGroup{n}" for n in numbers],
        }
    )
    for name in particles.extra_optics_columns:
        if name != "rlnOpticsGroupName":
            optics[name] = unique[name].to_numpy()
    for name in ("rlnAmplitudeContrast", "rlnSphericalAberration", "rlnVoltage"):
        if name in unique.columns:
            optics[name] = unique[name].to_numpy()
    optics["rlnImagePixelSize"] = unique["rlnImagePixelSize"].to_numpy()
    if particles.box_size is not None:
        optics["rlnImageSize"] = int(particles.box_size)
    optics["rlnImageDimensionality"] = 2
    return optics, numbers[row.to_numpy(np.int64)]


def _stack_names(particles: ParticleSet, out_dir: Path) -> np.ndarray:
    """Each particle's stack as the written file names it: as the input named it where that
    name still reaches the same file from the working folder (a RELION project's root, which
    RELION resolves names against), else relative to ``out_dir``."""
    relative = relative_image_paths(particles.image_paths, out_dir)
    if particles.image_names is None:
        return relative
    names = np.asarray(particles.image_names, dtype=object)
    keep = np.zeros(len(names), dtype=bool)
    for name in np.unique(names.astype(str)):
        rows = names == name
        on_disk = Path(name)
        if on_disk.is_absolute() or not on_disk.is_file():
            continue
        target = particles.image_paths[rows][0]
        if Path(target).is_file() and os.path.samefile(on_disk, target):
            keep |= rows
    return np.where(keep, names, relative)


def _particle_table(particles: ParticleSet, out_dir: Path, groups: np.ndarray) -> pd.DataFrame:
    """The ``particles`` block: image names (:func:`_stack_names`), CTF and pose columns, and
    the input's other columns unchanged."""
    relative = _stack_names(particles, out_dir)
    numbers = pd.Series(particles.image_indices + 1).map("{:06d}".format)
    table = pd.DataFrame({"rlnImageName": numbers + "@" + pd.Series(relative, dtype=str)})
    table["rlnOpticsGroup"] = groups
    ctf = particles.ctf
    if ctf is not None:
        table["rlnDefocusU"] = ctf.defocus_u_a
        table["rlnDefocusV"] = ctf.defocus_v_a
        table["rlnDefocusAngle"] = np.rad2deg(ctf.astigmatism_angle_rad)
        table["rlnPhaseShift"] = np.rad2deg(ctf.phase_shift_rad)
        table["rlnCtfBfactor"] = ctf.bfactor_a2
        if np.any(ctf.scale != 1):
            table["rlnCtfScalefactor"] = ctf.scale
    if particles.rotations is not None:
        angles = matrix_to_euler_relion(torch.from_numpy(particles.rotations)).numpy()
        for i, name in enumerate(_ANGLES):
            table[name] = np.rad2deg(angles[:, i])
    if particles.shifts_a is not None:
        table["rlnOriginXAngst"] = particles.shifts_a[:, 0]
        table["rlnOriginYAngst"] = particles.shifts_a[:, 1]
    for name, values in particles.extra_columns.items():
        if name not in table.columns:
            table[name] = values
    return table


def write_star(path: str | Path, particles: ParticleSet, force: bool = False) -> Path:
    """Write ``particles`` as a RELION 3.1 STAR file (blocks ``optics`` and ``particles``).

    Image names are ``000001@stack``, the stack named as the input named it where that still
    holds from the working folder, else by its path relative to ``path``'s folder;
    angles are written in degrees, shifts as ``rlnOriginXAngst/YAngst`` in Å. Refuses to
    overwrite an existing file unless ``force``; the file appears complete or not at all.
    """
    path = Path(path)
    optics, groups = _optics_table(particles)
    table = _particle_table(particles, path.parent, groups)
    with atomic_output(path, force) as tmp:
        starfile.write(
            {"optics": optics, "particles": table}, tmp, float_format=_FLOAT_FORMAT, sep=" "
        )
    return path
