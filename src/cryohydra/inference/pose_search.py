"""Global pose search against the current map: projection matching on a grid of SO(3).

For image ``i`` (transform ``X_i`` with its shift ``t_i`` undone, CTF ``C_i``) and a grid
rotation ``R_g`` with central slice ``P_g = P(R_g) V``, the squared error summed over the
frequencies ``k`` compared is, up to a term that does not depend on ``g``,

    e(i, g) = sum_k C_ik^2 |P_gk|^2  -  2 Re sum_k C_ik P_gk conj(X_ik)

so all ``B x G`` errors are two real matrix products, ``(C^2) |P|^2^T`` and
``(C X) . P`` (``G`` in the thousands costs seconds at low resolution on a CPU).

Alternating a search with a known-pose reconstruction from the poses found
(:func:`~cryohydra.reconstruct.backproject.wiener_maps`) is iterative projection matching;
cryohydra runs a few rounds of it at the switch, from the map and poses of the amortized
stage, which the encoder alone leaves tens of degrees off on hard (elongated,
pseudo-symmetric) molecules.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cryohydra.geometry.rotations import exp_map, geodesic_distance
from cryohydra.geometry.sampling import so3_grid
from cryohydra.geometry.symmetry import angle_modulo, asymmetric_unit_mask
from cryohydra.inference.distributed import Context
from cryohydra.io.batches import ParticleBatches
from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.imaging import ImagingModel
from cryohydra.physics.projector import SliceGrid
from cryohydra.reconstruct.backproject import Accumulator, wiener_maps

__all__ = [
    "SCALE_LIMITS",
    "ClassSearchResult",
    "SearchResult",
    "amplitude_factors",
    "normalised_amplitudes",
    "best_grid_poses",
    "class_projection_matching",
    "grid_errors",
    "grid_spacing_deg",
    "local_offsets",
    "pair_errors",
    "refine_locally",
    "known_pose_map",
    "projection_matching",
]

# Bounds of a particle's estimated amplitude (the CTF's ``scale``, ``--amplitude-scale``):
# junk, which matches no projection, goes to the lower one and so weighs little in the maps.
SCALE_LIMITS = (0.1, 10.0)


def grid_errors(slices: torch.Tensor, spectra: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
    """Squared errors ``(B, G)``, up to a per-image constant, of ``B`` images against ``G``
    central slices.

    Args:
        slices: ``(G, P)`` complex slices of the volume at the compared frequencies.
        spectra: ``(B, P)`` complex image transforms with their shifts undone.
        ctf: ``(B, P)`` real values of each image's transfer function (CTF or ones).
    """
    power = slices.real**2 + slices.imag**2
    model = (ctf**2) @ power.T
    cross = (ctf * spectra.real) @ slices.real.T + (ctf * spectra.imag) @ slices.imag.T
    return model - 2 * cross


def best_grid_poses(
    slices: torch.Tensor,
    spectra: torch.Tensor,
    ctf: torch.Tensor,
    chunk: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``(B,)`` of the best of ``G`` slices for each image, and its error ``(B,)``
    (same constant as :func:`grid_errors`), the grid taken ``chunk`` slices at a time."""
    best_error = torch.full(spectra.shape[:1], torch.inf, device=spectra.device)
    best_index = torch.zeros(spectra.shape[:1], dtype=torch.int64, device=spectra.device)
    for start in range(0, slices.shape[0], chunk):
        errors = grid_errors(slices[start : start + chunk], spectra, ctf)
        value, index = errors.min(dim=1)
        better = value < best_error
        best_error = torch.where(better, value, best_error)
        best_index = torch.where(better, index + start, best_index)
    return best_index, best_error


@dataclass
class SearchResult:
    """What a global search found.

    Attributes:
        rotations: ``(N, 3, 3)`` the best rotation of each image.
        shifts_a: ``(N, 2)`` Å its shift (refined when the search refines shifts).
        changed: for each round, the fraction of images whose pose moved by more than half
            the grid's spacing (or, in the first round, all of them); weighted by their
            amplitudes when the search estimates them.
        settled: the last round moved at most the ``converged`` fraction.
        mean_error: the images' mean error at their poses in the last round, per compared
            frequency (as :func:`grid_errors`, without the images' own power): lower
            explains the images better; comparable between searches of the same images at
            the same resolution (e.g. several starts).
        sources: fraction of images whose final pose came from each source (``grid``,
            ``candidate`` (the encoder's heads), ``previous`` (the last round's pose)).
        seconds: the time taken.
        errors: ``(N,)`` each image's error at its pose in the last round (as
            :func:`grid_errors`: comparable between maps for the same image).
    """

    rotations: torch.Tensor
    shifts_a: torch.Tensor
    changed: list[float]
    settled: bool
    sources: dict[str, float]
    mean_error: float
    seconds: float
    errors: torch.Tensor


_GRID, _CANDIDATE, _PREVIOUS = 0, 1, 2
_SOURCES = ("grid", "candidate", "previous")
_BATCH = 512  # images per batch of the searches and reconstructions


def grid_spacing_deg(nside: int) -> float:
    """Approximate spacing (degrees) of :func:`~cryohydra.geometry.sampling.so3_grid`."""
    return 58.6 / nside


def local_offsets(step_deg: float) -> torch.Tensor:
    """``(26, 3, 3)`` small rotations ``exp([w])`` with ``w`` on the 26 outer points of a
    ``3 x 3 x 3`` cube of side ``2 * step_deg`` (a local search's neighbourhood)."""
    cube = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)] * 3)
    cube = cube[cube.abs().sum(dim=1) > 0]
    return exp_map(cube * np.deg2rad(step_deg))


def pair_errors(slices: torch.Tensor, spectra: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
    """Errors ``(B, C)`` of each image against its own ``C`` slices ``(B, C, P)``, with the
    same per-image constant as :func:`grid_errors` (so the two can be compared).

    ``spectra`` is ``(B, P)``, or ``(B, C, P)`` for one version of the image per slice
    (e.g. under ``C`` trial shifts; the constant ``|X|^2`` does not change with a shift).
    """
    if spectra.ndim == 2:
        spectra = spectra[:, None]
    model = ((ctf**2)[:, None] * (slices.real**2 + slices.imag**2)).sum(dim=-1)
    cross = slices.real * spectra.real + slices.imag * spectra.imag
    return model - 2 * (ctf[:, None] * cross).sum(dim=-1)


def amplitude_factors(
    slices: torch.Tensor, spectra: torch.Tensor, ctf: torch.Tensor, grid: SliceGrid
) -> torch.Tensor:
    """``(B,)`` float64: the least-squares factor ``b = Re <C P, X> / |C P|^2`` of each image
    ``X`` ``(B, P)`` against its slice ``P`` ``(B, P)`` with its transfer ``C`` ``(B, P)``
    (which carries its current amplitude ``a``; the new one is ``a b``), over the points of
    ``grid`` but the mean (``k = 0``, which an uneven background shifts)."""
    compared = torch.linalg.vector_norm(grid.coords[:, :2], dim=-1) > 0.5
    model = (ctf * slices)[:, compared].cdouble()
    image = spectra[:, compared].cdouble()
    inner = (model.conj() * image).real.sum(dim=-1)
    return inner / model.abs().square().sum(dim=-1).clamp_min(1e-30)


def normalised_amplitudes(
    found: torch.Tensor, n_total: int, context: Context | None = None
) -> torch.Tensor:
    """Amplitudes ``(n,)`` (this rank's) bounded to :data:`SCALE_LIMITS` and divided by their
    mean over all ``n_total`` particles (the map holds the overall scale), then bounded
    again."""
    context = context or Context()
    found = found.clamp(*SCALE_LIMITS)
    mean = context.sum_float(float(found.sum())) / n_total
    return (found / mean).clamp(*SCALE_LIMITS)


def _slices(volume: HartleyVolume, rotations: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """``(G, P)`` central slices of the volume for ``G`` rotations, 4096 at a time."""
    hartley = volume.hartley()
    chunks = torch.split(rotations, 4096)
    return torch.cat([volume.slices(chunk, grid, hartley) for chunk in chunks])


def _reconstruction_radius(grid: SliceGrid) -> float:
    """Radius (Fourier pixels) of the points backprojected: a little beyond those compared."""
    return float(torch.linalg.vector_norm(grid.coords[:, :2], dim=-1).max()) + 2


def _add_to_halves(
    halves: list[Accumulator],
    batch,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    data: ParticleBatches,
    members: torch.Tensor | None = None,
) -> None:
    """Backproject a batch into two half-sets (even and odd rows), with the CTF; only the
    images where ``members`` ``(B,)`` is true, if given."""
    for parity, accumulator in enumerate(halves):
        chosen = batch.rows % 2 == parity
        if members is not None:
            chosen = chosen & members
        picked = chosen.nonzero()[:, 0]
        if len(picked) == 0:  # e.g. no image of this class in the batch
            continue
        rows = batch.rows[picked].cpu().numpy()
        accumulator.add(
            batch.images[picked],
            rotations[picked],
            shifts_a[picked],
            data.transfer_function(rows),
            data.pixel_size_a,
        )


def _sum_over_ranks(halves: list[Accumulator], context: Context) -> None:
    for accumulator in halves:
        context.sum(accumulator.numerator_sum)
        context.sum(accumulator.weight_sum)
        accumulator.count = int(context.sum_float(accumulator.count))


@torch.no_grad()
def known_pose_map(
    data: ParticleBatches,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    resolution_a: float,
    batch_size: int = _BATCH,
    context: Context | None = None,
    symmetry: torch.Tensor | None = None,
    members: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Wiener-filtered map ``(L, L, L)`` of ``data`` at its working box from the poses
    ``(N, 3, 3)``, ``(N, 2)`` Å, backprojected up to ``resolution_a`` (the reconstruction of
    one round of :func:`projection_matching`; sums added over the ranks of a torchrun run),
    with each image at every mate of its pose under ``symmetry`` ``(G, 3, 3)`` if given;
    from the images where ``members`` ``(N,)`` bool is true, if given (one class's)."""
    classes = None if members is None else torch.where(members, 0, -1)
    (halves,) = _class_halves(
        data, rotations[:, None], shifts_a[:, None], classes, resolution_a, batch_size, symmetry
    )
    _sum_over_ranks(halves, context or Context())
    return wiener_maps(*halves)[0].to(shifts_a.device)


def _class_halves(
    data: ParticleBatches,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    classes: torch.Tensor | None,
    resolution_a: float,
    batch_size: int,
    symmetry: torch.Tensor | None,
) -> list[list[Accumulator]]:
    """Each of ``K`` classes' two half-set sums (this rank's), from one pass over ``data``:
    class ``k`` from the images whose ``classes`` ``(N,)`` is ``k`` (None: every image, one
    class) at their poses in it, ``(N, K, 3, 3)``, ``(N, K, 2)`` Å."""
    device = shifts_a.device
    box = data.working_box
    grid = data.grid_at(resolution_a)
    radius = _reconstruction_radius(grid)
    k = rotations.shape[1]
    halves = [
        [Accumulator.zeros(box, device, radius, symmetry) for _ in range(2)] for _ in range(k)
    ]
    n = len(data)
    for start in range(0, n, batch_size):
        batch = data.load(np.arange(start, min(n, start + batch_size)), grid)
        rows = batch.rows
        for klass, pair in enumerate(halves):
            chosen = None if classes is None else classes[rows] == klass
            _add_to_halves(pair, batch, rotations[rows, klass], shifts_a[rows, klass], data, chosen)
    return halves


def _own_slices(
    volume: HartleyVolume, hartley: torch.Tensor, rotations: torch.Tensor, grid: SliceGrid
) -> torch.Tensor:
    """``(B, C, P)`` slices of each image's own ``C`` rotations ``(B, C, 3, 3)``."""
    batch, count = rotations.shape[:2]
    return volume.slices(rotations.reshape(-1, 3, 3), grid, hartley).reshape(batch, count, -1)


def _take(options: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``options[b, index[b]]`` for each ``b``."""
    return options[torch.arange(len(index), device=index.device), index]


def refine_locally(
    volume: HartleyVolume,
    hartley: torch.Tensor,
    model: ImagingModel,
    spectra: torch.Tensor,
    ctf: torch.Tensor,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    steps_deg: tuple[float, ...],
    shift_steps_a: tuple[float, ...],
    max_shift_a: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy local search around each image's pose: for each rotation step, the best of the
    pose and its 26 neighbours (:func:`local_offsets`, applied as ``R exp([w])``); then for
    each shift step the best of the shift and its 8 neighbours on a square of that side.

    Args:
        spectra: ``(B, P)`` image transforms *as stored* (shifts not undone).
        rotations, shifts_a: ``(B, 3, 3)`` and ``(B, 2)`` Å, the starting poses.
        max_shift_a: shifts are kept within this bound on each axis (None: free).

    Returns rotations, shifts and errors (as :func:`grid_errors`) of the poses found; a pose
    only changes where the error falls.
    """
    grid = model.points
    centred = model.unshift(spectra, shifts_a)
    current = pair_errors(_own_slices(volume, hartley, rotations[:, None], grid), centred, ctf)
    errors = current[:, 0]
    for step in steps_deg:
        trial = rotations[:, None] @ local_offsets(step).to(rotations)[None]
        values, index = pair_errors(_own_slices(volume, hartley, trial, grid), centred, ctf).min(1)
        better = values < errors
        rotations = torch.where(better[:, None, None], _take(trial, index), rotations)
        errors = torch.where(better, values, errors)
    if not shift_steps_a:
        return rotations, shifts_a, errors
    slices = _own_slices(volume, hartley, rotations[:, None], grid)  # (B, 1, P)
    square = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0])] * 2)
    square = square[square.abs().sum(dim=1) > 0].to(shifts_a)  # (8, 2)
    for step in shift_steps_a:
        trial = shifts_a[:, None] + step * square[None]  # (B, 8, 2)
        if max_shift_a is not None:
            trial = trial.clamp(-max_shift_a, max_shift_a)
        moved = model.unshift(spectra[:, None].expand(-1, len(square), -1), trial)  # (B, 8, P)
        values, index = pair_errors(slices.expand(-1, 8, -1), moved, ctf).min(1)
        better = values < errors
        shifts_a = torch.where(better[:, None], _take(trial, index), shifts_a)
        errors = torch.where(better, values, errors)
    return rotations, shifts_a, errors


@torch.no_grad()
def projection_matching(
    volume: HartleyVolume,
    data: ParticleBatches,
    shifts_a: torch.Tensor,
    resolution_a: float,
    nside: int,
    rounds: int,
    converged: float,
    rotations: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    refine: bool = False,
    max_shift_a: float | None = None,
    amplitudes: bool = False,
    batch_size: int = _BATCH,
    context: Context | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    members: torch.Tensor | None = None,
    rebuild: bool = True,
) -> SearchResult:
    """Iterative projection matching at ``resolution_a``.

    ``on_batch(round, images done, images)`` is called after every batch (a progress line).

    Each round finds every image's best pose among the rotations of the grid
    ``so3_grid(nside)`` (its shift held), its own ``candidates`` (e.g. the encoder's heads)
    and, after the first round, its pose of the previous round; with ``refine``, a local
    search then refines that pose's rotation (steps of a half and a quarter of the grid's
    spacing) and shift (steps of one and half a pixel) (:func:`refine_locally`). The round
    ends by replacing ``volume`` with the Wiener-filtered reconstruction from the poses
    found (two halves, odd and even rows, for the filter). Stops after ``rounds`` or once
    at most ``converged`` of the images moved by more than half the grid's spacing.

    In a torchrun run (``context``) each rank searches its own particles (``data`` is its
    shard) and the reconstruction's sums are added over the ranks.

    With ``amplitudes``, every round also estimates each image's amplitude against the map
    at the pose it found (:func:`amplitude_factors`, :func:`normalised_amplitudes`) and sets
    it as its CTF's scale (``data.set_amplitude_scale``), so the next round's map weighs each
    image by it (``a C X`` and ``a^2 C^2``): junk, which matches no projection, goes to the
    floor and no longer shapes the map. The fraction of images that moved is then weighted
    by the amplitudes too (junk has no pose to settle on and would keep it high).

    Args:
        shifts_a: ``(N, 2)`` Å starting shifts.
        rotations: ``(N, 3, 3)`` starting rotations (what the first round's change is
            measured against), or None (the first round's change is then 1).
        candidates: ``(N, C, 3, 3)`` rotations each image also tries in every round.
        max_shift_a: bound on each axis of the refined shifts (0: shifts are not refined).
        members: ``(N,)`` bool, the images of one class (``--classes``): every image is
            searched, but the map is rebuilt from these alone and only they count in the
            fraction that moved (None: all).
    """
    context = context or Context()
    start_time = time.perf_counter()
    device = shifts_a.device
    grid_rotations = so3_grid(nside).to(device, torch.float32)
    if volume.operators is not None:  # an imposed group: its asymmetric unit is enough
        grid_rotations = grid_rotations[asymmetric_unit_mask(grid_rotations, volume.operators)]
    spacing = grid_spacing_deg(nside)
    steps = (spacing / 2, spacing / 4) if refine else ()
    pixel = data.pixel_size_a
    shifts_free = max_shift_a is None or max_shift_a > 0
    shift_steps = (pixel, pixel / 2) if refine and shifts_free else ()
    grid = data.grid_at(resolution_a)
    box = data.working_box
    radius = _reconstruction_radius(grid)
    n = len(data)
    current = None if rotations is None else rotations.to(device, torch.float32)
    shifts = shifts_a.to(device, torch.float32).clone()
    source = torch.zeros(n, dtype=torch.int64, device=device)
    factors = torch.ones(n, dtype=torch.float64, device=device)
    last_errors = torch.zeros(n, dtype=torch.float64, device=device)
    changed: list[float] = []
    for round_ in range(rounds):
        slices = _slices(volume, grid_rotations, grid)
        hartley = volume.hartley()
        found = torch.empty(n, 3, 3, device=device)
        found_shifts = shifts.clone()
        halves = [
            Accumulator.zeros(box, device, radius, volume.operators)
            for _ in range(2 if rebuild else 0)
        ]
        error_sum = 0.0
        for start in range(0, n, batch_size):
            if on_batch is not None:
                on_batch(round_, start, n)
            batch = data.load(np.arange(start, min(n, start + batch_size)), grid)
            rows = batch.rows
            centred = batch.model.unshift(batch.spectra, shifts[rows])
            index, errors = best_grid_poses(slices, centred, batch.transfer)
            best = grid_rotations[index]
            origin = torch.full_like(index, _GRID)
            options = []
            if candidates is not None:
                options.append((candidates[rows].to(device, torch.float32), _CANDIDATE))
            if round_ > 0 and current is not None:
                options.append((current[rows][:, None], _PREVIOUS))
            for own, label in options:
                own_slices = _own_slices(volume, hartley, own, grid)
                values, pick = pair_errors(own_slices, centred, batch.transfer).min(dim=1)
                better = values < errors
                best = torch.where(better[:, None, None], _take(own, pick), best)
                errors = torch.where(better, values, errors)
                origin[better] = label
            moved_shifts = shifts[rows]
            if refine:
                best, moved_shifts, errors = refine_locally(
                    volume,
                    hartley,
                    batch.model,
                    batch.spectra,
                    batch.transfer,
                    best,
                    moved_shifts,
                    steps,
                    shift_steps,
                    max_shift_a,
                )
            if amplitudes:
                own = _own_slices(volume, hartley, best[:, None], grid)[:, 0]
                at_pose = batch.model.unshift(batch.spectra, moved_shifts)
                factors[rows] = amplitude_factors(own, at_pose, batch.transfer, grid)
            found[rows] = best
            last_errors[rows] = errors.double()
            error_sum += float(errors.double().sum())
            found_shifts[rows] = moved_shifts
            source[rows] = origin
            if rebuild:
                chosen = None if members is None else members[rows]
                _add_to_halves(halves, batch, best, moved_shifts, data, chosen)
        if rebuild:
            _sum_over_ranks(halves, context)
        weights = torch.ones(n, dtype=torch.float64, device=device)
        if amplitudes:
            scale = torch.as_tensor(data.particles.require_ctf().scale, device=device) * factors
            weights = normalised_amplitudes(scale, int(context.sum_float(float(n))), context)
            data.set_amplitude_scale(weights.cpu().numpy())
        if members is not None:
            weights = weights * members.to(weights)
        if current is None:
            n_changed = float(weights.sum())
        else:
            if volume.operators is None:
                angles = torch.rad2deg(geodesic_distance(found, current))
            else:  # a move to a symmetry mate is no move
                angles = torch.rad2deg(angle_modulo(found, current, volume.operators))
            n_changed = float(weights[angles > spacing / 2].sum())
        counted = context.sum_float(float(weights.sum()))
        changed.append(context.sum_float(n_changed) / counted if counted > 0 else 0.0)
        current, shifts = found, found_shifts
        if rebuild:
            volume.load_map(wiener_maps(*halves)[0].to(device))
        if changed[-1] <= converged:
            break
    assert current is not None
    counts = torch.bincount(source, minlength=len(_SOURCES)).to(torch.float64)
    total = context.sum_float(float(n))
    fractions = {
        name: context.sum_float(float(counts[i])) / total for i, name in enumerate(_SOURCES)
    }
    return SearchResult(
        current,
        shifts,
        changed,
        bool(changed and changed[-1] <= converged),
        fractions,
        context.sum_float(error_sum) / total / grid.n_points,
        time.perf_counter() - start_time,
        last_errors,
    )


@dataclass
class ClassSearchResult:
    """What a global search in several classes' maps found (:func:`class_projection_matching`).

    Attributes:
        rotations: ``(N, K, 3, 3)`` each image's best rotation in each class's map.
        shifts_a: ``(N, K, 2)`` Å its shift there.
        classes: ``(N,)`` each image's class (the map that explained it best).
        changed: for each round, the fraction of the images whose pose in their class's map
            moved by more than half the grid's spacing (pooled over the classes, so that a
            small class does not hold the search alone).
        class_changed: for each round, the fraction of images that changed class.
        settled: the last round moved at most the ``converged`` fraction of poses and classes.
        seconds: the time taken.
        errors: ``(N, K)`` each image's error at its pose in each map in the last round.
    """

    rotations: torch.Tensor
    shifts_a: torch.Tensor
    classes: torch.Tensor
    changed: list[float]
    class_changed: list[float]
    settled: bool
    seconds: float
    errors: torch.Tensor


@torch.no_grad()
def class_projection_matching(
    volumes: list[HartleyVolume],
    data: ParticleBatches,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    classes: torch.Tensor,
    resolution_a: float,
    nside: int,
    rounds: int,
    converged: float,
    candidates: torch.Tensor | None = None,
    refine: bool = False,
    max_shift_a: float | None = None,
    context: Context | None = None,
    on_batch: Callable[[int, int, int, int], None] | None = None,
) -> ClassSearchResult:
    """Iterative projection matching in ``K`` maps at once, with hard class assignment
    (``--classes``; 3D classification by global search, as RELION's with one pose per class).

    Each round searches every image in every class's map (:func:`projection_matching`, one
    round: the grid, the image's ``candidates`` in that class and its pose of the previous
    round), gives each image the class whose map explained it best, then rebuilds each map
    from its members at their poses (:func:`known_pose_map`; a class left empty keeps its
    map). Reassigning in every round, rather than once after each class's own search, lets
    the maps purify one another: on two structures of similar size (HSP90 and 6UO9, 64 px,
    SNR 0.1) a single reassignment left the encoder's classes as they were (0.73 in the
    right class) where joint rounds reached 0.92 after 16 (``docs/classes.md``). Stops after
    ``rounds`` or once at most ``converged`` of the images changed class and of the images
    moved pose in their class's map.

    Args:
        volumes: the ``K`` maps, replaced by their reconstructions.
        rotations: ``(N, K, 3, 3)`` starting rotations in each map.
        shifts_a: ``(N, K, 2)`` Å starting shifts.
        classes: ``(N,)`` starting classes (int64, ``0 .. K - 1``).
        candidates: ``(N, K, C, 3, 3)`` rotations each image also tries in each class's map
            in every round (e.g. the encoder's heads of that class).
        on_batch: ``(class, round, images done, images)``, called after every batch.
        Other arguments as :func:`projection_matching`.
    """
    context = context or Context()
    start_time = time.perf_counter()
    k = len(volumes)
    rotations = rotations.clone()
    shifts = shifts_a.clone()
    errors = torch.zeros(len(classes), k, dtype=torch.float64, device=classes.device)
    changed: list[float] = []
    class_changed: list[float] = []
    total = context.sum_float(float(len(classes)))

    def sizes(classes: torch.Tensor) -> list[float]:  # each class's members on all ranks
        return context.sum(torch.bincount(classes, minlength=k).double()).tolist()

    for round_ in range(rounds):
        moved = []
        members = sizes(classes)
        for klass, volume in enumerate(volumes):
            tried = [] if candidates is None else [candidates[:, klass]]
            if round_ > 0:
                tried.append(rotations[:, klass, None])

            def show(_: int, done: int, n: int, klass: int = klass, round_: int = round_) -> None:
                if on_batch is not None:
                    on_batch(klass, round_, done, n)

            found = projection_matching(
                volume,
                data,
                shifts[:, klass],
                resolution_a,
                nside,
                1,
                converged,
                rotations=rotations[:, klass],
                candidates=torch.cat(tried, dim=1) if tried else None,
                refine=refine,
                max_shift_a=max_shift_a,
                context=context,
                on_batch=show,
                members=classes == klass,
                rebuild=False,
            )
            rotations[:, klass], shifts[:, klass] = found.rotations, found.shifts_a
            errors[:, klass] = found.errors
            moved.append(found.changed[-1] * members[klass])
        assigned = errors.argmin(dim=1)
        class_changed.append(context.sum_float(float((assigned != classes).sum())) / total)
        changed.append(sum(moved) / total)
        classes = assigned
        group = volumes[0].operators
        sums = _class_halves(data, rotations, shifts, classes, resolution_a, _BATCH, group)
        for volume, halves, size in zip(volumes, sums, sizes(classes), strict=True):
            _sum_over_ranks(halves, context)
            if size > 0:
                volume.load_map(wiener_maps(*halves)[0].to(classes.device))
        if changed[-1] <= converged and class_changed[-1] <= converged:
            break
    return ClassSearchResult(
        rotations,
        shifts,
        classes,
        changed,
        class_changed,
        bool(changed and changed[-1] <= converged and class_changed[-1] <= converged),
        time.perf_counter() - start_time,
        errors,
    )
