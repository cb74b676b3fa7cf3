import pytest
import torch

from cryohydra.physics.fourier import (
    fft2_centered,
    fft3_centered,
    fourier_crop,
    fourier_to_hartley,
    frequency_axis,
    frequency_grid_2d,
    hartley2,
    hartley3,
    hartley_to_fourier,
    ifft2_centered,
    ifft3_centered,
    ihartley2,
    ihartley3,
    padded_fft3,
)


def test_fft_round_trips():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 16, 16, generator=g, dtype=torch.float64)
    volume = torch.randn(12, 12, 12, generator=g, dtype=torch.float64)
    assert torch.allclose(ifft2_centered(fft2_centered(images)).real, images, atol=1e-12)
    assert torch.allclose(ifft3_centered(fft3_centered(volume)).real, volume, atol=1e-12)


def test_hartley_round_trips_and_relation_to_fourier():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 16, 16, generator=g, dtype=torch.float64)
    volume = torch.randn(10, 10, 10, generator=g, dtype=torch.float64)
    assert torch.allclose(ihartley2(hartley2(images)), images, atol=1e-12)
    assert torch.allclose(ihartley3(hartley3(volume)), volume, atol=1e-12)
    spectrum = fft2_centered(images)
    hartley = fourier_to_hartley(spectrum)
    # H(-k): flip both axes about the centre (index L//2 maps to itself for even L).
    flipped = torch.roll(torch.flip(hartley, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    assert torch.allclose(hartley_to_fourier(hartley, flipped), spectrum, atol=1e-10)


def test_dc_sits_at_the_centre_and_a_centred_delta_is_flat():
    constant = torch.ones(8, 8, dtype=torch.float64)
    spectrum = fft2_centered(constant)
    assert spectrum[4, 4].real == pytest.approx(64)
    assert spectrum.abs().sum() == pytest.approx(64)
    delta = torch.zeros(8, 8, dtype=torch.float64)
    delta[4, 4] = 1  # the box centre L // 2
    assert torch.allclose(fft2_centered(delta), torch.ones(8, 8, dtype=torch.complex128))


def test_kernel_sign_and_frequency_units():
    # x(n) = cos(2 pi f n) + sin(2 pi f n) with f = 2 / L: with kernel exp(-2 pi i k x) the
    # sine puts -i L/2 at +f, so the Hartley transform is +L/2 + L/2 = L at +f.
    L, pixel = 16, 2.0
    n = torch.arange(L, dtype=torch.float64) - L // 2
    signal = torch.cos(2 * torch.pi * 2 * n / L) + torch.sin(2 * torch.pi * 2 * n / L)
    image = signal[None, :].repeat(L, 1)  # varies along x (last axis)
    hartley = hartley2(image)
    assert hartley[L // 2, L // 2 + 2] == pytest.approx(L * L)
    assert hartley[L // 2, L // 2 - 2] == pytest.approx(0, abs=1e-9)
    freqs = frequency_grid_2d(L, pixel, dtype=torch.float64)
    assert freqs[L // 2, L // 2 + 2, 0] == pytest.approx(2 / (L * pixel))
    assert freqs[L // 2 + 3, L // 2, 1] == pytest.approx(3 / (L * pixel))
    assert frequency_axis(L, pixel)[0] == pytest.approx(-1 / (2 * pixel))


def test_fourier_crop_keeps_values_and_low_frequencies():
    L = 32
    n = torch.arange(L, dtype=torch.float64) - L // 2
    wave = 3 + torch.cos(2 * torch.pi * n / L)
    image = wave[None, :].repeat(L, 1)
    small = fourier_crop(image, 16)
    m = torch.arange(16, dtype=torch.float64) - 8
    expected = (3 + torch.cos(2 * torch.pi * m / 16))[None, :].repeat(16, 1)
    assert torch.allclose(small, expected, atol=1e-10)
    volume = torch.full((8, 8, 8), 2.0, dtype=torch.float64)
    assert torch.allclose(fourier_crop(volume, 4, ndim=3), torch.full((4, 4, 4), 2.0).double())


def test_padded_transform_samples_the_plain_one_at_even_indices():
    volume = torch.randn(8, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = fft3_centered(volume)
    padded = padded_fft3(volume, 2)
    assert torch.allclose(padded[::2, ::2, ::2], plain, atol=1e-10)
