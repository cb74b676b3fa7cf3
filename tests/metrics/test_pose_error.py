import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from cryohydra.geometry.rotations import exp_map, geodesic_distance, random_rotations
from cryohydra.metrics import align_rotations, plot_pose_error_histogram, point_group, pose_errors
from cryohydra.physics.atoms import projected_density

J = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
N = 400


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_axes(n: int, g: torch.Generator) -> torch.Tensor:
    axes = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return axes / axes.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def poses():
    g = _generator(0)
    return random_rotations(N, g), random_rotations(1, g)[0]


def test_globally_rotated_poses_score_zero(poses):
    true, q = poses
    errors = pose_errors(true @ q.T, true)
    assert not errors.mirrored
    assert errors.rotation_error_deg.max() < 1e-6
    assert errors.viewing_direction_error_deg.max() < 1e-6
    aligned, mirrored = align_rotations(true @ q.T, true)
    assert not mirrored and float(geodesic_distance(aligned, q)) < 1e-10


def test_mirrored_poses_score_zero_with_the_mirrored_flag(poses):
    true, q = poses
    errors = pose_errors(J @ true @ J @ q.T, true)
    assert errors.mirrored
    assert errors.rotation_error_deg.max() < 1e-6
    assert errors.viewing_direction_error_deg.max() < 1e-6
    # Without the other hand the same poses are far off.
    assert pose_errors(J @ true @ J @ q.T, J @ true @ J).mirrored is False


def test_noise_of_known_size_gives_its_median(poses):
    true, q = poses
    g = _generator(1)
    noise = exp_map(_random_axes(N, g) * math.radians(5.0))
    errors = pose_errors(noise @ true @ q.T, true)
    assert not errors.mirrored
    assert errors.median_rotation_error_deg == pytest.approx(5.0, abs=0.2)
    assert errors.mean_rotation_error_deg == pytest.approx(5.0, abs=0.2)
    assert errors.median_viewing_direction_error_deg < 5.0


def test_in_plane_error_leaves_the_viewing_direction(poses):
    true, q = poses
    in_plane = exp_map(torch.tensor([0.0, 0.0, math.radians(10.0)], dtype=torch.float64))
    errors = pose_errors(in_plane @ true @ q.T, true)
    # The global fit absorbs a little of the error (the poses are not exactly uniform).
    assert errors.median_rotation_error_deg == pytest.approx(10.0, abs=0.5)
    assert errors.median_viewing_direction_error_deg < 1.0


def test_shift_errors(poses):
    true, _ = poses
    g = _generator(2)
    t_true = 5 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    angle = 2 * math.pi * torch.rand(N, generator=g, dtype=torch.float64)
    offsets = 2.0 * torch.stack([angle.cos(), angle.sin()], dim=-1)
    errors = pose_errors(true, true, t_true + offsets, t_true)
    assert errors.mean_shift_error_a == pytest.approx(2.0)
    assert errors.median_shift_error_a == pytest.approx(2.0)
    # A map translated by c gives t_est = t_true + (R_est c)_xy: fitted and removed.
    c = torch.tensor([3.0, -2.0, 4.0], dtype=torch.float64)
    shifted = t_true + (true[:, :2, :] @ c)
    fitted = pose_errors(true, true, shifted, t_true, fit_global_offset=True)
    assert fitted.shift_error_a.max() < 1e-9
    np.testing.assert_allclose(fitted.global_offset_a, c.numpy(), atol=1e-9)
    assert pose_errors(true, true).shift_error_a is None


@pytest.mark.parametrize(
    ("symbol", "mirror"), [("C4", False), ("D3", True), ("T", True), ("O", False), ("I", True)]
)
def test_symmetry_mates_score_zero_modulo_the_group(poses, symbol, mirror):
    true, q = poses
    group = point_group(symbol)
    mates = group[torch.randint(len(group), (N,), generator=_generator(3))]
    estimated = true @ mates  # R g: the same images as R for a symmetric molecule
    if mirror:
        estimated = J @ estimated @ J
    estimated = estimated @ q.T
    errors = pose_errors(estimated, true, symmetry=symbol)
    assert errors.mirrored is mirror
    assert errors.rotation_error_deg.max() < 1e-6
    assert errors.viewing_direction_error_deg.max() < 1e-6
    assert pose_errors(estimated, true).median_rotation_error_deg > 10


def test_symmetry_given_as_operators_about_any_axis(poses):
    """A homodimer's two-fold need not lie along z: its operators in the map frame work."""
    true, q = poses
    axis = torch.tensor([0.3, -0.8, 0.52], dtype=torch.float64)
    two_fold = exp_map((axis / axis.norm() * math.pi)[None])[0]
    group = torch.stack([torch.eye(3, dtype=torch.float64), two_fold])
    mates = group[torch.randint(2, (N,), generator=_generator(5))]
    estimated = J @ true @ mates @ J @ q.T
    errors = pose_errors(estimated, true, symmetry=group.numpy())
    assert errors.mirrored and errors.symmetry == "2 operators"
    assert errors.rotation_error_deg.max() < 1e-6
    assert pose_errors(estimated, true).mean_rotation_error_deg > 45  # about half at 180
    with pytest.raises(ValueError, match="identity"):
        pose_errors(estimated, true, symmetry=group[1:])


def test_symmetric_alignment_with_noise(poses):
    true, q = poses
    g = _generator(4)
    group = point_group("D2")
    mates = group[torch.randint(len(group), (N,), generator=g)]
    noise = exp_map(_random_axes(N, g) * math.radians(8.0))
    errors = pose_errors(noise @ true @ mates @ q.T, true, symmetry="D2")
    assert errors.median_rotation_error_deg == pytest.approx(8.0, abs=0.3)


def test_summary_and_histogram(poses, tmp_path):
    true, q = poses
    noise = exp_map(_random_axes(N, _generator(5)) * math.radians(3.0))
    shifts = torch.zeros(N, 2, dtype=torch.float64)
    errors = pose_errors(noise @ true @ q.T, true, shifts + 1.0, shifts)
    summary = json.loads(json.dumps(errors.to_dict(per_particle=True)))
    assert summary["median_rotation_error_deg"] == pytest.approx(3.0, abs=0.1)
    assert summary["mean_shift_error_a"] == pytest.approx(math.sqrt(2))
    assert len(summary["rotation_error_deg"]) == N and summary["symmetry"] == "C1"
    plot_pose_error_histogram(errors, tmp_path / "errors.png")
    assert (tmp_path / "errors.png").read_bytes()[:4] == b"\x89PNG"


def _with_atoms(model, centred: np.ndarray, copies: int = 1):
    """The model with its atoms (about the centre of mass) replaced by ``centred``."""
    return dataclasses.replace(
        model,
        coords_a=model.center_of_mass_a + centred,
        coef_a=np.tile(model.coef_a, (copies, 1)),
        coef_b=np.tile(model.coef_b, (copies, 1)),
    )


def test_projections_confirm_the_derivation(default_model):
    """Images of atoms (independent of the metrics): a symmetric molecule gives the same image
    in poses R and R g (symmetry on the right, not g R), and the mirrored molecule in pose
    J R J the same image as the molecule in pose R."""
    sub = dataclasses.replace(
        default_model,
        coords_a=default_model.coords_a[::8],
        coef_a=default_model.coef_a[::8],
        coef_b=default_model.coef_b[::8],
    )
    centred = sub.coords_a - sub.center_of_mass_a
    group = point_group("C4")
    symmetric = _with_atoms(sub, np.concatenate([centred @ g.numpy().T for g in group]), 4)
    rotation = random_rotations(1, _generator(6))[0].numpy()

    def image(model, pose):
        return projected_density(model, pose, 32, 6.0).double()

    reference = image(symmetric, rotation)
    g = group[1].numpy()
    torch.testing.assert_close(image(symmetric, rotation @ g), reference)
    assert (image(symmetric, g @ rotation) - reference).norm() > 0.5 * reference.norm()
    mirrored = _with_atoms(sub, centred * np.array([1.0, 1.0, -1.0]))
    j = J.numpy()
    torch.testing.assert_close(image(mirrored, j @ rotation @ j), image(sub, rotation))
