import math

import numpy as np
import pytest
import torch

from cryohydra.geometry.rotations import (
    cryosparc_pose_to_matrix,
    euler_relion_to_matrix,
    exp_map,
    geodesic_distance,
    log_map,
    matrix_to_cryosparc_pose,
    matrix_to_euler_relion,
    matrix_to_sixd,
    random_rotations,
    sixd_to_matrix,
    viewing_direction,
)


def _conventions_matrix(rot, tilt, psi):
    """The matrix written out in CONVENTIONS.md."""
    ca, sa, cb, sb = math.cos(rot), math.sin(rot), math.cos(tilt), math.sin(tilt)
    cg, sg = math.cos(psi), math.sin(psi)
    return np.array(
        [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ]
    )


def test_euler_matrix_is_the_conventions_matrix():
    angles = [(0.3, 1.1, -2.0), (-102.30296, 82.318041, 124.706463)]
    for rot, tilt, psi in angles:
        expected = _conventions_matrix(rot, tilt, psi)
        got = euler_relion_to_matrix(torch.tensor([rot, tilt, psi], dtype=torch.float64))
        assert np.allclose(got.numpy(), expected, atol=1e-12)
    # rot = 90 deg alone: A = Rz(-90) as a change of frame.
    quarter = euler_relion_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    assert np.allclose(quarter.numpy(), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_euler_round_trip_including_gimbal_lock():
    g = torch.Generator().manual_seed(0)
    rotations = random_rotations(500, generator=g)
    back = euler_relion_to_matrix(matrix_to_euler_relion(rotations))
    assert torch.allclose(back, rotations, atol=1e-10)
    for tilt in (0.0, math.pi):
        locked = euler_relion_to_matrix(torch.tensor([0.7, tilt, -0.4], dtype=torch.float64))
        angles = matrix_to_euler_relion(locked)
        assert angles[0] == 0.0
        assert torch.allclose(euler_relion_to_matrix(angles), locked, atol=1e-12)


def test_cryosparc_pose_round_trip_and_transpose_relation():
    pose = torch.tensor([2.3386633, -0.25595567, -1.2236784], dtype=torch.float64)
    matrix = cryosparc_pose_to_matrix(pose)
    assert torch.allclose(matrix, exp_map(pose).T, atol=1e-12)
    assert torch.allclose(matrix_to_cryosparc_pose(matrix), pose, atol=1e-9)


def test_sixd_round_trip_and_orthonormalisation():
    rotations = random_rotations(50, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sixd_to_matrix(matrix_to_sixd(rotations)), rotations, atol=1e-12)
    noisy = sixd_to_matrix(torch.randn(10, 6, dtype=torch.float64))
    identity = torch.eye(3, dtype=torch.float64).expand(10, 3, 3)
    assert torch.allclose(noisy @ noisy.transpose(1, 2), identity, atol=1e-12)
    assert torch.allclose(torch.linalg.det(noisy), torch.ones(10, dtype=torch.float64))


def test_exp_map_is_right_handed_and_log_inverts_it():
    r = exp_map(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    assert torch.allclose(
        r @ torch.tensor([1.0, 0, 0]).double(), torch.tensor([0.0, 1, 0]).double()
    )
    w = torch.randn(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    w = w / w.norm(dim=1, keepdim=True) * torch.rand(100, 1, dtype=torch.float64) * 3.0
    assert torch.allclose(log_map(exp_map(w)), w, atol=1e-9)


def test_exp_map_gradient_at_exactly_zero_is_finite_and_correct():
    # d exp(w) / d w_i at w = 0 is the generator [e_i]_x.
    generators = [
        [[0, 0, 0], [0, 0, -1], [0, 1, 0]],
        [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 0]],
    ]
    for i, generator in enumerate(generators):
        jacobian = torch.autograd.functional.jacobian(exp_map, torch.zeros(3, dtype=torch.float64))
        assert torch.isfinite(jacobian).all()
        assert torch.allclose(jacobian[..., i], torch.tensor(generator, dtype=torch.float64))
    # And through a composed pose R <- exp(w) R0 inside a loss.
    r0 = random_rotations(1, generator=torch.Generator().manual_seed(3))
    w = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    (exp_map(w) @ r0).pow(3).sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_geodesic_distance_and_viewing_direction():
    angle = torch.tensor([0.0, 0.01, 1.0, 3.0], dtype=torch.float64)
    axis = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    axis = axis / axis.norm()
    r = exp_map(angle[:, None] * axis)
    base = random_rotations(4, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(geodesic_distance(r @ base, base), angle, atol=1e-7)
    tilt_only = euler_relion_to_matrix(torch.tensor([0.5, 0.3, 1.0], dtype=torch.float64))
    expected = [math.sin(0.3) * math.cos(0.5), math.sin(0.3) * math.sin(0.5), math.cos(0.3)]
    assert np.allclose(viewing_direction(tilt_only).numpy(), expected)


def test_random_rotations_are_rotations():
    rotations = random_rotations(1000, generator=torch.Generator().manual_seed(5))
    identity = torch.eye(3, dtype=torch.float64).expand(1000, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), identity, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(1000, dtype=torch.float64))
    # Haar measure: E[R] = 0 (each entry has variance 1/3, so the mean of 1000 is ~0.018).
    assert rotations.mean(0).abs().max() < 0.08


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_rotations_run_on_device(device):
    angles = torch.zeros(2, 3, device=device)
    assert euler_relion_to_matrix(angles).device.type == device
