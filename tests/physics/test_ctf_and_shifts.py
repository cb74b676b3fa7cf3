import math

import pytest
import torch

from cryohydra.physics.ctf import ctf_2d, electron_wavelength_a
from cryohydra.physics.shifts import phase_ramp, shift_images


def _hand_ctf(kx, ky, dfu, dfv, angle_deg, kv, cs_mm, w, phase_deg=0.0, b=0.0):
    """The conventions' formula, written out with the math module."""
    volts = kv * 1000
    lam = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
    s2 = kx * kx + ky * ky
    phi = math.atan2(ky, kx)
    df = 0.5 * (dfu + dfv + (dfu - dfv) * math.cos(2 * (phi - math.radians(angle_deg))))
    cs = cs_mm * 1e7
    gamma = (
        math.pi * lam * df * s2
        - math.pi / 2 * cs * lam**3 * s2 * s2
        + math.radians(phase_deg)
        + math.asin(w)
    )
    return math.sin(gamma) * math.exp(-b * s2 / 4)


def test_wavelength_at_300_kv():
    assert electron_wavelength_a(300.0) == pytest.approx(0.019687, abs=1e-6)


@pytest.mark.parametrize(
    "k", [(0.0, 0.0), (0.01, 0.0), (0.0, 0.05), (0.03, -0.04), (-0.11, 0.07), (0.2, 0.15)]
)
def test_ctf_matches_hand_computation(k):
    params = dict(dfu=15301.1, dfv=14916.4, angle_deg=5.28, kv=300.0, cs_mm=2.7, w=0.07)
    second = dict(dfu=22000.0, dfv=20000.0, angle_deg=-40.0, kv=200.0, cs_mm=0.01, w=0.1)
    freqs = torch.tensor([k], dtype=torch.float64)
    values = ctf_2d(
        freqs,
        defocus_u_a=torch.tensor([params["dfu"], second["dfu"]]),
        defocus_v_a=torch.tensor([params["dfv"], second["dfv"]]),
        astigmatism_angle_rad=torch.deg2rad(torch.tensor([5.28, -40.0])),
        voltage_kv=torch.tensor([300.0, 200.0]),
        cs_mm=torch.tensor([2.7, 0.01]),
        amplitude_contrast=torch.tensor([0.07, 0.1]),
        phase_shift_rad=torch.tensor([0.0, math.radians(30)]),
        bfactor_a2=torch.tensor([0.0, 50.0]),
    )
    assert values[0, 0] == pytest.approx(_hand_ctf(*k, **params), abs=1e-6)
    assert values[1, 0] == pytest.approx(_hand_ctf(*k, **second, phase_deg=30.0, b=50.0), abs=1e-6)


def test_ctf_at_zero_frequency_is_the_amplitude_contrast():
    value = ctf_2d(
        torch.zeros(1, 2),
        torch.tensor([1e4]),
        torch.tensor([1e4]),
        torch.tensor([0.0]),
        torch.tensor([300.0]),
        torch.tensor([2.7]),
        torch.tensor([0.1]),
    )
    assert value.item() == pytest.approx(0.1, abs=1e-6)


def test_integer_shift_moves_the_image_by_minus_t():
    # I(x) = P(x + t): a feature at x0 in P appears at x0 - t in I.
    image = torch.zeros(1, 16, 16, dtype=torch.float64)
    image[0, 8, 8] = 1.0
    pixel = 2.0
    shifted = shift_images(image, torch.tensor([[4.0, -2.0]], dtype=torch.float64), pixel)
    peak = torch.nonzero(shifted[0] > 0.5)
    assert peak.tolist() == [[8 + 1, 8 - 2]]  # y = 8 - (-2/2), x = 8 - 4/2
    back = shift_images(shifted, torch.tensor([[-4.0, 2.0]], dtype=torch.float64), pixel)
    assert torch.allclose(back, image, atol=1e-12)


def test_phase_ramp_is_unit_modulus_and_batched():
    freqs = torch.randn(10, 2, dtype=torch.float64)
    ramp = phase_ramp(freqs, torch.randn(3, 2, dtype=torch.float64))
    assert ramp.shape == (3, 10)
    assert torch.allclose(ramp.abs(), torch.ones(3, 10, dtype=torch.float64))
