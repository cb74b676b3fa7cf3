import dataclasses
import math

import numpy as np
import pytest
import torch

from cryohydra.geometry.rotations import geodesic_distance, random_rotations
from cryohydra.metrics import (
    align_maps,
    align_rotations,
    apply_alignment,
    flip_handedness,
    fsc,
    rotate_map,
    self_alignment,
    shift_map,
    so3_grid,
)
from cryohydra.physics.atoms import density_map

BOX, PIXEL_A, BFACTOR = 48, 4.5, 100.0
SHIFT_A = np.array([4.0, -3.0, 2.5])
J = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))


def _moved_map(model, rotation=None, shift_a=None, mirror=False, box=BOX, pixel_a=PIXEL_A):
    """Density of the atoms moved by ``x -> R H x + t`` about the centre of mass (no
    interpolation involved): ``V'(y) = V(H R^T (y - t))``."""
    centred = model.coords_a - model.center_of_mass_a
    if mirror:
        centred = centred * np.array([1.0, 1.0, -1.0])
    if rotation is not None:
        centred = centred @ np.asarray(rotation).T
    if shift_a is not None:
        centred = centred + shift_a
    moved = dataclasses.replace(model, coords_a=model.center_of_mass_a + centred)
    return density_map(moved, box, pixel_a, bfactor_a2=BFACTOR)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def reference(default_model) -> torch.Tensor:
    return _moved_map(default_model)


@pytest.fixture(scope="module")
def rotation() -> torch.Tensor:
    return random_rotations(1, torch.Generator().manual_seed(7))[0]


def test_rotate_flip_and_shift_follow_the_atoms(default_model, rotation):
    box, pixel = 32, 6.0
    ref = _moved_map(default_model, box=box, pixel_a=pixel)
    rotated_atoms = _moved_map(default_model, rotation.numpy(), box=box, pixel_a=pixel)
    # Not 1: trilinear interpolation, and the corners of the spectrum rotate out of the cube.
    assert _correlation(rotate_map(ref, rotation, oversampling=2), rotated_atoms) > 0.95
    assert _correlation(rotate_map(ref, rotation.T, oversampling=2), rotated_atoms) < 0.6
    mirrored = _moved_map(default_model, mirror=True, box=box, pixel_a=pixel)
    assert _correlation(flip_handedness(ref), mirrored) > 0.999
    shifted = _moved_map(default_model, shift_a=SHIFT_A, box=box, pixel_a=pixel)
    assert _correlation(shift_map(ref, SHIFT_A, pixel), shifted) > 0.995
    assert _correlation(shift_map(ref, -SHIFT_A, pixel), shifted) < 0.8


def test_so3_grid_covers_rotations():
    grid = so3_grid(2)
    assert grid.shape == (48 * 12, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand_as(grid)
    torch.testing.assert_close(grid @ grid.transpose(-1, -2), eye)
    probes = random_rotations(50, torch.Generator().manual_seed(1))
    nearest = geodesic_distance(probes[:, None], grid[None]).amin(dim=1)
    assert math.degrees(float(nearest.max())) < 30.0  # spacing about 29 degrees


@pytest.mark.parametrize("mirror", [False, True])
def test_align_maps_recovers_a_rotated_shifted_map(default_model, reference, rotation, mirror):
    moving = _moved_map(default_model, rotation.numpy(), SHIFT_A, mirror=mirror)
    alignment = align_maps(moving, reference, PIXEL_A)
    # moving(y) = ref(H P^T (y - t)): undone by R = H P^T H and s = -H P^T t.
    hand = J if mirror else torch.eye(3, dtype=torch.float64)
    expected_rotation = hand @ rotation.T @ hand
    expected_shift = -(hand @ rotation.T @ torch.from_numpy(SHIFT_A))
    assert alignment.mirrored is mirror
    assert math.degrees(float(geodesic_distance(alignment.rotation, expected_rotation))) < 1.0
    assert float((alignment.shift_a - expected_shift).norm()) < 0.5
    assert alignment.correlation > 0.97
    # As good as undoing the known transform; FSC at 0.5 reaches the same shell.
    known = dataclasses.replace(
        alignment, rotation=expected_rotation, shift_a=expected_shift, aligned_map=None
    )
    undone = apply_alignment(moving, known)
    assert _correlation(alignment.aligned_map, reference) > _correlation(undone, reference) - 0.005
    resolution = fsc(alignment.aligned_map, reference, pixel_size_a=PIXEL_A).resolution_a(0.5)
    best = fsc(undone, reference, pixel_size_a=PIXEL_A).resolution_a(0.5)
    assert resolution < best + PIXEL_A
    # The same transform applied to another map (e.g. the other half-map).
    torch.testing.assert_close(apply_alignment(moving, alignment), alignment.aligned_map)
    # Poses that image the moved molecule like the reference in poses T: x -> T P^T x (or
    # J T J P^T for the mirrored one, up to the z-flip along the beam). Their alignment
    # Q is R^T (J R^T J) as documented in map_alignment.
    true_poses = random_rotations(20, torch.Generator().manual_seed(2))
    estimated_poses = hand @ true_poses @ hand @ rotation.T
    q, q_mirrored = align_rotations(estimated_poses, true_poses)
    assert q_mirrored is mirror
    relation = hand @ alignment.rotation.T @ hand
    assert math.degrees(float(geodesic_distance(q, relation))) < 1.0


def test_self_alignment_finds_an_off_centre_two_fold_and_its_mate_poses(default_model):
    """A dimer of the model about a two-fold whose axis misses the box centre: the
    self-alignment finds the two-fold, and the mate poses give the same images."""
    from cryohydra.inference.frames import poses_into_reference_frame
    from cryohydra.physics.imaging import FourierVolume, Identity, ImagingModel
    from cryohydra.physics.projector import SliceGrid

    axis = np.array([0.48, 0.6, -0.64])
    axis /= np.linalg.norm(axis)
    two_fold = 2 * np.outer(axis, axis) - np.eye(3)
    centred = (model := default_model).coords_a - model.center_of_mass_a
    half = centred * 0.45 + np.cross(axis, [1.0, 0.0, 0.0]) * 12.0  # off the axis
    offset = np.array([6.0, -4.0, 3.0])  # the axis passes through this point, not the centre
    atoms = np.concatenate([half, half @ two_fold.T]) + offset
    dimer = dataclasses.replace(
        model,
        coords_a=model.center_of_mass_a + atoms,
        coef_a=np.concatenate([model.coef_a] * 2),
        coef_b=np.concatenate([model.coef_b] * 2),
    )
    volume = density_map(dimer, BOX, PIXEL_A, bfactor_a2=BFACTOR)
    found = self_alignment(volume, PIXEL_A)
    assert found.correlation > 0.95
    angle = math.degrees(float(geodesic_distance(found.rotation, torch.from_numpy(two_fold))))
    assert angle < 3.0

    poses = random_rotations(8, torch.Generator().manual_seed(1)).numpy()
    shifts = np.random.default_rng(0).normal(0, 3.0, (8, 2))
    mate_rot, mate_shift = poses_into_reference_frame(poses, shifts, found)
    fourier = FourierVolume.from_map(volume)
    grid = SliceGrid.create(BOX, BOX / 4)  # 18 Å: past the interpolation error of the search

    def spectra(rotations, shifts_a):
        return ImagingModel(grid, PIXEL_A).images(
            fourier,
            torch.from_numpy(rotations).float(),
            torch.from_numpy(shifts_a).float(),
            Identity(len(rotations)),
        )

    a, b = spectra(poses, shifts), spectra(mate_rot, mate_shift)
    similarity = (a.conj() * b).real.sum(-1) / (
        a.abs().pow(2).sum(-1) * b.abs().pow(2).sum(-1)
    ).sqrt()
    assert float(similarity.min()) > 0.97
