"""Helpers shared by the metadata readers and writers (STAR, cryoSPARC .cs).

* where an image stack named in a metadata file lives on disk,
* what the header of the first stack says (box size, voxel size),
* checking that numbers read from a file are finite,
* writing an output file atomically (never a half-written file, never an unwanted overwrite).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import mrcfile
import numpy as np

from cryohydra.io.errors import InputFileError, check_writable

__all__ = [
    "resolve_stack_path",
    "resolve_image_paths",
    "stack_search_dirs",
    "relative_image_paths",
    "first_stack_header",
    "check_finite",
    "atomic_output",
]

# Permissions a new file gets from open(): 0o666 minus the process umask.
_UMASK = os.umask(0)
os.umask(_UMASK)


def resolve_stack_path(
    name: str,
    base_dirs: Sequence[Path],
    datadir: Path | None = None,
    source: str | Path | None = None,
) -> str:
    """Where the stack ``name`` (as written in a metadata file) is on disk, as an absolute path.

    As RELION does, a relative name is looked for under each folder of ``base_dirs`` in turn
    (the readers pass the working folder, which is a RELION project's root, then the metadata
    file's folder); with ``datadir``, under ``datadir / name`` and ``datadir / basename(name)``
    first. If two base folders hold different files of that name, which one is meant is
    ambiguous: :class:`InputFileError` naming ``source`` and both (``--datadir`` chooses). If
    none exists, the name under the last base folder (the metadata file's) is returned, so
    the error about the missing stack is raised when images are read (naming the metadata
    file and the folders searched). An absolute
    ``name`` is tried as is, then under ``datadir`` by its basename.
    """
    if datadir is not None:
        for candidate in (Path(datadir) / name, Path(datadir) / Path(name).name):
            if candidate.is_file():
                return os.path.abspath(candidate)
    found = [Path(base) / name for base in base_dirs if (Path(base) / name).is_file()]
    distinct: list[Path] = []
    for candidate in found:
        if not any(os.path.samefile(candidate, other) for other in distinct):
            distinct.append(candidate)
    if len(distinct) > 1:
        listed = " and ".join(os.path.abspath(c) for c in distinct)
        raise InputFileError(
            source if source is not None else name,
            f"image stack {name!r} exists as two different files, {listed}; give the folder "
            "that holds the stacks with --datadir",
        )
    if distinct:
        return os.path.abspath(distinct[0])
    return os.path.abspath(Path(datadir if datadir is not None else base_dirs[-1]) / name)


def stack_search_dirs(base_dirs: Sequence[Path], datadir: str | Path | None) -> tuple[str, ...]:
    """The folders :func:`resolve_stack_path` searches, as absolute paths (for messages)."""
    dirs = [] if datadir is None else [os.path.abspath(datadir)]
    return tuple(dict.fromkeys(dirs + [os.path.abspath(base) for base in base_dirs]))


def resolve_image_paths(
    names: Iterable[str],
    base_dirs: Sequence[Path],
    datadir: str | Path | None = None,
    source: str | Path | None = None,
) -> np.ndarray:
    """:func:`resolve_stack_path` for each name, ``(N,)`` object array of str.

    Each distinct name is looked up on disk once.
    """
    names = np.asarray(list(names), dtype=object)
    datadir = None if datadir is None else Path(datadir)
    unique, inverse = np.unique(names.astype(str), return_inverse=True)
    resolved = np.array(
        [resolve_stack_path(name, base_dirs, datadir, source) for name in unique], dtype=object
    )
    return resolved[inverse.reshape(-1)] if len(names) else np.empty(0, dtype=object)


def relative_image_paths(paths: np.ndarray, out_dir: Path) -> np.ndarray:
    """Stack paths relative to ``out_dir`` (the folder of the metadata file being written)."""
    unique, inverse = np.unique(np.asarray(paths, dtype=str), return_inverse=True)
    start = os.path.abspath(out_dir)
    rel = np.array([os.path.relpath(os.path.abspath(p), start) for p in unique], dtype=object)
    return rel[inverse.reshape(-1)] if len(unique) else np.empty(0, dtype=object)


def first_stack_header(paths: Iterable[str]) -> tuple[int, float | None] | None:
    """Box size (px, the header's ``nx``) and voxel size (Å, None if unset) of the first stack
    in ``paths`` that exists and has a readable header; None when there is none.

    Only the header is read, so a truncated stack is reported later, when images are read.
    """
    for path in dict.fromkeys(paths):
        if not Path(path).is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                    box = int(mrc.header.nx)
                    voxel = float(mrc.voxel_size.x)
        except (ValueError, OSError):
            continue
        if box <= 0:
            continue
        return box, (voxel if np.isfinite(voxel) and voxel > 0 else None)
    return None


def check_finite(values: np.ndarray, source: str | Path, label: str) -> np.ndarray:
    """``values`` as float64, or :class:`InputFileError` naming ``source``, ``label`` and the
    first row (1-based) holding NaN, infinity or a non-number."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.nonzero(bad.reshape(len(values), -1).any(axis=1))[0][0])
        raise InputFileError(
            source,
            f"{label} is missing, not a number or infinite in row {row + 1} "
            f"({int(bad.reshape(len(values), -1).any(axis=1).sum())} such rows)",
        )
    return values


@contextlib.contextmanager
def atomic_output(path: str | Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success move it onto ``path``.

    Refuses (:class:`~cryohydra.io.errors.OutputExistsError`) if ``path`` exists and ``force``
    is False. On any error the temporary file is removed and ``path`` is left untouched.
    """
    path = check_writable(path, force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
