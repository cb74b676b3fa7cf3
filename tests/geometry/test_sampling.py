import numpy as np
import torch
from scipy import stats

from cryohydra.geometry.rotations import viewing_direction
from cryohydra.geometry.sampling import (
    preferred_orientations,
    sample_von_mises_fisher_s2,
    uniform_euler,
    uniform_so3,
)


def _directions(rotations: np.ndarray) -> np.ndarray:
    return viewing_direction(torch.from_numpy(rotations)).numpy()


def test_uniform_so3_gives_uniform_viewing_directions_and_in_plane_angles():
    rng = np.random.default_rng(0)
    rotations = uniform_so3(5000, rng)
    d = _directions(rotations)
    # On the uniform sphere z is uniform on [-1, 1] and the azimuth uniform on [-pi, pi).
    assert stats.kstest(d[:, 2], stats.uniform(-1, 2).cdf).pvalue > 0.01
    azimuth = np.arctan2(d[:, 1], d[:, 0])
    assert stats.kstest(azimuth, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 0.01
    # Haar: the rotation angle theta has density (1 - cos theta) / pi.
    theta = np.arccos(np.clip((np.trace(rotations, axis1=1, axis2=2) - 1) / 2, -1, 1))
    cdf = lambda t: (t - np.sin(t)) / np.pi  # noqa: E731
    assert stats.kstest(theta, cdf).pvalue > 0.01


def test_uniform_euler_is_not_uniform_on_the_sphere():
    d = _directions(uniform_euler(5000, np.random.default_rng(1)))
    assert stats.kstest(d[:, 2], stats.uniform(-1, 2).cdf).pvalue < 1e-6


def test_von_mises_fisher_concentration():
    rng = np.random.default_rng(2)
    kappa = 20.0
    mean = np.array([0.3, -0.5, 0.8])
    samples = sample_von_mises_fisher_s2(mean, kappa, 20000, rng)
    cosines = samples @ (mean / np.linalg.norm(mean))
    assert np.allclose(np.linalg.norm(samples, axis=1), 1)
    assert abs(cosines.mean() - (1 / np.tanh(kappa) - 1 / kappa)) < 0.003


def test_preferred_orientations_cluster_around_the_views():
    rng = np.random.default_rng(3)
    views = np.array([[0.0, 0, 1], [1.0, 0, 0]])
    rotations = preferred_orientations(4000, rng, kappa=50.0, view_directions=views)
    d = _directions(rotations)
    nearest = np.max(d @ views.T, axis=1)
    assert np.median(np.degrees(np.arccos(np.clip(nearest, -1, 1)))) < 15
    share = np.mean(np.argmax(d @ views.T, axis=1) == 0)
    assert 0.45 < share < 0.55
    # The in-plane angle stays uniform.
    psi_proxy = np.arctan2(rotations[:, 1, 2], -rotations[:, 0, 2])
    assert stats.kstest(psi_proxy, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 0.01
