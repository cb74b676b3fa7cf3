"""``backproject --symmetry``: symmetry expansion gives a symmetric map, closer to the truth.

The truth is the bundled structure's density made D2-symmetric (its operators are signed
permutations of the axes, exact on the grid), 32 px at 7 Å/px; 200 particles at SNR 0.03 with CTF.
"""

from __future__ import annotations

import mrcfile
import pytest
import torch

from cryohydra.cli.main import main as cli
from cryohydra.data import default_structure
from cryohydra.geometry.symmetry import point_group
from cryohydra.io.mrc import read_map, write_map
from cryohydra.metrics.fsc import fsc, soft_spherical_mask
from cryohydra.metrics.map_alignment import rotate_map
from cryohydra.metrics.symmetry import symmetrise_map
from cryohydra.simulate import SimulationConfig, load_structure, simulate

BOX, PIXEL_A = 32, 7.0


@pytest.fixture(scope="module")
def d2_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2")
    density, _ = load_structure(default_structure(), BOX, PIXEL_A)
    truth = symmetrise_map(density, "D2", oversampling=1)
    write_map(root / "d2.mrc", truth.numpy(), PIXEL_A)
    config = SimulationConfig(
        structure=str(root / "d2.mrc"), box_size=BOX, n_particles=200, snr=0.03, seed=3
    )
    simulate(config, root / "sim", progress=False)
    return root


def _resolution_vs_truth(volume: torch.Tensor, truth: torch.Tensor) -> float:
    """FSC 0.5 (Å) of two maps in the same frame, masked."""
    mask = soft_spherical_mask(BOX, BOX / 2 - 4, 2)
    curve = fsc(volume * mask, truth * mask, pixel_size_a=PIXEL_A)
    return curve.resolution_a(0.5)


def test_symmetry_expansion_gives_a_symmetric_map_nearer_the_truth(d2_set, tmp_path):
    truth = torch.as_tensor(read_map(d2_set / "sim" / "ground_truth.mrc")[0])
    star = str(d2_set / "sim" / "particles.star")
    maps = {}
    for group in ("C1", "D2"):
        out = tmp_path / group
        assert cli(["backproject", star, "-o", str(out), "--quiet", "--symmetry", group]) == 0
        with mrcfile.open(out / "map.mrc") as handle:
            maps[group] = torch.from_numpy(handle.data.copy())
    resolution = {g: _resolution_vs_truth(m, truth) for g, m in maps.items()}
    print(resolution)
    assert resolution["D2"] < 0.85 * resolution["C1"]
    # Symmetric to rounding inside the box (the -L/2 planes turn out of it).
    mask = soft_spherical_mask(BOX, BOX / 2 - 2, 1)
    asymmetry = {
        group: max(
            float(((rotate_map(volume, g) - volume) * mask).norm() / (volume * mask).norm())
            for g in point_group("D2")[1:]
        )
        for group, volume in maps.items()
    }
    print(asymmetry)
    assert asymmetry["D2"] < 1e-5
    assert asymmetry["C1"] > 0.1
