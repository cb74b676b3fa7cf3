"""An imposed point group: every slice of the Hartley volume is that of a symmetric molecule."""

from __future__ import annotations

import torch

from cryohydra.data import default_structure
from cryohydra.geometry.rotations import random_rotations
from cryohydra.geometry.symmetry import point_group
from cryohydra.metrics.map_alignment import rotate_map
from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.projector import SliceGrid
from cryohydra.simulate import load_structure

BOX = 24
DENSITY = load_structure(default_structure(), BOX, 10.0)[0]
LIMIT = 0.1


def test_slices_at_every_mate_of_a_pose_agree_and_gradients_flow():
    group = point_group("D3")
    volume = HartleyVolume(BOX, symmetry=group)
    volume.load_map(DENSITY)
    grid = SliceGrid.create(BOX)
    poses = random_rotations(8, torch.Generator().manual_seed(1), dtype=torch.float32)
    reference = volume.slices(poses, grid)
    for g in group[1:]:
        mate = volume.slices(poses @ g.float(), grid).detach()
        # Trilinear at rotated points: equal to interpolation accuracy, not bit for bit.
        difference = (mate - reference.detach()).abs().mean() / reference.detach().abs().mean()
        assert float(difference) < LIMIT  # measured 0.024
    plain = HartleyVolume(BOX)
    plain.load_map(DENSITY)
    other = plain.slices(poses @ group[1].float(), grid)
    gap = (
        other - plain.slices(poses, grid)
    ).detach().abs().mean() / reference.detach().abs().mean()
    assert float(gap) > 5 * LIMIT  # without the group the mates' slices differ (1.46)
    reference.abs().sum().backward()  # the gradient reaches the unconstrained parameters
    assert volume.mantissa.grad is not None and float(volume.mantissa.grad.abs().sum()) > 0


def test_the_map_of_a_symmetric_volume_is_symmetric():
    volume = HartleyVolume(
        16, generator=torch.Generator().manual_seed(0), symmetry=point_group("C4")
    )
    density = volume.to_map()
    turn = point_group("C4")[1]  # a quarter turn about z, exact on the grid
    quarter = rotate_map(density, turn)
    inner = (slice(1, BOX),) * 3
    change = float((quarter - density)[inner].norm() / density[inner].norm())
    before = float(((rotate_map(DENSITY, turn) - DENSITY)[inner]).norm() / DENSITY.norm())
    assert change < 0.1 * before
    assert volume.state_dict().keys() == {"support", "mantissa", "exponent"}
