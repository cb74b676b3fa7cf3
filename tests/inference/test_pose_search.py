"""Global pose search on a grid of SO(3): the error algebra, a planted pose, projection matching."""

import numpy as np
import pytest
import torch

from cryohydra.data import default_structure
from cryohydra.geometry.rotations import exp_map, geodesic_distance
from cryohydra.geometry.sampling import so3_grid
from cryohydra.inference.pose_search import (
    best_grid_poses,
    grid_errors,
    local_offsets,
    pair_errors,
    projection_matching,
    refine_locally,
)
from cryohydra.io.batches import ParticleBatches
from cryohydra.io.mrc import read_map
from cryohydra.io.star import read_star
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.imaging import ImagingModel
from cryohydra.physics.projector import SliceGrid
from cryohydra.physics.shifts import phase_ramp
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
    assert 1 <= len(found.changed) <= 4 and found.changed[0] == 1.0  # no starting poses
    assert found.sources["candidate"] == 0.0 and found.settled == (found.changed[-1] == 0.0)
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


def test_pair_errors_equal_grid_errors_of_each_image_own_slices():
    g = torch.Generator().manual_seed(2)
    slices = torch.randn(3, 4, 30, dtype=torch.complex64, generator=g)
    spectra = torch.randn(3, 30, dtype=torch.complex64, generator=g)
    ctf = torch.rand(3, 30, generator=g)
    fast = pair_errors(slices, spectra, ctf)
    for b in range(3):
        expected = grid_errors(slices[b], spectra[b : b + 1], ctf[b : b + 1])[0]
        assert torch.allclose(fast[b], expected, atol=1e-4)


def test_local_offsets_are_the_26_neighbours_at_the_step():
    offsets = local_offsets(5.0)
    angles = torch.rad2deg(geodesic_distance(offsets, torch.eye(3, dtype=offsets.dtype)))
    assert offsets.shape == (26, 3, 3)
    # axis steps of 5 degrees: the cube's faces, edges and corners
    assert torch.allclose(
        angles.sort().values[[0, 6, 18]], torch.tensor([5.0, 50**0.5, 75**0.5]).double(), atol=1e-6
    )


def test_local_refinement_brings_an_off_grid_pose_and_shift_back():
    volume = _volume(3)
    grid = SliceGrid.create(BOX)
    pixel = 2.0
    frequencies = grid.frequencies_a(pixel)
    g = torch.Generator().manual_seed(4)
    truth = so3_grid(2).float()[torch.randint(0, 576, (6,), generator=g)]
    true_shifts = torch.tensor(
        [[1.0, -0.5], [0.0, 0.0], [-2.0, 1.0], [0.5, 0.5], [1.5, 0.0], [0, -1.5]]
    )
    with torch.no_grad():
        spectra = volume.slices(truth, grid) * phase_ramp(frequencies, true_shifts)
        axis = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=-1)
        tilted = truth @ exp_map(axis * np.deg2rad(6.0))
        moved = true_shifts + torch.tensor([2.0, 0.0])
        # rotations 6 degrees off about a random axis, shifts right
        rotations, shifts, _ = refine_locally(
            volume,
            volume.hartley(),
            ImagingModel(grid, pixel),
            spectra,
            torch.ones(6, grid.n_points),
            tilted,
            true_shifts,
            (4.0, 2.0, 1.0),
            (),
        )
        # shifts 2 Å off in x, rotations right
        _, found_shifts, _ = refine_locally(
            volume,
            volume.hartley(),
            ImagingModel(grid, pixel),
            spectra,
            torch.ones(6, grid.n_points),
            truth,
            moved,
            (),
            (2.0, 1.0, 0.5),
        )
        # a pose that is right stays exactly where it is (a move must lower the error)
        kept, kept_shifts, _ = refine_locally(
            volume,
            volume.hartley(),
            ImagingModel(grid, pixel),
            spectra,
            torch.ones(6, grid.n_points),
            truth,
            true_shifts,
            (4.0, 2.0),
            (1.0,),
        )
    assert torch.equal(kept, truth) and torch.equal(kept_shifts, true_shifts)
    before = torch.rad2deg(geodesic_distance(tilted, truth))
    after = torch.rad2deg(geodesic_distance(rotations, truth))
    assert (after < 1.5).all() and (after < before).all(), after
    assert torch.equal(shifts, true_shifts)
    assert (found_shifts - true_shifts).abs().max() < 0.3, found_shifts - true_shifts


def test_projection_matching_takes_the_candidates_where_they_explain_the_images_better(centred):
    particles = read_star(centred / "particles.star")
    true_rotations, true_shifts = particles.require_poses()
    data = ParticleBatches(particles.with_poses(None, None))
    truth, _ = read_map(centred / "ground_truth.mrc")
    volume = HartleyVolume(data.working_box)
    volume.load_map(torch.from_numpy(np.ascontiguousarray(truth)).float())
    rotations = torch.from_numpy(true_rotations).float()
    # each image's candidates: its true pose among three random ones
    g = torch.Generator().manual_seed(0)
    decoys = so3_grid(3).float()[torch.randint(0, 1944, (200, 3), generator=g)]
    candidates = torch.cat([decoys[:, :1], rotations[:, None], decoys[:, 1:]], dim=1)
    found = projection_matching(
        volume,
        data,
        torch.from_numpy(true_shifts).float(),
        20.0,
        nside=2,
        rounds=1,
        converged=0.0,
        candidates=candidates,
    )
    assert found.sources["candidate"] > 0.95
    angles = torch.rad2deg(geodesic_distance(found.rotations.double(), rotations.double()))
    assert float(angles.median()) < 0.01


def test_the_search_weighs_junk_down_by_its_amplitude(simulated_set):
    """With ``amplitudes`` each round estimates every image's amplitude at the pose it found
    and the next round's map weighs the image by it. On 400 images at SNR 0.3 with 30 % junk
    (the set of tests/inference/test_particle_scores.py), 3 rounds from the true map at 20 Å,
    measured: the map correlates 0.78 with the truth against 0.68 unweighted; the junk's
    amplitudes fall to a median of 0.32 against 1.24 for the molecules; junk, which has no
    pose to settle on, keeps changing pose, and weighted by the amplitudes the fraction that
    moved in the last round is 6.1 % against 9.0 %."""
    folder = simulated_set(n_particles=400, snr=0.3, seed=12, junk_fraction=0.3, contrast_sd=0.3)
    particles = read_star(folder / "particles.star")
    junk = particles.extra_columns["cryohydraJunk"].astype(int) == 1
    true_rotations, true_shifts = particles.require_poses()
    truth, _ = read_map(folder / "ground_truth.mrc")
    runs = {}
    for amplitudes in (False, True):
        data = ParticleBatches(particles.with_poses(None, None))
        volume = HartleyVolume(data.working_box)
        volume.load_map(torch.from_numpy(truth).float())
        found = projection_matching(
            volume,
            data,
            torch.from_numpy(true_shifts).float(),
            resolution_a=20.0,
            nside=4,
            rounds=3,
            converged=0.0,
            rotations=torch.from_numpy(true_rotations).float(),
            amplitudes=amplitudes,
        )
        fit = np.corrcoef(volume.to_map().double().numpy().ravel(), truth.ravel())[0, 1]
        runs[amplitudes] = found, data.particles.require_ctf().scale, fit
    (plain, ones, plain_fit), (weighted, scale, weighted_fit) = runs[False], runs[True]
    assert np.all(ones == 1)
    assert scale.mean() == pytest.approx(1.0, abs=1e-6)
    assert np.median(scale[junk]) < 0.4 * np.median(scale[~junk])
    assert weighted_fit > plain_fit + 0.05
    assert weighted.changed[-1] < 0.8 * plain.changed[-1]
    for found in (plain, weighted):
        errors = pose_errors(found.rotations.double().numpy()[~junk], true_rotations[~junk])
        assert errors.median_rotation_error_deg < 10.0
