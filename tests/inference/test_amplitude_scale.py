"""``reconstruct --amplitude-scale``: each particle's amplitude (the CTF's scale, RELION's
rlnCtfScalefactor) estimated in closed form against the map at its pose.

The set: the bundled structure, 32 px at 7 Å/px, 256 particles at SNR 1 with a CTF, each
particle's contrast drawn with sd 0.3 (``simulate --contrast-sd``, recorded as
cryohydraContrast)."""

from __future__ import annotations

import numpy as np
import pytest

from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.train import AbInitio
from cryohydra.io.star import read_star

CONFIG = ReconstructConfig(amplitude_scale=True)


@pytest.fixture(scope="module")
def contrast_set(simulated_set):
    particles = read_star(simulated_set(contrast_sd=0.3, snr=1.0) / "particles.star")
    truth = np.asarray(particles.extra_columns["cryohydraContrast"], dtype=np.float64)
    return particles, truth


def test_scales_at_the_true_poses_follow_the_true_contrast(contrast_set):
    particles, truth = contrast_set
    run = AbInitio(particles.with_poses(None, None), CONFIG)
    run.start_from_poses(*particles.require_poses())
    assert np.all(run.amplitude_scales() == 1)
    spread = run.update_amplitude_scales(run.epoch + 1)
    found = run.amplitude_scales()
    # Measured: correlation 0.990 with the true contrast (sd 0.28 here), estimated sd 0.26.
    assert np.corrcoef(found, truth)[0, 1] > 0.95
    assert abs(found.mean() - 1) < 1e-6
    assert spread["sd"] == pytest.approx(found.std())
    # The batches the run trains on carry them (and so its maps and comparisons).
    batch = run.data.load(np.array([0, 1]))
    plain = run.data.particles.with_amplitude_scale(np.ones(len(particles)))
    ones = plain.transfer_function(np.array([0, 1]))(batch.frequencies_a)
    np.testing.assert_allclose(
        (batch.transfer / ones).median(dim=1).values.numpy(), found[:2], rtol=1e-5
    )
    # A checkpoint carries them into a resumed run.
    resumed = AbInitio(particles.with_poses(None, None), CONFIG)
    resumed.load_state_dict(run.state_dict())
    np.testing.assert_array_equal(resumed.amplitude_scales(), found)


def test_amplitude_scale_needs_a_ctf(contrast_set):
    particles, _ = contrast_set
    from dataclasses import replace

    with pytest.raises(ValueError, match="--amplitude-scale needs the particles' CTF"):
        AbInitio(replace(particles, ctf=None), CONFIG)


def test_amplitude_scale_needs_a_switch():
    with pytest.raises(ValueError, match="estimated from the switch on"):
        ReconstructConfig(amplitude_scale=True, mode="amortized")
