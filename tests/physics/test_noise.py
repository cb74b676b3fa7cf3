"""Noise power spectra: estimated from the images' background, and coloured noise drawn from one.

Measured (seeded, 300 images of 64 px): white noise of variance 4 gives 3.99 averaged over the
shells (3.74 in shell 1, where removing the background's mean and the window's blur act);
noise drawn from a spectrum falling 20-fold is estimated within 5 % of its shape from shell 3
on (16 % low in shell 1); the 7 real EMPIAR-10076 particles' background power falls from 3.5
(shell 1) to 0.9 (shells 50-160 of 320 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryohydra.io.star import read_star
from cryohydra.physics.imaging import Identity
from cryohydra.physics.noise import (
    NoiseSpectrum,
    Whitening,
    background_power_spectrum,
    coloured_noise,
    disc_window,
)

DATA = Path(__file__).resolve().parents[1] / "data"
FALLING = NoiseSpectrum(
    np.linspace(0, 1 / 3.0, 50), 1 / (1 + (np.linspace(0, 1 / 3.0, 50) / 0.05) ** 2) + 0.05
)


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    noise = torch.randn(300, 64, 64, generator=torch.Generator().manual_seed(0)) * 2.0
    spectrum = background_power_spectrum(noise, 1.5)
    assert spectrum.power[1:].mean() == pytest.approx(4.0, rel=0.02)
    assert np.abs(spectrum.power[3:] / 4.0 - 1).max() < 0.1


def test_coloured_noise_has_the_variance_and_the_shape_asked():
    noise = coloured_noise((300, 64, 64), 1.5, FALLING, 2.0, torch.Generator().manual_seed(1))
    assert float(noise.std()) == pytest.approx(2.0, rel=0.01)
    estimate = background_power_spectrum(noise, 1.5)
    truth = FALLING.at(torch.from_numpy(estimate.frequencies_per_a)).numpy()
    ratio = estimate.power / truth
    ratio /= ratio[1:].mean()
    assert np.abs(ratio[3:] - 1).max() < 0.1  # measured 0.05
    # The same spectrum on a box half as wide: interpolated by frequency in 1/Å.
    coarse = background_power_spectrum(
        coloured_noise((300, 32, 32), 1.5, FALLING, 1.0, torch.Generator().manual_seed(2)), 1.5
    )
    assert coarse.frequencies_per_a[-1] == pytest.approx(estimate.frequencies_per_a[-1])
    shape = coarse.power / FALLING.at(torch.from_numpy(coarse.frequencies_per_a)).numpy()
    assert np.abs(shape[3:] / shape[3:].mean() - 1).max() < 0.15


def test_real_particles_background_is_coloured():
    particles = read_star(DATA / "empiar10076_7" / "empiar_10076_7.star")
    images = torch.from_numpy(particles.load_images())
    spectrum = background_power_spectrum(images, float(particles.pixel_size_a[0]))
    assert np.all(np.isfinite(spectrum.power)) and np.all(spectrum.power > 0)
    assert spectrum.power[1] > 3 * spectrum.power[50:].mean()  # measured 3.5 against 0.9


def test_a_spectrum_round_trips_and_refuses_nonsense(tmp_path):
    FALLING.save(tmp_path / "noise.json")
    loaded = NoiseSpectrum.load(tmp_path / "noise.json")
    np.testing.assert_allclose(loaded.power, FALLING.power)
    with pytest.raises(ValueError, match="increasing"):
        NoiseSpectrum(np.array([0.0, 0.1, 0.05]), np.ones(3))
    with pytest.raises(ValueError, match="too little background"):
        background_power_spectrum(torch.zeros(2, 16, 16), 1.0, mask_radius_px=20)
    window = disc_window(32, 10)
    assert float(window[16, 16]) == 0 and float(window[0, 0]) == 1


def test_whitening_makes_the_noise_white_and_keeps_its_variance():
    noise = coloured_noise((300, 64, 64), 1.5, FALLING, 2.0, torch.Generator().manual_seed(3))
    whitening = Whitening(background_power_spectrum(noise, 1.5), 64, 1.5)
    white = whitening.images(noise)
    assert float(white.std()) == pytest.approx(2.0, rel=0.05)  # measured 1.992
    after = background_power_spectrum(white, 1.5)
    before = background_power_spectrum(noise, 1.5)
    assert before.power[2] / before.power[-3:].mean() > 5  # falling: measured 11.3
    assert np.abs(after.power[2:] / after.power[2:].mean() - 1).max() < 0.1  # measured 0.057
    # The transfer function of whitened images: the same gain on the inner one.
    k = torch.tensor([[0.0, 0.01], [0.1, 0.2]])
    transfer = whitening.transfer(Identity(3))
    assert transfer(k).shape == (3, 2) and len(transfer.subset([0, 2])) == 2
    torch.testing.assert_close(transfer(k)[1], whitening.gain(k))
    assert float(whitening.gain(k)[0]) < float(whitening.gain(k)[1])  # noisy lows down
