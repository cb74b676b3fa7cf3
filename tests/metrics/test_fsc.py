import json
import math

import numpy as np
import pytest
import torch

from cryohydra.metrics import FSCCurve, fsc, plot_fsc, soft_spherical_mask
from cryohydra.physics.atoms import density_map

BOX, PIXEL_A = 32, 5.0


@pytest.fixture(scope="module")
def volume(default_model) -> torch.Tensor:
    return density_map(default_model, BOX, PIXEL_A, bfactor_a2=50.0)


def _noisy(volume: torch.Tensor, seed: int, relative_std: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return volume + relative_std * volume.std() * torch.randn(volume.shape, generator=g)


def test_fsc_of_a_map_with_itself_is_one(volume):
    curve = fsc(volume, volume, pixel_size_a=PIXEL_A)
    assert len(curve.values) == BOX // 2 + 1
    np.testing.assert_allclose(curve.values, 1.0, atol=1e-10)
    mask = soft_spherical_mask(BOX, 10, 4)
    np.testing.assert_allclose(fsc(volume, volume, mask, pixel_size_a=PIXEL_A).values, 1, 1e-10)
    resolution = curve.resolution(0.143)
    assert not resolution.crossed and resolution.resolution_a == pytest.approx(2 * PIXEL_A)


def test_fsc_with_independent_noise_falls(volume):
    curve = fsc(_noisy(volume, 1, 2.0), _noisy(volume, 2, 2.0), pixel_size_a=PIXEL_A)
    assert curve.values[1] > 0.9
    assert curve.values[-3:].max() < 0.3
    assert np.mean(curve.values[:5]) > np.mean(curve.values[5:10]) > np.mean(curve.values[10:])
    resolution = curve.resolution(0.5)
    assert resolution.crossed
    assert 2 * PIXEL_A < resolution.resolution_a < 20 * PIXEL_A


def test_frequencies_and_resolution_use_the_pixel_size(volume):
    a, b = _noisy(volume, 3, 1.0), _noisy(volume, 4, 1.0)
    fine = fsc(a, b, pixel_size_a=PIXEL_A)
    coarse = fsc(a, b, pixel_size_a=2 * PIXEL_A)
    assert fine.frequencies_per_a[-1] == pytest.approx(1 / (2 * PIXEL_A))
    assert fine.frequencies_per_a[1] == pytest.approx(1 / (BOX * PIXEL_A))
    np.testing.assert_allclose(fine.values, coarse.values)
    assert coarse.resolution_a(0.5) == pytest.approx(2 * fine.resolution_a(0.5))


def test_resolution_interpolates_the_first_crossing():
    pixel, box = 2.0, 20
    frequencies = np.arange(box // 2 + 1) / (box * pixel)
    values = np.array([1.0, 0.9, 0.8, 0.6, 0.4, 0.1, 0.6, 0.05, 0.0, 0.0, 0.0])
    curve = FSCCurve(frequencies, values, pixel)
    # 0.5 lies halfway between shells 3 (0.6) and 4 (0.4).
    assert curve.resolution_a(0.5) == pytest.approx(box * pixel / 3.5)
    # 0.143 between shells 4 and 5; the later rise at shell 6 is ignored.
    shell = 4 + (0.4 - 0.143) / (0.4 - 0.1)
    assert curve.resolution_a(0.143) == pytest.approx(box * pixel / shell)
    never = curve.resolution(-0.5)
    assert not never.crossed and never.resolution_a == pytest.approx(2 * pixel)
    assert math.isinf(curve.resolution_a(1.5))


def test_soft_spherical_mask_shape_and_smoothness():
    radius, edge = 8.0, 6.0
    mask = soft_spherical_mask(BOX, radius, edge)
    assert mask.shape == (BOX, BOX, BOX) and mask.dtype == torch.float32
    c = BOX // 2
    assert mask[c, c, c] == 1 and mask[0, 0, 0] == 0 and mask[-1, -1, -1] == 0
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    profile = mask[c, c, c:]  # along +x from the centre
    assert profile[int(radius)] == 1
    assert profile[int(radius + edge / 2)] == pytest.approx(0.5, abs=1e-6)
    assert profile[int(radius + edge)] == pytest.approx(0.0, abs=1e-6)
    assert torch.all(profile[1:] <= profile[:-1])
    # Raised cosine: neighbouring voxels differ by at most pi / (2 edge).
    assert float(profile.diff().abs().max()) <= math.pi / (2 * edge) + 1e-6
    assert float(mask.diff(dim=0).abs().max()) <= math.pi / (2 * edge) + 1e-6


def test_outputs_csv_dict_and_plot(volume, tmp_path):
    curve = fsc(_noisy(volume, 5, 1.0), _noisy(volume, 6, 1.0), pixel_size_a=PIXEL_A)
    curve.to_csv(tmp_path / "fsc.csv")
    lines = (tmp_path / "fsc.csv").read_text().splitlines()
    assert lines[0] == "frequency_per_a,resolution_a,fsc" and len(lines) == BOX // 2 + 2
    summary = json.loads(json.dumps(curve.to_dict()))
    assert summary["resolution"]["0.143"]["resolution_a"] == pytest.approx(
        curve.resolution_a(0.143)
    )
    plot_fsc(
        {"half-maps": curve, "self": fsc(volume, volume, pixel_size_a=PIXEL_A)},
        tmp_path / "fsc.png",
    )
    assert (tmp_path / "fsc.png").read_bytes()[:4] == b"\x89PNG"


def test_fsc_rejects_mismatched_maps(volume):
    with pytest.raises(ValueError):
        fsc(volume, volume[:-2, :-2, :-2], pixel_size_a=PIXEL_A)
