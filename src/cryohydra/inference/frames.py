"""Moving poses between the frames of two maps of the same molecule.

Two independent ab-initio runs (the gold-standard half-sets) end in frames that differ by a
rotation, a translation and possibly the hand. :func:`cryohydra.metrics.map_alignment.align_maps`
finds ``V_A(x) = V_B(H R^T (x - s))`` (``H = diag(1, 1, -1)`` when mirrored); this module moves
the poses of B's particles into A's frame so both halves can be backprojected together.

Derivation (``x_scope = R_i x_mol``, image ``P(x) = integral of V(R_i^T x) dz``, shift
convention ``I(x) = [C * P](x + t)``). Let ``W(u) = V_B(H R^T u)``, so ``V_A(x) = W(x - s)``.

* Rotation, not mirrored: ``V_B(R_i^T x) = W(R R_i^T x)``, so the pose in W's frame is
  ``R_i R^T``.
* Mirrored: ``V_B(R_i^T x) = W(R H R_i^T x) = W(R H R_i^T H (H x))``; the integral along z
  does not see ``x -> H x``, so the pose is ``(R H R_i^T H)^T = H R_i H R^T``.
* Translation: ``V_A`` is ``W`` moved by ``+s``, whose projection in pose ``R'`` moves by
  ``(R' s)_xy``; the shift that centres it is ``t' = t + (R' s)_xy``.
"""

from __future__ import annotations

import numpy as np

from cryohydra.metrics.map_alignment import MapAlignment

__all__ = ["poses_into_reference_frame"]

_MIRROR = np.diag([1.0, 1.0, -1.0])


def poses_into_reference_frame(
    rotations: np.ndarray, shifts_a: np.ndarray, alignment: MapAlignment
) -> tuple[np.ndarray, np.ndarray]:
    """Poses ``(N, 3, 3)``, ``(N, 2)`` Å of particles of the moving map, in the frame of the
    reference map of ``alignment`` (see the module docstring)."""
    rotation = alignment.rotation.detach().cpu().double().numpy()
    shift = alignment.shift_a.detach().cpu().double().numpy()
    if alignment.mirrored:
        rotations = _MIRROR @ rotations @ _MIRROR
    moved = rotations @ rotation.T
    return moved, shifts_a + (moved @ shift)[:, :2]
