"""A masked volume: nothing outside the mask reaches a slice, a map or a gradient."""

from __future__ import annotations

import pytest
import torch

from cryohydra.data import default_structure
from cryohydra.geometry.rotations import random_rotations
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.train import MASK_EDGE_PX, volume_mask
from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.fourier import radius_grid_3d
from cryohydra.physics.projector import SliceGrid
from cryohydra.simulate import load_structure

BOX, PIXEL_A = 32, 7.0
DENSITY = load_structure(default_structure(), BOX, PIXEL_A)[0]


def _with_a_blob_in_the_corner(density: torch.Tensor) -> torch.Tensor:
    """The density plus a blob as strong as its peak in a corner, 19 px from the centre."""
    index = torch.arange(BOX, dtype=torch.float32) - BOX // 2
    z, y, x = torch.meshgrid(index, index, index, indexing="ij")
    blob = torch.exp(-((z - 11) ** 2 + (y - 11) ** 2 + (x + 11) ** 2) / 4.0)
    return density + float(density.max()) * blob


def test_the_masked_map_is_the_map_times_the_mask():
    mask = volume_mask(20 * PIXEL_A, BOX, PIXEL_A)  # radius 10 px, edge to 13 px
    volume, plain = HartleyVolume(BOX, mask=mask), HartleyVolume(BOX)
    dirty = _with_a_blob_in_the_corner(DENSITY)
    volume.load_map(dirty)
    plain.load_map(dirty)
    masked, unmasked = volume.to_map(), plain.to_map()
    radius = radius_grid_3d(BOX)
    outside, inside = radius > 10 + MASK_EDGE_PX + 1, radius < 10
    peak = float(unmasked[outside].max())  # the blob, in full without the mask
    assert peak > 0.9 * float(dirty[outside].max())
    # Measured: 1.7 % of the blob's peak left outside (the support's truncation of the
    # masked spectrum), and inside the mask 2.6 % off the unmasked map (the same).
    assert float(masked[outside].abs().max()) < 0.05 * peak
    assert float((masked - unmasked)[inside].norm() / unmasked[inside].norm()) < 0.06
    assert volume.state_dict().keys() == {"support", "mantissa", "exponent"}


def test_slices_and_gradients_see_only_what_is_inside():
    grid = SliceGrid.create(BOX)
    poses = random_rotations(6, torch.Generator().manual_seed(2), dtype=torch.float32)
    mask = volume_mask(20 * PIXEL_A, BOX, PIXEL_A)
    clean, dirty = HartleyVolume(BOX, mask=mask), HartleyVolume(BOX, mask=mask)
    clean.load_map(DENSITY)
    dirty.load_map(_with_a_blob_in_the_corner(DENSITY))
    reference = clean.slices(poses, grid).detach()
    gap = (dirty.slices(poses, grid).detach() - reference).abs().mean() / reference.abs().mean()
    plain_clean, plain_dirty = HartleyVolume(BOX), HartleyVolume(BOX)
    plain_clean.load_map(DENSITY)
    plain_dirty.load_map(_with_a_blob_in_the_corner(DENSITY))
    plain_gap = (plain_dirty.slices(poses, grid) - plain_clean.slices(poses, grid)).detach()
    plain_gap = plain_gap.abs().mean()
    plain_gap = plain_gap / reference.abs().mean()
    assert float(gap) < 0.01 * float(plain_gap)  # measured 2e-6 against 0.11
    dirty.slices(poses, grid).abs().sum().backward()
    assert float(dirty.mantissa.grad.abs().sum()) > 0


def test_a_mask_that_does_not_fit_is_refused_with_the_largest_that_does():
    with pytest.raises(ValueError, match=r"does not fit .*at most 182.0 A"):
        volume_mask(200.0, BOX, PIXEL_A)
    with pytest.raises(ValueError, match="mask_diameter_a must be positive"):
        ReconstructConfig(mask_diameter_a=0.0)
    with pytest.raises(ValueError, match=r"must be \(16, 16, 16\)"):
        HartleyVolume(16, mask=torch.ones(8, 8, 8))


def test_reconstruct_mask_diameter_reaches_the_run_s_volume(simulated_set):
    from cryohydra.cli.common import config_from_args
    from cryohydra.cli.main import build_parser
    from cryohydra.inference.train import AbInitio
    from cryohydra.io.star import read_star

    folder = simulated_set()
    args = build_parser().parse_args(
        ["reconstruct", str(folder / "particles.star"), "-o", "out", "--mask-diameter-a", "150"]
    )
    config = config_from_args(ReconstructConfig, args)
    assert config.mask_diameter_a == 150.0
    run = AbInitio(read_star(folder / "particles.star"), config)
    torch.testing.assert_close(run.volume.mask, volume_mask(150.0, BOX, PIXEL_A))
    assert AbInitio(read_star(folder / "particles.star"), ReconstructConfig()).volume.mask is None


def test_a_mask_larger_than_the_box_is_refused_before_the_run_folder_is_made(
    simulated_set, tmp_path, capsys
):
    from cryohydra.cli.main import main as cli

    star = simulated_set() / "particles.star"
    out = tmp_path / "run"
    assert cli(["reconstruct", str(star), "-o", str(out), "--mask-diameter-a", "400"]) == 2
    assert "does not fit in the box of 32 px" in capsys.readouterr().err
    assert not out.exists()
