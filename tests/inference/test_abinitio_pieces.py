"""The pieces of ab-initio reconstruction: volume, encoder, winner-takes-all, pose table, frames."""

import numpy as np
import pytest
import torch

from cryohydra.geometry.rotations import geodesic_distance, random_rotations
from cryohydra.inference.frames import poses_into_reference_frame
from cryohydra.inference.objective import (
    candidate_errors,
    rotated_half_turn,
    undo_half_turn,
    winner_takes_all,
)
from cryohydra.metrics.map_alignment import MapAlignment, apply_alignment
from cryohydra.models.encoder import PoseEncoder
from cryohydra.models.pose_table import PoseTable
from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.fourier import fft3_centered
from cryohydra.physics.imaging import FourierVolume, Identity, ImagingModel
from cryohydra.physics.projector import SliceGrid, project

BOX = 16


def _blob_map(box: int = BOX, seed: int = 0) -> torch.Tensor:
    """An asymmetric map: a few Gaussian blobs off-centre."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(box, dtype=torch.float64) - box // 2
    z, y, x = torch.meshgrid(k, k, k, indexing="ij")
    volume = torch.zeros(box, box, box, dtype=torch.float64)
    for _ in range(4):
        centre = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * box * 0.4
        volume += torch.exp(
            -((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / 4.0
        )
    return volume.to(torch.float32)


def test_hartley_volume_slices_are_the_fourier_slices_of_its_map():
    volume_map = _blob_map()
    model = HartleyVolume(BOX)
    model.load_map(volume_map)
    assert torch.allclose(model.to_map(), volume_map, atol=1e-3)  # corners of k-space cut
    grid = SliceGrid.create(BOX)
    rotations = random_rotations(5, torch.Generator().manual_seed(1), dtype=torch.float32)
    expected = project(
        fft3_centered(volume_map.to(torch.float64)).to(torch.complex64), rotations, grid
    )
    assert torch.allclose(model.slices(rotations, grid), expected, atol=1e-3 * expected.abs().max())


def test_mantissa_and_exponent_both_learn_and_support_is_kept():
    model = HartleyVolume(BOX, amplitude=torch.linspace(10, 0.1, BOX // 2 + 1))
    grid = SliceGrid.create(BOX)
    loss = model.slices(random_rotations(3, dtype=torch.float32), grid).abs().pow(2).sum()
    loss.backward()
    assert model.mantissa.grad.abs().sum() > 0 and model.exponent.grad.abs().sum() > 0
    outside = model.support == 0
    assert torch.all(model.hartley()[outside] == 0)


def test_winner_takes_all_trains_only_the_winning_head():
    torch.manual_seed(0)
    encoder = PoseEncoder(BOX, 4.0, n_heads=3)
    volume = HartleyVolume(BOX)
    volume.load_map(_blob_map())
    grid = SliceGrid.create(BOX)
    images = torch.randn(1, BOX, BOX)  # one image: exactly one winner
    spectra = torch.randn(1, grid.n_points, dtype=torch.complex64)
    rotations, shifts = encoder(images)
    errors = candidate_errors(
        volume, spectra, torch.ones(1, grid.n_points), rotations, shifts, ImagingModel(grid, 4.0)
    )
    loss, winner = winner_takes_all(errors)
    assert errors.shape == (1, 3)
    loss.sum().backward()
    won = int(winner)
    for name in ("w1", "b1", "w2", "b2", "w3", "b3"):
        grad = getattr(encoder.heads, name).grad
        for head in range(3):
            if head == won:
                assert grad[head].abs().sum() > 0, name
            else:
                assert torch.all(grad[head] == 0), (name, head)


def test_encoder_outputs_rotations_and_bounded_shifts():
    encoder = PoseEncoder(32, 2.0, n_heads=4, max_shift_a=5.0)
    rotations, shifts = encoder(torch.randn(6, 32, 32))
    assert rotations.shape == (6, 4, 3, 3) and shifts.shape == (6, 4, 2)
    eye = torch.eye(3).expand(6, 4, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.det(rotations), torch.ones(6, 4), atol=1e-5)
    assert shifts.abs().max() <= 5.0


def test_a_bf16_encoder_gives_float32_rotations_near_the_float32_encoders():
    """bfloat16 for the CNN and heads only: the rotations stay exact rotations (float32
    6D -> matrix) and, with the same weights, within a degree of float32's (measured on an
    untrained encoder and random images: median 0.29, largest 0.99 degrees)."""
    torch.manual_seed(0)
    encoder = PoseEncoder(32, 2.0, n_heads=4, max_shift_a=5.0).eval()
    images = torch.randn(64, 32, 32)
    with torch.no_grad():
        plain, _ = encoder(images)
        encoder.bf16 = True
        half, _ = encoder(images)
    assert half.dtype == torch.float32
    eye = torch.eye(3).expand_as(half)
    assert torch.allclose(half @ half.transpose(-1, -2), eye, atol=1e-5)
    angles = torch.rad2deg(geodesic_distance(half.reshape(-1, 3, 3), plain.reshape(-1, 3, 3)))
    assert 0 < float(angles.median()) < 1.0 and float(angles.max()) < 3.0


def test_vgg16_backbone_builds_for_64px():
    encoder = PoseEncoder(64, 2.0, n_heads=2, backbone="vgg16")
    rotations, _ = encoder(torch.randn(2, 64, 64))
    assert rotations.shape == (2, 2, 3, 3)
    with pytest.raises(ValueError, match="backbone"):
        PoseEncoder(64, 2.0, n_heads=2, backbone="resnet")


def test_half_turned_image_is_the_image_of_the_half_turned_pose():
    volume = FourierVolume.from_map(_blob_map(), oversampling=1)
    grid = SliceGrid.create(BOX)
    g = torch.Generator().manual_seed(3)
    rotations = random_rotations(4, g, dtype=torch.float32)
    shifts = torch.randn(4, 2, generator=g) * 3.0
    from cryohydra.physics.imaging import spectra_to_images

    model = ImagingModel(grid, 2.0)
    images = spectra_to_images(model.images(volume, rotations, shifts, Identity(4)), grid)
    turned = rotated_half_turn(images)
    # Poses of the turned images, mapped back by undo_half_turn, give the original ones.
    turned_rot = torch.diag(torch.tensor([-1.0, -1.0, 1.0])) @ rotations
    expected = spectra_to_images(model.images(volume, turned_rot, -shifts, Identity(4)), grid)
    assert torch.allclose(turned, expected, atol=1e-4 * images.abs().max())
    back_rot, back_shift = undo_half_turn(turned_rot, -shifts)
    assert torch.allclose(back_rot, rotations, atol=1e-6)
    assert torch.allclose(back_shift, shifts)


def test_pose_table_shift_steps_follow_adam_exactly():
    rows = torch.tensor([1, 3])
    table = PoseTable.create(torch.eye(3).expand(5, 3, 3), torch.zeros(5, 2), 0.05, 0.3)
    reference = torch.zeros(2, 2, requires_grad=True)
    adam = torch.optim.Adam([reference], lr=0.3)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        grad = torch.randn(2, 2, generator=g)
        table.step(rows, torch.zeros(2, 3), grad)
        reference.grad = grad.clone()
        adam.step()
    assert torch.allclose(table.shifts_a[rows], reference.detach(), atol=1e-6)
    assert torch.all(table.shifts_a[[0, 2, 4]] == 0)
    assert torch.all(table.steps[rows] == 4) and torch.all(table.steps[[0, 2, 4]] == 0)


def test_pose_table_rotation_step_descends_and_stays_a_rotation():
    target = random_rotations(8, torch.Generator().manual_seed(5), dtype=torch.float32)
    table = PoseTable.create(torch.eye(3).expand(8, 3, 3), torch.zeros(8, 2), 0.05, 0.1)
    rows = torch.arange(8)

    def distance() -> torch.Tensor:
        return (table.rotations - target).pow(2).sum(dim=(-1, -2))

    before = distance()
    for _ in range(40):
        w, d = table.perturbation(rows)
        rotations, _ = table.poses(rows, w, d)
        loss = (rotations - target).pow(2).sum()
        grad_w, grad_d = torch.autograd.grad(loss, [w, d], allow_unused=True)
        assert torch.isfinite(grad_w).all()
        table.step(rows, grad_w, torch.zeros(8, 2))
    assert torch.all(distance() < before)
    eye = torch.eye(3).expand(8, 3, 3)
    assert torch.allclose(table.rotations @ table.rotations.transpose(-1, -2), eye, atol=1e-5)


@pytest.mark.parametrize("mirrored", [False, True])
def test_poses_move_into_the_reference_frame(mirrored):
    """Projections of map B in its poses equal projections of the aligned map A in the moved
    poses."""
    pixel = 2.0
    map_b = _blob_map(seed=2)
    g = torch.Generator().manual_seed(7)
    rotation = random_rotations(1, g)[0]
    shift = torch.tensor([1.5, -2.0, 1.0], dtype=torch.float64)
    alignment = MapAlignment(rotation, shift, mirrored, 1.0, map_b, pixel)
    map_a = apply_alignment(map_b, alignment, oversampling=2)
    rotations = random_rotations(6, g).numpy()
    shifts = np.random.default_rng(0).normal(0, 2.0, (6, 2))
    moved_rot, moved_shift = poses_into_reference_frame(rotations, shifts, alignment)
    grid = SliceGrid.create(BOX, radius_px=BOX // 4)  # low frequencies: rotation interpolation

    def spectra(volume, rot, sh):
        fourier = FourierVolume.from_map(volume, oversampling=2)
        return ImagingModel(grid, pixel).images(
            fourier,
            torch.tensor(rot, dtype=torch.float32),
            torch.tensor(sh, dtype=torch.float32),
            Identity(len(rot)),
        )

    expected = spectra(map_b, rotations, shifts)
    got = spectra(map_a, moved_rot, moved_shift)
    error = (got - expected).abs().pow(2).sum() / expected.abs().pow(2).sum()
    assert error < 1e-3
