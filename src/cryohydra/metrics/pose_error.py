"""Errors of estimated poses against true ones, modulo a global rotation, handedness and a
point-group symmetry (``docs/CONVENTIONS.md``, "Errors of poses").

Derivations (``x_scope = R x_mol``; the image of a map ``V`` in pose ``R`` is the integral
along z of ``V(R^T x)``):

* **Global rotation.** An estimated map rotated with respect to the true one,
  ``V_est(y) = V_true(Q' y)``, gives the same images in the poses ``R_est = R_true Q'``,
  since ``V_true(R_true^T x) = V_est(Q'^T R_true^T x) = V_est((R_true Q')^T x)``. So
  ``R_est Q = R_true`` with ``Q = Q'^T``: the global rotation multiplies on the **right**, and
  :func:`align_rotations` finds ``Q`` minimising ``sum ||R_i Q - T_i||_F^2``.
* **Handedness.** A mirrored estimate ``V_est(y) = V_true(Q' J y)``, ``J = diag(1, 1, -1)``,
  gives ``V_true(R^T x) = V_est(J Q'^T R^T J J x)``; the integral along z does not see the
  flip ``x -> J x``, so ``R_est = J R_true Q' J`` and ``R_est (J Q'^T J) = J R_true J``: the
  targets of the mirrored hand are ``T_i = J R_true_i J``.
* **Symmetry.** A molecule with point group ``G`` has ``V(g x) = V(x)`` for ``g`` in ``G``.
  Then ``V((R g^T)^T x) = V(g R^T x) = V(R^T x)``: the poses ``R g`` (``g`` over ``G``)
  all give the same image, so the symmetry also multiplies on the **right** of ``R_true``,
  and the error of particle ``i`` is ``min_g d(R_est_i Q, T_i g)`` (for the mirrored hand the
  group is ``J G J``, which is ``G`` itself for C_n and D_n in their standard orientation).

Alignment under symmetry (``G`` has more than one element). Each particle may have been
estimated as any symmetry mate, so the plain Procrustes average is meaningless. We minimise
``sum_i min_g ||R_i Q - T_i g||_F^2`` (the same as the geodesic error per particle, as the
chordal distance grows with the angle) by:

1. candidates: the plain Procrustes solution and, for a few seed particles ``i`` spread over
   the set, every ``Q = R_i^T T_i g`` (which makes particle ``i`` exact);
2. keep the candidate with the smallest mean error modulo ``G`` (on up to 2000 particles);
3. alternate: give each particle its best mate ``g_i``, re-solve the Procrustes problem for
   targets ``T_i g_i``, until the mates stop changing (each step lowers the objective).

Shifts (RELION 3.1, Å): with ``V_est(y) = V_true(Q'(y - c))`` (the estimate also translated
by ``c``, Å in its own frame), ``t_est = t_true + (R_est c)_xy`` for either hand. With
``fit_global_offset`` this ``c`` is fitted by least squares before the shift errors are taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import roma
import torch

from cryohydra.geometry.rotations import geodesic_distance
from cryohydra.geometry.symmetry import Symmetry, point_group, symmetry_group

__all__ = [
    "PoseErrors",
    "align_rotations",
    "plot_pose_error_histogram",
    "point_group",
    "pose_errors",
    "rotation_errors_under_alignment",
    "symmetry_group",
    "true_mates_in_estimate_frame",
]

ArrayLike = np.ndarray | torch.Tensor

_MIRROR = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
_N_SEEDS = 8
_MAX_SCORED = 2000
_MAX_ROUNDS = 50
_CANDIDATE_CHUNK = 32


def _as_rotations(rotations: ArrayLike) -> torch.Tensor:
    tensor = torch.as_tensor(rotations).to(torch.float64)
    if tensor.ndim != 3 or tensor.shape[-2:] != (3, 3):
        raise ValueError(f"expected (N, 3, 3) rotations, got shape {tuple(tensor.shape)}")
    return tensor


def _mate_traces(estimated: torch.Tensor, targets: torch.Tensor, group: torch.Tensor):
    """``tr((R_i Q)^T T_i g)`` for every particle and mate, given ``R_i Q``: ``(N, G)``."""
    relative = estimated.transpose(-1, -2) @ targets  # (N, 3, 3)
    return (relative[:, None] * group.transpose(-1, -2)[None]).sum(dim=(-1, -2))


def _best_mates(estimated: torch.Tensor, targets: torch.Tensor, group: torch.Tensor):
    """Targets ``T_i g_i`` with the mate nearest to ``estimated`` ``(N, 3, 3)``, and ``g_i``."""
    best = _mate_traces(estimated, targets, group).argmax(dim=1)
    return targets @ group[best], best


def _procrustes(estimated: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``argmin_Q sum ||R_i Q - T_i||_F^2`` over SO(3): ``special_procrustes(sum R_i^T T_i)``."""
    return roma.special_procrustes((estimated.transpose(-1, -2) @ targets).sum(0))


def _candidate_scores(
    candidates: torch.Tensor, estimated: torch.Tensor, targets: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """Mean angle (rad) modulo ``group`` of each of ``candidates`` ``(C, 3, 3)``: ``(C,)``."""
    mates = targets[:, None] @ group[None]  # (N, G, 3, 3)
    relative = estimated.transpose(-1, -2)[:, None] @ mates  # R_i^T T_i g
    flat = relative.reshape(-1, 9)  # (N G, 9): tr(Q^T A) is the dot product of the entries
    traces = torch.cat(
        [
            (chunk.reshape(-1, 9) @ flat.T).reshape(len(chunk), *mates.shape[:2]).amax(dim=-1)
            for chunk in candidates.split(_CANDIDATE_CHUNK)
        ]
    )
    cosine = ((traces - 1) / 2).clamp(-1.0, 1.0)
    return torch.arccos(cosine).mean(dim=1)


def _seed_candidates(
    estimated: torch.Tensor, targets: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """Plain Procrustes plus ``R_i^T T_i g`` for a few seed particles and every ``g``."""
    seeds = np.unique(np.linspace(0, len(estimated) - 1, _N_SEEDS).round().astype(int))
    seeded = estimated[seeds].transpose(-1, -2)[:, None] @ targets[seeds][:, None] @ group[None]
    return torch.cat([_procrustes(estimated, targets)[None], seeded.reshape(-1, 3, 3)])


def _align_modulo_group(
    estimated: torch.Tensor, targets: torch.Tensor, group: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """``Q`` minimising ``sum_i min_g ||R_i Q - T_i g||^2`` and the mean error (rad)."""
    if len(group) == 1:
        q = _procrustes(estimated, targets)
    else:
        candidates = _seed_candidates(estimated, targets, group)
        scored = torch.linspace(0, len(estimated) - 1, min(len(estimated), _MAX_SCORED)).long()
        scores = _candidate_scores(candidates, estimated[scored], targets[scored], group)
        q = candidates[scores.argmin()]
        previous = None
        for _ in range(_MAX_ROUNDS):
            mates, chosen = _best_mates(estimated @ q, targets, group)
            if previous is not None and torch.equal(chosen, previous):
                break
            q, previous = _procrustes(estimated, mates), chosen
    mates, _ = _best_mates(estimated @ q, targets, group)
    return q, float(geodesic_distance(estimated @ q, mates).mean())


def _hand(true: torch.Tensor, group: torch.Tensor, mirrored: bool):
    """Targets and symmetry group of one hand: ``(T, G)`` or ``(J T J, J G J)``."""
    if not mirrored:
        return true, group
    return _MIRROR @ true @ _MIRROR, _MIRROR @ group @ _MIRROR


def _align(
    estimated: torch.Tensor, true: torch.Tensor, group: torch.Tensor
) -> tuple[torch.Tensor, bool]:
    results = [(*_align_modulo_group(estimated, *_hand(true, group, m)), m) for m in (False, True)]
    q, _, mirrored = min(results, key=lambda result: result[1])
    return q, mirrored


def align_rotations(
    estimated: ArrayLike, true: ArrayLike, symmetry: Symmetry = "C1"
) -> tuple[torch.Tensor, bool]:
    """Global rotation ``Q`` ``(3, 3)`` and hand aligning ``estimated`` to ``true`` ``(N, 3, 3)``.

    ``Q`` minimises ``sum_i ||R_i Q - T_i||_F^2`` (closed form, SVD with det +1), with
    ``T_i = R_true_i`` or, for the mirrored hand, ``T_i = J R_true_i J``; the hand with the
    smaller mean geodesic error is kept, ``mirrored`` says which. With a symmetry other than
    C1 each ``T_i`` is the best of its mates ``T_i g`` (see the module docstring).
    """
    est, tru = _as_rotations(estimated), _as_rotations(true)
    if est.shape != tru.shape:
        raise ValueError(f"shapes differ: {tuple(est.shape)} vs {tuple(tru.shape)}")
    return _align(est, tru, symmetry_group(symmetry)[0])


def true_mates_in_estimate_frame(
    true_rot: ArrayLike, alignment: ArrayLike, mirrored: bool, symmetry: Symmetry = "C1"
) -> torch.Tensor:
    """The true poses and their symmetry mates ``(N, G, 3, 3)`` in the frame of the estimate
    that :func:`align_rotations` aligned (``R_est Q ~ T g``, so ``T g Q^T``): where, in the
    estimated map's frame, a particle's pose should be."""
    group, _ = symmetry_group(symmetry)
    targets, hand_group = _hand(_as_rotations(true_rot), group, mirrored)
    q = torch.as_tensor(alignment, dtype=torch.float64)
    return targets[:, None] @ hand_group[None] @ q.T


def rotation_errors_under_alignment(
    estimated_rot: ArrayLike,
    true_rot: ArrayLike,
    alignment: ArrayLike,
    mirrored: bool,
    symmetry: Symmetry = "C1",
) -> np.ndarray:
    """Rotation errors ``(N,)`` (degrees, modulo the symmetry) of ``estimated_rot`` under a
    given global alignment (e.g. one found for other poses of the same map, such as the best
    head's, to score every head in one frame)."""
    mates = true_mates_in_estimate_frame(true_rot, alignment, mirrored, symmetry)
    est = _as_rotations(estimated_rot)
    angles = geodesic_distance(est[:, None].expand_as(mates), mates)
    return torch.rad2deg(angles.amin(dim=1)).numpy()


def _summary(values: np.ndarray | None) -> tuple[float | None, float | None]:
    if values is None or len(values) == 0:
        return None, None
    return float(np.mean(values)), float(np.median(values))


@dataclass(frozen=True)
class PoseErrors:
    """Per-particle errors after the global alignment (see :func:`pose_errors`).

    Attributes:
        rotation_error_deg: ``(N,)`` geodesic angle ``2 arcsin(||R_est Q - T g||_F / sqrt 8)``
            (degrees), minimised over the symmetry mates ``g``.
        viewing_direction_error_deg: ``(N,)`` angle (degrees) between the third rows of
            ``R_est Q`` and ``T g``, minimised over ``g``.
        shift_error_a: ``(N,)`` ``|t_est - t_true|`` (Å), or None without shifts.
        alignment: ``(3, 3)`` the global rotation ``Q``.
        mirrored: whether the estimate has the other hand (``T = J R_true J``).
        symmetry: the point group the errors are taken modulo.
        global_offset_a: ``(3,)`` fitted translation ``c`` (Å) of the estimated map, or None.
    """

    rotation_error_deg: np.ndarray
    viewing_direction_error_deg: np.ndarray
    shift_error_a: np.ndarray | None
    alignment: np.ndarray
    mirrored: bool
    symmetry: str = "C1"
    global_offset_a: np.ndarray | None = None

    @property
    def mean_rotation_error_deg(self) -> float:
        return float(np.mean(self.rotation_error_deg))

    @property
    def median_rotation_error_deg(self) -> float:
        return float(np.median(self.rotation_error_deg))

    @property
    def mean_viewing_direction_error_deg(self) -> float:
        return float(np.mean(self.viewing_direction_error_deg))

    @property
    def median_viewing_direction_error_deg(self) -> float:
        return float(np.median(self.viewing_direction_error_deg))

    @property
    def mean_shift_error_a(self) -> float | None:
        return _summary(self.shift_error_a)[0]

    @property
    def median_shift_error_a(self) -> float | None:
        return _summary(self.shift_error_a)[1]

    def to_dict(self, per_particle: bool = False) -> dict:
        """JSON-ready summary; ``per_particle`` adds the ``(N,)`` arrays as lists."""
        out = {
            "n_particles": len(self.rotation_error_deg),
            "symmetry": self.symmetry,
            "mirrored": self.mirrored,
            "alignment": self.alignment.tolist(),
            "mean_rotation_error_deg": self.mean_rotation_error_deg,
            "median_rotation_error_deg": self.median_rotation_error_deg,
            "mean_viewing_direction_error_deg": self.mean_viewing_direction_error_deg,
            "median_viewing_direction_error_deg": self.median_viewing_direction_error_deg,
            "mean_shift_error_a": self.mean_shift_error_a,
            "median_shift_error_a": self.median_shift_error_a,
            "global_offset_a": None
            if self.global_offset_a is None
            else self.global_offset_a.tolist(),
        }
        if per_particle:
            out["rotation_error_deg"] = self.rotation_error_deg.tolist()
            out["viewing_direction_error_deg"] = self.viewing_direction_error_deg.tolist()
            out["shift_error_a"] = (
                None if self.shift_error_a is None else self.shift_error_a.tolist()
            )
        return out


def _viewing_direction_errors(
    aligned: torch.Tensor, targets: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """``(N,)`` min over ``g`` of the angle (rad) between third rows of ``aligned``, ``T g``."""
    v_est = aligned[:, 2, :]  # (N, 3)
    v_true = targets[:, 2, :] @ group  # (G, N, 3): third row of T_i g
    cross = torch.linalg.cross(v_est.expand_as(v_true), v_true).norm(dim=-1)
    dot = (v_est * v_true).sum(-1)
    return torch.atan2(cross, dot).amin(dim=0)


def _shift_errors(
    estimated_rot: torch.Tensor,
    estimated_shifts_a: ArrayLike,
    true_shifts_a: ArrayLike,
    fit_global_offset: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``|t_est - t_true - (R_est c)_xy|`` (Å) ``(N,)`` and the fitted ``c`` (or None)."""
    t_est = torch.as_tensor(estimated_shifts_a).to(torch.float64).reshape(-1, 2)
    t_true = torch.as_tensor(true_shifts_a).to(torch.float64).reshape(-1, 2)
    difference = t_est - t_true
    if not fit_global_offset:
        return difference.norm(dim=-1).numpy(), None
    design = estimated_rot[:, :2, :].reshape(-1, 3)  # rows of (R_i c)_xy
    offset = torch.linalg.lstsq(design, difference.reshape(-1, 1)).solution[:, 0]
    residual = difference - (estimated_rot[:, :2, :] @ offset)
    return residual.norm(dim=-1).numpy(), offset.numpy()


def pose_errors(
    estimated_rot: ArrayLike,
    true_rot: ArrayLike,
    estimated_shifts_a: ArrayLike | None = None,
    true_shifts_a: ArrayLike | None = None,
    symmetry: Symmetry = "C1",
    fit_global_offset: bool = False,
) -> PoseErrors:
    """Score estimated poses against true ones.

    Args:
        estimated_rot, true_rot: ``(N, 3, 3)`` rotations (molecule -> microscope).
        estimated_shifts_a, true_shifts_a: ``(N, 2)`` RELION 3.1 shifts ``(x, y)`` in Å.
        symmetry: point group of the molecule, ``"C<n>"`` or ``"D<n>"``, or its rotations
            ``(G, 3, 3)`` in the frame of the true poses (:func:`symmetry_group`).
        fit_global_offset: first fit a global translation of the estimated map (see the
            module docstring); off by default, giving the plain ``|t_est - t_true|``.
    """
    est, tru = _as_rotations(estimated_rot), _as_rotations(true_rot)
    group, symmetry_name = symmetry_group(symmetry)
    q, mirrored = _align(est, tru, group)
    targets, hand_group = _hand(tru, group, mirrored)
    aligned = est @ q
    mates, _ = _best_mates(aligned, targets, hand_group)
    shift_error, offset = None, None
    if estimated_shifts_a is not None and true_shifts_a is not None:
        shift_error, offset = _shift_errors(
            est, estimated_shifts_a, true_shifts_a, fit_global_offset
        )
    return PoseErrors(
        rotation_error_deg=torch.rad2deg(geodesic_distance(aligned, mates)).numpy(),
        viewing_direction_error_deg=torch.rad2deg(
            _viewing_direction_errors(aligned, targets, hand_group)
        ).numpy(),
        shift_error_a=shift_error,
        alignment=q.numpy(),
        mirrored=mirrored,
        symmetry=symmetry_name.strip().upper() if isinstance(symmetry, str) else symmetry_name,
        global_offset_a=offset,
    )


def plot_pose_error_histogram(errors: PoseErrors, path: str | Path, bins: int = 60) -> None:
    """Histograms of the rotation and viewing-direction errors (degrees) to a PNG at ``path``.

    A third panel shows the shift errors (Å) when there are any. Median values are marked.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [
        ("rotation error (deg)", errors.rotation_error_deg),
        ("viewing-direction error (deg)", errors.viewing_direction_error_deg),
    ]
    if errors.shift_error_a is not None:
        panels.append(("shift error (Å)", errors.shift_error_a))
    fig = Figure(figsize=(4.0 * len(panels), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    for k, (label, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        median = float(np.median(values))
        ax.axvline(median, color="tab:red", ls="--", lw=1, label=f"median {median:.3g}")
        ax.set_xlabel(label)
        ax.set_ylabel("particles")
        ax.legend(fontsize=8)
    hand = ", mirrored" if errors.mirrored else ""
    fig.suptitle(f"pose errors ({errors.symmetry}{hand}, N = {len(errors.rotation_error_deg)})")
    fig.tight_layout()
    fig.savefig(path)
