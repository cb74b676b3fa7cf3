"""The one particle-set type every command consumes, whatever file it came from.

A :class:`ParticleSet` holds images *by reference* (stack path + index), and per particle the
CTF, the pose ``(R, t)`` when known and the optics (pixel size). Readers
(:mod:`cryohydra.io.star`, :mod:`cryohydra.io.cryosparc`) convert everything to the project
conventions (Å, radians, RELION matrix ``R``, shift ``t`` in Å), so no later code needs to know
the source format.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from cryohydra.io.errors import InputFileError
from cryohydra.io.mrc import open_stack
from cryohydra.physics.imaging import CTF, Identity, TransferFunction

__all__ = ["CTFParams", "ParticleSet", "concatenate", "random_half_split"]


@dataclass(frozen=True)
class CTFParams:
    """Per-particle CTF parameters, each an ``(N,)`` float64 array (RELION / CTFFIND meaning).

    ``scale`` multiplies the CTF (RELION's ``rlnCtfScalefactor``, cryoSPARC's ``ctf/scale``):
    each particle's amplitude relative to the others (ice thickness, dose); 1 when unknown.
    """

    defocus_u_a: np.ndarray
    defocus_v_a: np.ndarray
    astigmatism_angle_rad: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_rad: np.ndarray
    bfactor_a2: np.ndarray
    scale: np.ndarray | float = 1.0

    def __post_init__(self) -> None:
        n = len(self.defocus_u_a)
        for f in fields(self):
            value = np.asarray(getattr(self, f.name), dtype=np.float64)
            if value.shape != (n,):
                value = np.broadcast_to(value, (n,)).copy()
            object.__setattr__(self, f.name, value)

    def __len__(self) -> int:
        return len(self.defocus_u_a)

    def subset(self, indices: np.ndarray) -> CTFParams:
        return CTFParams(**{f.name: getattr(self, f.name)[indices] for f in fields(self)})

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ParticleSet:
    """Particles by reference, with per-particle metadata in the project conventions.

    Attributes:
        source: the metadata file this set was read from (used in error messages).
        image_paths: ``(N,)`` str, path of the stack holding each image.
        image_indices: ``(N,)`` int64, 0-based index of each image in its stack.
        pixel_size_a: ``(N,)`` float64, Å/px of the images as stored.
        box_size: side ``L`` of the images in pixels, or None when only metadata is known.
        ctf: per-particle CTF, or None when the file has none.
        rotations: ``(N, 3, 3)`` float64 ``R`` (molecule -> microscope), or None.
        shifts_a: ``(N, 2)`` float64 ``t = (x, y)`` in Å, or None.
        optics_group: ``(N,)`` int64, RELION optics group (1-based), 1 when absent.
        search_dirs: the folders searched for the stacks (named when one is missing).
        image_names: ``(N,)`` str, each stack's name as the metadata file wrote it, or None.
        extra_columns: per-particle columns of the input that nothing here interprets
            (``rlnMicrographName``, ``rlnCoordinateX``, ``rlnRandomSubset``...), ``(N,)`` each,
            carried into the STAR files written from this set.
        extra_optics_columns: the same for the input's optics-group columns, per particle.
    """

    source: Path
    image_paths: np.ndarray
    image_indices: np.ndarray
    pixel_size_a: np.ndarray
    box_size: int | None = None
    ctf: CTFParams | None = None
    rotations: np.ndarray | None = None
    shifts_a: np.ndarray | None = None
    optics_group: np.ndarray | None = None
    search_dirs: tuple[str, ...] = ()
    image_names: np.ndarray | None = None
    extra_columns: dict[str, np.ndarray] = field(default_factory=dict)
    extra_optics_columns: dict[str, np.ndarray] = field(default_factory=dict)
    _stacks: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        n = len(self.image_indices)
        self.image_paths = np.asarray(self.image_paths, dtype=object).reshape(n)
        self.image_indices = np.asarray(self.image_indices, dtype=np.int64)
        self.pixel_size_a = np.broadcast_to(
            np.asarray(self.pixel_size_a, dtype=np.float64), (n,)
        ).copy()
        if self.optics_group is None:
            self.optics_group = np.ones(n, dtype=np.int64)
        self.optics_group = np.asarray(self.optics_group, dtype=np.int64)
        if self.rotations is not None:
            self.rotations = np.asarray(self.rotations, dtype=np.float64).reshape(n, 3, 3)
        if self.shifts_a is not None:
            self.shifts_a = np.asarray(self.shifts_a, dtype=np.float64).reshape(n, 2)
        if self.ctf is not None and len(self.ctf) != n:
            raise ValueError(f"{self.source}: {len(self.ctf)} CTF rows for {n} particles")

    def __len__(self) -> int:
        return len(self.image_indices)

    # Open memory maps are not carried across pickling (e.g. into DataLoader workers).
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stacks"] = {}
        return state

    @property
    def has_poses(self) -> bool:
        return self.rotations is not None

    def require_ctf(self) -> CTFParams:
        """The CTF, or a clear error naming the file when it has none."""
        if self.ctf is None:
            raise InputFileError(
                self.source, "has no CTF parameters (defocus, voltage, Cs, amplitude contrast)"
            )
        return self.ctf

    def transfer_function(self, indices: np.ndarray, device=None) -> TransferFunction:
        """The transfer functions of the particles ``indices`` as tensors on ``device``: their
        CTF, or the identity when the set has no CTF parameters."""
        if self.ctf is None:
            return Identity(len(indices))
        return CTF.from_arrays(self.ctf.subset(indices).as_dict(), device)

    def require_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Rotations and shifts (zero when absent), or a clear error when there are no poses."""
        if self.rotations is None:
            raise InputFileError(self.source, "has no 3D poses (Euler angles or alignments3D)")
        shifts = self.shifts_a if self.shifts_a is not None else np.zeros((len(self), 2))
        return self.rotations, shifts

    def subset(self, indices: np.ndarray) -> ParticleSet:
        """A new set with the particles at ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)

        def pick(a):
            return None if a is None else a[indices]

        return replace(
            self,
            image_paths=self.image_paths[indices],
            image_indices=self.image_indices[indices],
            pixel_size_a=self.pixel_size_a[indices],
            ctf=None if self.ctf is None else self.ctf.subset(indices),
            rotations=pick(self.rotations),
            shifts_a=pick(self.shifts_a),
            optics_group=pick(self.optics_group),
            image_names=pick(self.image_names),
            extra_columns={k: v[indices] for k, v in self.extra_columns.items()},
            extra_optics_columns={k: v[indices] for k, v in self.extra_optics_columns.items()},
            _stacks={},
        )

    def fingerprint(self, n_sample: int = 8) -> dict:
        """What identifies these particles, for ``--resume``: their number, a hash of their
        image names (stack file name and index, in order) and a hash of ``n_sample`` images
        spread over the set (so a re-simulated set of the same names is told apart)."""
        names = hashlib.sha256()
        for path, index in zip(self.image_paths, self.image_indices, strict=True):
            names.update(f"{Path(path).name}@{int(index)}\n".encode())
        sample = hashlib.sha256()
        if len(self):
            rows = np.unique(np.linspace(0, len(self) - 1, min(n_sample, len(self))).astype(int))
            sample.update(np.ascontiguousarray(self.load_images(rows), np.float32).tobytes())
        return {
            "count": len(self),
            "names_sha256": names.hexdigest(),
            "sample_sha256": sample.hexdigest(),
        }

    def with_amplitude_scale(self, scale: np.ndarray) -> ParticleSet:
        """A new set whose CTF has the per-particle amplitude ``scale`` ``(N,)``."""
        ctf = self.require_ctf()
        return replace(self, ctf=replace(ctf, scale=np.asarray(scale, dtype=np.float64)))

    def with_poses(self, rotations: np.ndarray, shifts_a: np.ndarray | None) -> ParticleSet:
        """A new set with the given poses (``(N, 3, 3)``, ``(N, 2)`` Å)."""
        return replace(self, rotations=rotations, shifts_a=shifts_a, _stacks={})

    def _stack(self, path: str):
        stack = self._stacks.get(path)
        if stack is None:
            if not Path(path).exists():
                n_refs = int(np.sum(self.image_paths == path))
                looked = f" (looked in {', '.join(self.search_dirs)})" if self.search_dirs else ""
                raise InputFileError(
                    self.source,
                    f"image stack {path!r} (referenced by {n_refs} particles) does not "
                    f"exist{looked}; give the folder that holds the stacks with --datadir",
                )
            stack = open_stack(path)
            self._stacks[path] = stack
        return stack

    def check_images(self) -> None:
        """Fail early, naming the file, if a stack is missing, too short or of the wrong size."""
        for path in np.unique(self.image_paths):
            data = self._stack(path).data
            n_images = 1 if data.ndim == 2 else data.shape[0]
            highest = int(self.image_indices[self.image_paths == path].max())
            if highest >= n_images:
                raise InputFileError(
                    path,
                    f"holds {n_images} images but {self.source.name} asks for image "
                    f"{highest + 1} (1-based)",
                )
            if self.box_size is not None and data.shape[-1] != self.box_size:
                raise InputFileError(
                    path,
                    f"images are {data.shape[-1]} px but {self.source.name} says "
                    f"{self.box_size} px",
                )

    def scan_images(self, chunk: int = 1024) -> int:
        """Read every image once and refuse the set, before any work, if an image holds NaN or
        infinity or is constant (one value everywhere: an extraction off the micrograph or an
        empty slot). The :class:`InputFileError` names the stack and the 1-based index of each
        (the first 10) and how many there are. Returns the number of images read."""
        bad: list[tuple[str, int, str]] = []
        count = 0
        for start in range(0, len(self), chunk):
            rows = np.arange(start, min(len(self), start + chunk))
            flat = self.load_images(rows, check_finite=False).reshape(len(rows), -1)
            finite = np.isfinite(flat).all(axis=1)
            constant = finite & (flat.max(axis=1, initial=0) == flat.min(axis=1, initial=0))
            for row in rows[~finite | constant]:
                reason = "NaN or infinite values" if not finite[row - start] else "constant"
                bad.append((str(self.image_paths[row]), int(self.image_indices[row]) + 1, reason))
            count += len(rows)
        if bad:
            listed = "; ".join(f"{Path(p).name} image {i}: {why}" for p, i, why in bad[:10])
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise InputFileError(
                bad[0][0],
                f"{len(bad)} of the {len(self)} images in {self.source.name} cannot be used: "
                f"{listed}{more}. Remove them from the STAR file (or re-extract them)",
            )
        return count

    def load_images(
        self, indices: np.ndarray | None = None, check_finite: bool = True
    ) -> np.ndarray:
        """Images at ``indices`` (default all) as ``(B, L, L)`` float32, read from the stacks.

        Raises :class:`InputFileError` for a missing stack, an index past its end, a box size
        different from the set's, or (``check_finite``) an image holding NaN or infinity.
        """
        if indices is None:
            indices = np.arange(len(self))
        indices = np.asarray(indices, dtype=np.int64)
        out: np.ndarray | None = None
        paths = self.image_paths[indices]
        for path in np.unique(paths):
            rows = np.nonzero(paths == path)[0]
            data = self._stack(path).data
            if data.ndim == 2:
                data = data[None]
            wanted = self.image_indices[indices[rows]]
            if wanted.max(initial=-1) >= data.shape[0]:
                raise InputFileError(
                    path,
                    f"holds {data.shape[0]} images but {self.source.name} asks for image "
                    f"{int(wanted.max()) + 1} (1-based)",
                )
            if out is None:
                box = data.shape[-1]
                if self.box_size is not None and box != self.box_size:
                    raise InputFileError(
                        path, f"images are {box} px but {self.source.name} says {self.box_size} px"
                    )
                out = np.empty((len(indices), box, box), dtype=np.float32)
            elif data.shape[-1] != out.shape[-1]:
                raise InputFileError(
                    path, f"images are {data.shape[-1]} px, other stacks {out.shape[-1]} px"
                )
            # Sorted reads are sequential on disk; fancy indexing a memmap copies only those.
            order = np.argsort(wanted, kind="stable")
            out[rows[order]] = data[wanted[order]]
        if out is None:
            return np.empty((0, self.box_size or 0, self.box_size or 0), dtype=np.float32)
        bad = ~np.isfinite(out).all(axis=(1, 2)) if check_finite else np.zeros(0, dtype=bool)
        if bad.any():
            first = int(np.nonzero(bad)[0][0])
            raise InputFileError(
                self.image_paths[indices[first]],
                f"image {int(self.image_indices[indices[first]]) + 1} (1-based) contains NaN "
                f"or infinite values ({int(bad.sum())} such images in this batch)",
            )
        return out

    def close(self) -> None:
        for stack in self._stacks.values():
            stack.close()
        self._stacks.clear()


def concatenate(sets: list[ParticleSet], source: str | Path) -> ParticleSet:
    """One set holding ``sets`` one after the other (a mixture, or stacks joined), read as if
    from ``source``. They must agree on the box and on having CTFs and poses; a column that
    not every set has is dropped; the optics groups are kept as numbered."""
    first = sets[0]
    for other in sets[1:]:
        if other.box_size != first.box_size:
            raise InputFileError(
                other.source, f"has {other.box_size} px images, {first.source} {first.box_size}"
            )
        for name, what in (("ctf", "CTF parameters"), ("rotations", "poses")):
            if (getattr(other, name) is None) != (getattr(first, name) is None):
                raise InputFileError(other.source, f"and {first.source}: only one has {what}")

    def joined(name: str):
        values = [getattr(s, name) for s in sets]
        return None if values[0] is None else np.concatenate(values)

    def common(name: str) -> dict[str, np.ndarray]:
        keys = set.intersection(*(set(getattr(s, name)) for s in sets))
        return {k: np.concatenate([getattr(s, name)[k] for s in sets]) for k in sorted(keys)}

    ctf = None
    if first.ctf is not None:
        ctf = CTFParams(
            **{
                f.name: np.concatenate([getattr(s.ctf, f.name) for s in sets])  # type: ignore[union-attr]
                for f in fields(CTFParams)
            }
        )
    names = [s.image_names for s in sets]
    return ParticleSet(
        source=Path(source),
        image_paths=np.concatenate([s.image_paths for s in sets]),
        image_indices=np.concatenate([s.image_indices for s in sets]),
        pixel_size_a=np.concatenate([s.pixel_size_a for s in sets]),
        box_size=first.box_size,
        ctf=ctf,
        rotations=joined("rotations"),
        shifts_a=None
        if first.rotations is None
        else np.concatenate([s.require_poses()[1] for s in sets]),
        optics_group=joined("optics_group"),
        search_dirs=tuple(dict.fromkeys(d for s in sets for d in s.search_dirs)),
        image_names=None if any(n is None for n in names) else np.concatenate(names),
        extra_columns=common("extra_columns"),
        extra_optics_columns=common("extra_optics_columns"),
    )


def random_half_split(n_particles: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n_particles)`` into two sorted halves (gold standard)."""
    order = np.random.default_rng(seed).permutation(n_particles)
    half = (n_particles + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])
