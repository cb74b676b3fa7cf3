"""Global pose search on a grid of SO(3): the error algebra, a planted pose, projection matching."""

import numpy as np
import pytest
import torch

from cryohydra.data import default_structure
from cryohydra.geometry.rotations import geodesic_distance
from cryohydra.geometry.sampling import so3_grid
from cryohydra.io.mrc import read_map
from cryohydra.io.star import read_star
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.physics.projector import SliceGrid
from cryohydra.reconstruct.batches import ParticleBatches
from cryohydra.reconstruct.pose_search import best_grid_poses, grid_errors, projection_matching
from cryohydra.reconstruct.volume import HartleyVolume
from cryohydra.simulate import SimulationConfig, simulate

BOX = 16


def _volume(seed: int = 0) -> HartleyVolume:
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(BOX, dtype=torch.float32) - BOX // 2
    z, y, x = torch.meshgrid(k, k, k, indexing="ij")
    density = torch.zeros(BOX, BOX, BOX)
    for _ in range(4):
        c = (torch.rand(3, generator=g) - 0.5) * BOX * 0.4
        density += torch.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / 4.0)
    volume = HartleyVolume(BOX)
    volume.load_map(density)
    return volume


def test_grid_errors_are_squared_errors_up_to_a_per_image_constant():
    g = torch.Generator().manual_seed(0)
    slices = torch.randn(5, 40, dtype=torch.complex64, generator=g)
    spectra = torch.randn(3, 40, dtype=torch.complex64, generator=g)
    ctf = torch.rand(3, 40, generator=g) * 2 - 1
    direct = (ctf[:, None] * slices[None] - spectra[:, None]).abs().pow(2).sum(-1)  # (3, 5)
    fast = grid_errors(slices, spectra, ctf)
    constant = direct - fast  # |X|^2 summed: the same for every slice
    assert torch.allclose(constant, constant[:, :1].expand(-1, 5), atol=1e-3)
    assert torch.allclose(constant[:, 0], spectra.abs().pow(2).sum(-1), atol=1e-3)


@pytest.mark.parametrize("chunk", [7, 100_000])
def test_a_planted_grid_pose_is_found_whatever_the_chunking(chunk):
    volume = _volume()
    rotations = so3_grid(1).float()  # 72 rotations
    grid = SliceGrid.create(BOX)
    with torch.no_grad():
        slices = volume.slices(rotations, grid)
    planted = torch.tensor([3, 40, 71, 18])
    g = torch.Generator().manual_seed(1)
    ctf = 0.5 + torch.rand(4, grid.n_points, generator=g)
    noise = 0.01 * slices.abs().mean() * torch.randn(4, grid.n_points, dtype=torch.complex64)
    spectra = ctf * slices[planted] + noise
    index, error = best_grid_poses(slices, spectra, ctf, chunk=chunk)
    assert index.tolist() == planted.tolist()
    assert torch.allclose(error, grid_errors(slices, spectra, ctf).min(dim=1).values)


@pytest.fixture(scope="module")
def centred(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    config = SimulationConfig(
        structure=str(default_structure()),
        box_size=32,
        pixel_size_a=7.0,
        n_particles=200,
        snr=1.0,
        shift_std_a=0.0,
        seed=5,
    )
    simulate(config, folder, progress=False)
    return folder


def test_projection_matching_recovers_poses_to_the_grid_spacing(centred):
    particles = read_star(centred / "particles.star")
    true_rotations, true_shifts = particles.require_poses()
    data = ParticleBatches(particles.with_poses(None, None))
    truth, _ = read_map(centred / "ground_truth.mrc")
    volume = HartleyVolume(data.working_box)
    # The true map in another frame (turned 90°): poses are found in that frame.
    volume.load_map(torch.from_numpy(np.ascontiguousarray(np.rot90(truth, axes=(0, 1)))).float())
    found = projection_matching(
        volume,
        data,
        torch.from_numpy(true_shifts).float(),
        resolution_a=20.0,
        nside=4,
        rounds=4,
        converged=0.0,
    )
    assert found.rotations.shape == (200, 3, 3)
    assert 1 <= len(found.changed) <= 4 and found.changed[0] == 1.0  # all start unassigned
    # The map's frame is free: errors are measured after the global alignment. Random poses
    # would be 126° off (median); the grid's spacing is 15°. 6UO9's pseudo-two-fold mates
    # (180° off) take some particles, which the symmetry check handles later in a run.
    errors = pose_errors(found.rotations.double().numpy(), true_rotations)
    assert errors.median_rotation_error_deg < 12.0
    assert np.mean(errors.rotation_error_deg < 20.0) > 0.6
    grid = so3_grid(4)
    assert bool(
        (
            geodesic_distance(found.rotations.double()[:, None], grid[None]).min(dim=1).values
            < 1e-4
        ).all()
    )
