"""MRC / MRCS maps and image stacks, through ``mrcfile``.

Volumes are ``(z, y, x)`` and stacks ``(n, y, x)``, float32, exactly as ``mrcfile`` returns
them. Stacks are memory-mapped so that a stack larger than memory is never loaded whole.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np

from cryohydra.io.errors import InputFileError, check_writable

__all__ = ["read_map", "write_map", "open_stack", "StackWriter"]


def _open_mmap(path: Path):
    if not path.exists():
        raise InputFileError(path, "file does not exist")
    try:
        return mrcfile.mmap(path, mode="r", permissive=False)
    except ValueError as err:
        strict_error = err
    # Many real stacks (older RELION, cryoDRGN and EMAN2 outputs) lack the 'MAP ' ID string or
    # the machine stamp. Accept them when the header still describes a data block that is
    # entirely on disk; a truncated or garbled file leaves ``data`` None in permissive mode.
    mrc = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError):
        pass
    if mrc is not None and mrc.data is not None:
        return mrc
    if mrc is not None:
        mrc.close()
    size = path.stat().st_size
    raise InputFileError(
        path, f"not a readable MRC file, or truncated ({size} bytes on disk): {strict_error}"
    ) from strict_error


def _axis_order(header) -> tuple[int, int, int]:
    """Which of x (1), y (2), z (3) the file's columns, rows and sections are (``mapc``,
    ``mapr``, ``maps``); ``(1, 2, 3)``, the usual order, when the header does not say."""
    order = (int(header.mapc), int(header.mapr), int(header.maps))
    return order if sorted(order) == [1, 2, 3] else (1, 2, 3)


def read_map(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a 3D map: ``(z, y, x)`` float32 array and its voxel size in Å (None if unset).

    The header's axis order is honoured: a map stored with its sections along x
    (``mapc, mapr, maps = 3, 2, 1``, as some programs write) is transposed to ``(z, y, x)``.
    """
    path = Path(path)
    with _open_mmap(path) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32).copy()
        voxel = float(mrc.voxel_size.x)
        columns, rows, sections = _axis_order(mrc.header)
    if data.ndim != 3:
        raise InputFileError(path, f"expected a 3D map, found data of shape {data.shape}")
    stored = [sections, rows, columns]  # the spatial axis of each array axis
    data = np.ascontiguousarray(data.transpose([stored.index(3), stored.index(2), stored.index(1)]))
    if not np.all(np.isfinite(data)):
        raise InputFileError(path, "map contains NaN or infinite values")
    return data, (voxel if voxel > 0 else None)


def write_map(path: str | Path, data: np.ndarray, voxel_size_a: float, force: bool = False) -> Path:
    """Write a 3D map ``(z, y, x)`` or a stack as float32 with its voxel size (Å) in the header."""
    path = check_writable(path, force)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
        mrc.voxel_size = voxel_size_a
    return path


def open_stack(path: str | Path):
    """Memory-map a particle stack ``(n, y, x)`` read-only; returns an ``mrcfile`` object.

    A single 2D image is seen as a stack of one. The caller closes it.
    """
    path = Path(path)
    mrc = _open_mmap(path)
    shape = mrc.data.shape
    if len(shape) not in (2, 3):
        mrc.close()
        raise InputFileError(path, f"expected an image stack, found data of shape {shape}")
    if shape[-1] != shape[-2]:
        mrc.close()
        raise InputFileError(path, f"images are not square ({shape[-2]} x {shape[-1]} px)")
    return mrc


class StackWriter:
    """Write an ``(n, L, L)`` float32 stack chunk by chunk, never holding it in memory.

    >>> with StackWriter(path, n, L, pixel_size_a) as out:
    ...     out.write(0, chunk)  # chunk: (b, L, L), rows 0..b-1
    """

    def __init__(
        self, path: str | Path, n_images: int, box_size: int, pixel_size_a: float, force=False
    ):
        self.path = check_writable(path, force)
        self._mrc = mrcfile.new_mmap(
            self.path, shape=(n_images, box_size, box_size), mrc_mode=2, overwrite=True
        )
        self._mrc.set_image_stack()
        self._mrc.voxel_size = pixel_size_a

    @property
    def data(self) -> np.ndarray:
        """The memory-mapped ``(n, L, L)`` array, for reading back what was written."""
        return self._mrc.data

    def write(self, start: int, images: np.ndarray) -> None:
        self._mrc.data[start : start + len(images)] = images.astype(np.float32, copy=False)

    def close(self) -> None:
        self._mrc.update_header_stats()
        self._mrc.close()

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
