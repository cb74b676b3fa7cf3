import numpy as np
import pytest
import torch

from cryohydra.geometry.rotations import exp_map, random_rotations
from cryohydra.physics.atoms import density_map, projected_density
from cryohydra.physics.fourier import fft2_centered, fft3_centered, ifft2_centered, padded_fft3
from cryohydra.physics.projector import (
    SliceGrid,
    backproject,
    image_to_slice,
    project,
    slice_to_image,
)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.mark.parametrize("oversampling", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_backprojection_is_the_adjoint_of_projection(oversampling, dtype):
    g = torch.Generator().manual_seed(0)
    L = 16
    size = L * oversampling
    grid = SliceGrid.create(L)
    rotations = random_rotations(5, generator=g)
    volume = torch.randn(size, size, size, generator=g, dtype=dtype)
    values = torch.randn(5, grid.n_points, generator=g, dtype=dtype)
    lhs = torch.vdot(project(volume, rotations, grid).flatten(), values.flatten())
    rhs = torch.vdot(volume.flatten(), backproject(values, rotations, grid, size).flatten())
    assert torch.allclose(lhs, rhs, rtol=1e-10)


def test_identity_pose_projection_is_the_sum_along_z():
    g = torch.Generator().manual_seed(1)
    L = 16
    volume = torch.randn(L, L, L, generator=g, dtype=torch.float64)
    grid = SliceGrid.create(L)
    spectrum = project(fft3_centered(volume), torch.eye(3, dtype=torch.float64)[None], grid)
    expected = image_to_slice(fft2_centered(volume.sum(0))[None], grid)
    assert torch.allclose(spectrum, expected, atol=1e-9)


def test_slices_of_a_real_volume_are_hermitian():
    g = torch.Generator().manual_seed(2)
    L = 16
    spectrum = padded_fft3(torch.randn(L, L, L, generator=g, dtype=torch.float64), 2)
    grid = SliceGrid.create(L)
    values = project(spectrum, random_rotations(4, generator=g), grid)
    assert torch.allclose(values[:, grid.mirror], values.conj(), atol=1e-9)


def test_slice_grid_layout():
    grid = SliceGrid.create(8)
    assert grid.mask.sum() == grid.n_points
    assert grid.coords[:, :2].norm(dim=1).max() <= 3 + 1e-6
    image = torch.arange(64, dtype=torch.float64).reshape(1, 8, 8)
    round_trip = slice_to_image(image_to_slice(image, grid), grid)
    assert torch.equal(round_trip[0][grid.mask], image[0][grid.mask])
    assert torch.equal(grid.coords[grid.mirror], -grid.coords)


def test_gradient_flows_to_the_rotation_perturbation():
    g = torch.Generator().manual_seed(3)
    L = 16
    spectrum = fft3_centered(torch.randn(L, L, L, generator=g, dtype=torch.float64))
    grid = SliceGrid.create(L)
    base = random_rotations(2, generator=g)
    target = project(spectrum, exp_map(torch.tensor([[0.05, 0.0, 0.0]] * 2).double()) @ base, grid)
    w = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    loss = (project(spectrum, exp_map(w) @ base, grid) - target).abs().pow(2).sum()
    loss.backward()
    assert torch.isfinite(w.grad).all()
    assert w.grad[:, 0].lt(0).all()  # moving towards +0.05 about x lowers the loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_handedness_fourier_slice_matches_rotated_atoms(default_model, seed):
    """The conventions' handedness test: the Fourier-slice projection of the model's map
    equals the real-space projection of its atoms moved by x -> R @ x; the mirrored map
    does not."""
    L, pixel = 48, 4.5
    volume = density_map(default_model, L, pixel).double()
    grid = SliceGrid.create(L)
    rotation = random_rotations(1, generator=torch.Generator().manual_seed(seed))
    from_slice = ifft2_centered(slice_to_image(project(padded_fft3(volume), rotation, grid), grid))
    atoms = projected_density(default_model, rotation[0].numpy(), L, pixel).double()
    atoms = ifft2_centered(fft2_centered(atoms) * grid.mask).real  # same band limit
    assert _corr(from_slice.real[0], atoms) > 0.99
    mirrored = torch.flip(volume, dims=[0])  # z -> -z: the other hand
    from_mirror = ifft2_centered(
        slice_to_image(project(padded_fft3(mirrored), rotation, grid), grid)
    )
    assert _corr(from_mirror.real[0], atoms) < 0.9


def test_atomic_map_is_centred_on_the_centre_of_mass(default_model):
    L, pixel = 48, 4.5
    volume = density_map(default_model, L, pixel).double()
    z, y, x = torch.meshgrid(*([torch.arange(L, dtype=torch.float64) - L // 2] * 3), indexing="ij")
    positive = volume.clamp(min=0)
    centre = [float((positive * c).sum() / positive.sum()) for c in (x, y, z)]
    assert np.allclose(centre, 0, atol=0.3)  # pixels
    # The 2D projection has the same total as the 3D map (per Å^2 vs per Å^3).
    projection = projected_density(default_model, np.eye(3), L, pixel).double()
    assert float(projection.sum()) == pytest.approx(float(volume.sum() * pixel), rel=0.01)
