"""Point groups against RELION's documented axes, their structure, the asymmetric unit, and
the convention that symmetry multiplies poses on the right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryohydra.geometry.rotations import exp_map, geodesic_distance, random_rotations
from cryohydra.geometry.symmetry import (
    angle_modulo,
    asymmetric_unit_mask,
    canonical_mates,
    generator_axes,
    point_group,
    rotation_axes,
)
from cryohydra.physics.projector import SliceGrid, project

ORDERS = {
    "C1": 1,
    "C4": 4,
    "c7": 7,
    "D1": 2,
    "D2": 4,
    "D3": 6,
    "T": 12,
    "O": 24,
    "I": 60,
    "I1": 60,
    "I2": 60,
    "I3": 60,
    "I4": 60,
}

# The generator axes as RELION prints them (src/symmetries.cpp, fill_symmetry_class), to the
# digits given there: our groups must hold rotations of that fold about each.
RELION_AXES = {
    "T": [(3, (0.0, 0.0, 1.0)), (2, (0.0, 0.816496, 0.577350))],
    "O": [(3, (0.5773502, 0.5773502, 0.5773502)), (4, (0.0, 0.0, 1.0))],
    "I": [
        (2, (0.0, 0.0, 1.0)),
        (5, (0.525731114, 0.0, 0.850650807)),
        (3, (0.0, 0.356822076, 0.934172364)),
    ],
    "I1": [
        (2, (1.0, 0.0, 0.0)),
        (5, (0.85065080702670, 0.0, -0.5257311142635)),
        (3, (0.9341723640, 0.3568220765, 0.0)),
    ],
    "I3": [
        (2, (-0.5257311143, 0.0, 0.8506508070)),
        (5, (0.0, 0.0, 1.0)),
        (3, (-0.4911234778630044, 0.3568220764705179, 0.7946544753759428)),
    ],
    "I4": [
        (2, (0.5257311143, 0.0, 0.8506508070)),
        (5, (0.8944271932547096, 0.0, 0.4472135909903704)),
        (3, (0.4911234778630044, 0.3568220764705179, 0.7946544753759428)),
    ],
    "D5": [(5, (0.0, 0.0, 1.0)), (2, (1.0, 0.0, 0.0))],
}

# Axes per fold: the classification of the finite rotation groups (an order-24 group with
# three four-fold axes is O, an order-60 one with six five-folds is I).
AXIS_COUNTS = {
    "T": {3: 4, 2: 3},
    "O": {4: 3, 3: 4, 2: 6},
    "I": {5: 6, 3: 10, 2: 15},
    "I3": {5: 6, 3: 10, 2: 15},
    "D3": {3: 1, 2: 3},
    "D2": {2: 3},
    "C4": {4: 1},
}


@pytest.mark.parametrize(("symbol", "size"), list(ORDERS.items()))
def test_point_groups_are_closed_groups_of_rotations(symbol, size):
    group = point_group(symbol)
    assert group.shape == (size, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(group[0], eye)
    torch.testing.assert_close(group @ group.transpose(-1, -2), eye.expand(size, 3, 3))
    torch.testing.assert_close(torch.linalg.det(group), torch.ones(size, dtype=torch.float64))
    products = (group[:, None] @ group[None]).reshape(-1, 1, 3, 3)
    distance = (products - group[None]).flatten(2).norm(dim=-1).amin(dim=1)
    assert distance.max() < 1e-9  # every product is an element
    elements = (group[:, None] - group[None]).flatten(2).norm(dim=-1)
    assert (elements + 10 * torch.eye(size)).min() > 0.1  # all distinct


@pytest.mark.parametrize("symbol", ["C0", "X2", "I5", "D", "", "C-2", "TD"])
def test_point_group_rejects_unknown_symbols(symbol):
    with pytest.raises(ValueError, match="unsupported symmetry"):
        point_group(symbol)


def _has_rotation(group: torch.Tensor, fold: int, axis) -> bool:
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    angle = 2 * math.pi / fold
    k = torch.tensor(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
        dtype=torch.float64,
    )
    rotation = torch.eye(3, dtype=torch.float64) + math.sin(angle) * k
    rotation = rotation + (1 - math.cos(angle)) * k @ k
    return bool(((group - rotation).abs().amax(dim=(-1, -2)) < 1e-5).any())


@pytest.mark.parametrize("symbol", list(RELION_AXES))
def test_groups_hold_relions_documented_axes(symbol):
    group = point_group(symbol)
    for fold, axis in RELION_AXES[symbol]:
        assert _has_rotation(group, fold, axis), (fold, axis)
    for (fold, axis), (relion_fold, relion_axis) in zip(
        generator_axes(symbol), RELION_AXES[symbol], strict=True
    ):
        assert fold == relion_fold
        np.testing.assert_allclose(axis, np.asarray(relion_axis), atol=2e-6)


@pytest.mark.parametrize("symbol", list(AXIS_COUNTS))
def test_axes_of_each_fold_identify_the_group(symbol):
    counts: dict[int, int] = {}
    for fold, _ in rotation_axes(point_group(symbol)):
        counts[fold] = counts.get(fold, 0) + 1
    assert counts == AXIS_COUNTS[symbol]


def test_standard_orientations_put_the_named_axes_on_x_y_z():
    """RELION's I (= I2) and I1 are 222 settings, O has its four-folds on x, y, z."""
    for symbol, fold in (("I", 2), ("I1", 2), ("O", 4), ("D2", 2)):
        group = point_group(symbol)
        for axis in np.eye(3):
            assert _has_rotation(group, fold, axis), (symbol, axis)
    assert not _has_rotation(point_group("I3"), 2, (0.0, 0.0, 1.0))
    assert _has_rotation(point_group("I3"), 5, (0.0, 0.0, 1.0))


@pytest.mark.parametrize("symbol", ["C1", "C3", "D2", "T", "I"])
def test_every_pose_has_one_mate_in_the_asymmetric_unit(symbol):
    group = point_group(symbol)
    poses = random_rotations(4000, torch.Generator().manual_seed(1))
    inside = asymmetric_unit_mask(poses, group)
    assert abs(inside.double().mean().item() - 1 / len(group)) < 3 / math.sqrt(4000) + 0.01
    mates = poses[:, None] @ group[None]  # (N, G, 3, 3): the same images
    in_unit = asymmetric_unit_mask(mates.reshape(-1, 3, 3), group).reshape(len(poses), -1)
    assert bool((in_unit.sum(dim=1) == 1).all())
    canonical = canonical_mates(poses, group)
    assert bool(asymmetric_unit_mask(canonical, group).all())
    chosen = (mates - canonical[:, None]).abs().amax(dim=(-1, -2)).amin(dim=1)
    assert chosen.max() < 1e-12  # the canonical pose is a mate


def test_angle_modulo_the_group_ignores_a_jump_to_a_mate():
    group = point_group("D2")
    poses = random_rotations(50, torch.Generator().manual_seed(4))
    nudge = exp_map(torch.tensor([0.0, 0.0, 0.05], dtype=torch.float64))
    mates = poses @ group[torch.arange(50) % 4] @ nudge
    expected = torch.full((50,), 0.05, dtype=torch.float64)
    torch.testing.assert_close(angle_modulo(poses, mates, group), expected, atol=1e-6, rtol=0)
    assert float(geodesic_distance(poses, mates)[1::4].min()) > 1.0  # the mates are far


def _apply_signed_permutation(volume: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``W(k) = V(g^T k)`` on the grid (origin ``L // 2``; the ``-L/2`` planes are zero)."""
    box = volume.shape[-1]
    k = torch.arange(box) - box // 2
    z, y, x = torch.meshgrid(k, k, k, indexing="ij")
    points = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
    source = points @ g.round().long()  # row vectors: (g^T k)^T = k^T g
    inside = (source.abs() < box // 2).all(dim=1)
    out = torch.zeros(box**3, dtype=volume.dtype)
    index = source + box // 2
    flat = index[:, 2] * box * box + index[:, 1] * box + index[:, 0]
    out[inside] = volume.reshape(-1)[flat[inside]]
    return out.reshape(volume.shape)


@pytest.mark.parametrize("symbol", ["C4", "D2"])
def test_a_symmetric_volume_gives_the_same_slice_at_pose_r_and_r_g(symbol):
    """docs/CONVENTIONS.md: V(g x) = V(x) makes poses R and R g equivalent (right side)."""
    box = 16
    group = point_group(symbol)
    volume = torch.randn(box, box, box, generator=torch.Generator().manual_seed(0))
    volume[0], volume[:, 0], volume[:, :, 0] = 0.0, 0.0, 0.0
    symmetric = torch.stack([_apply_signed_permutation(volume, g) for g in group]).mean(0)
    for g in group:
        torch.testing.assert_close(_apply_signed_permutation(symmetric, g), symmetric)
    grid = SliceGrid.create(box)
    poses = random_rotations(32, torch.Generator().manual_seed(2), dtype=torch.float32)
    reference = project(symmetric, poses, grid)
    for g in group[1:]:
        torch.testing.assert_close(project(symmetric, poses @ g.float(), grid), reference)
    # Not on the left: g R is another view (the check can fail).
    assert (project(symmetric, group[1].float() @ poses, grid) - reference).abs().max() > 0.1
