"""The image-formation model: its adjoint is exact, and the identity transfer is no CTF."""

import numpy as np
import torch

from cryohydra.geometry.rotations import random_rotations
from cryohydra.physics.ctf import ctf_2d
from cryohydra.physics.imaging import CTF, Identity, ImagingModel
from cryohydra.physics.projector import SliceGrid, project
from cryohydra.physics.shifts import phase_ramp

BOX = 16
PIXEL_A = 3.0


def _ctf(n: int, generator: torch.Generator) -> CTF:
    return CTF.from_arrays(
        {
            "defocus_u_a": 10000 + 5000 * torch.rand(n, generator=generator).numpy(),
            "defocus_v_a": 9000 + 5000 * torch.rand(n, generator=generator).numpy(),
            "astigmatism_angle_rad": torch.rand(n, generator=generator).numpy(),
            "voltage_kv": np.full(n, 300.0),
            "cs_mm": np.full(n, 2.7),
            "amplitude_contrast": np.full(n, 0.1),
            "phase_shift_rad": np.zeros(n),
            "bfactor_a2": np.full(n, 50.0),
            "scale": np.linspace(0.5, 1.5, n),  # each particle's amplitude (rlnCtfScalefactor)
        }
    )


def test_adjoint_is_exact_with_ctf_and_shifts():
    """<A v, u> == <v, A^T u> in double precision, for the whole chain."""
    g = torch.Generator().manual_seed(0)
    n = 5
    model = ImagingModel(SliceGrid.create(BOX), PIXEL_A)
    volume = torch.randn(BOX, BOX, BOX, dtype=torch.complex128, generator=g)
    rotations = random_rotations(n, g).double()
    shifts = torch.randn(n, 2, generator=g, dtype=torch.float64) * 4
    transfer = _ctf(n, g)
    u = torch.randn(n, model.points.n_points, dtype=torch.complex128, generator=g)
    model.frequencies_a = model.frequencies_a.double()
    forward = model.forward(volume, rotations, shifts, transfer)
    back = model.adjoint(u, rotations, shifts, transfer)
    left = torch.vdot(forward.reshape(-1), u.reshape(-1))
    right = torch.vdot(volume.reshape(-1), back.reshape(-1))
    assert abs(left - right) < 1e-10 * abs(left)


def test_forward_is_slice_then_ctf_then_shift():
    g = torch.Generator().manual_seed(1)
    model = ImagingModel(SliceGrid.create(BOX), PIXEL_A)
    volume = torch.randn(BOX, BOX, BOX, dtype=torch.complex64, generator=g)
    rotations = random_rotations(3, g, dtype=torch.float32)
    shifts = torch.randn(3, 2, generator=g)
    transfer = _ctf(3, g)
    frequencies = model.points.frequencies_a(PIXEL_A)
    params = {k: getattr(transfer, k) for k in transfer.__dataclass_fields__ if k != "scale"}
    expected = (
        project(volume, rotations, model.points)
        * ctf_2d(frequencies, **params)
        * transfer.scale[:, None]
        * phase_ramp(frequencies, shifts)
    )
    got = model.forward(volume, rotations, shifts, transfer)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the identity transfer leaves the slice as it is, bit for bit
    plain = model.forward(volume, rotations, None, Identity(3))
    assert torch.equal(plain, project(volume, rotations, model.points))


def test_candidates_share_their_image_transfer_function():
    g = torch.Generator().manual_seed(2)
    model = ImagingModel(SliceGrid.create(BOX), PIXEL_A)
    transfer = model.transfer_values(_ctf(2, g))
    slices = torch.randn(2, 3, model.points.n_points, dtype=torch.complex64, generator=g)
    shifts = torch.randn(2, 3, 2, generator=g)
    got = model.modulate(slices, transfer, shifts)
    for m in range(3):
        one = model.modulate(slices[:, m], transfer, shifts[:, m])
        assert torch.allclose(got[:, m], one)
    assert torch.allclose(model.unshift(got, shifts), slices * transfer[:, None], atol=1e-5)


def test_transfer_subsets():
    g = torch.Generator().manual_seed(3)
    transfer = _ctf(4, g)
    frequencies = ImagingModel(SliceGrid.create(BOX), PIXEL_A).frequencies_a
    index = torch.tensor([2, 0])
    assert torch.equal(transfer.subset(index)(frequencies), transfer(frequencies)[index])
    assert len(Identity(4).subset(index)) == 2
    assert torch.equal(Identity(2)(frequencies), torch.ones(2, len(frequencies)))
