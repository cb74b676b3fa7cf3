import json

import numpy as np
import pytest
import torch

from cryohydra.cli.main import main as cli
from cryohydra.data import default_structure
from cryohydra.geometry.rotations import exp_map, random_rotations
from cryohydra.io.mrc import write_map
from cryohydra.io.star import read_star, write_star
from cryohydra.io.structure import read_atomic_model
from cryohydra.metrics.map_alignment import flip_handedness, rotate_map, shift_map
from cryohydra.physics.atoms import density_map
from cryohydra.simulate import SimulationConfig, simulate

BOX, PIXEL = 40, 5.6


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    volume = density_map(read_atomic_model(default_structure()), BOX, PIXEL)
    noisy = volume + 0.3 * volume.std() * torch.randn(
        volume.shape, generator=torch.Generator().manual_seed(0)
    )
    rotation = random_rotations(1, generator=torch.Generator().manual_seed(4))[0]
    moved = shift_map(rotate_map(flip_handedness(noisy), rotation), [4.0, -3.0, 2.0], PIXEL)
    write_map(folder / "reference.mrc", volume.numpy(), PIXEL)
    write_map(folder / "noisy.mrc", noisy.numpy(), PIXEL)
    write_map(folder / "moved.mrc", moved.numpy(), PIXEL)
    return folder


def _fsc_summary(folder, first, second, out, *extra):
    args = ["fsc", str(folder / first), str(folder / second), "-o", str(out), "--mask", "sphere"]
    assert cli([*args, *extra]) == 0
    return json.loads((out / "fsc.json").read_text())


def test_fsc_of_a_rotated_mirrored_map_comes_back_after_alignment(maps, tmp_path):
    original = _fsc_summary(maps, "reference.mrc", "noisy.mrc", tmp_path / "original")
    unaligned = _fsc_summary(maps, "reference.mrc", "moved.mrc", tmp_path / "unaligned")
    aligned = _fsc_summary(maps, "reference.mrc", "moved.mrc", tmp_path / "aligned", "--align")
    assert aligned["alignment"]["mirrored"] is True
    assert aligned["config"]["align"] and aligned["config"]["allow_mirror"]
    assert not original["config"]["align"]
    res = {
        name: s["fsc"]["resolution"]["0.5"]["resolution_a"]
        for name, s in (("original", original), ("unaligned", unaligned), ("aligned", aligned))
    }
    assert res["unaligned"] > 3 * res["original"]
    assert res["aligned"] <= res["original"] * 1.1
    values_original = np.array(original["fsc"]["values"])
    values_aligned = np.array(aligned["fsc"]["values"])
    shells = slice(1, int(0.6 * BOX // 2))
    assert np.all(values_aligned[shells] > values_original[shells] - 0.05)
    for name in ("fsc.csv", "fsc.png", "aligned.mrc"):
        assert (tmp_path / "aligned" / name).stat().st_size > 0


def test_fsc_rejects_maps_of_different_size(maps, tmp_path, capsys):
    write_map(tmp_path / "small.mrc", np.zeros((20, 20, 20), np.float32), PIXEL)
    args = [
        "fsc",
        str(maps / "reference.mrc"),
        str(tmp_path / "small.mrc"),
        "-o",
        str(tmp_path / "o"),
    ]
    assert cli(args) == 2
    assert "small.mrc" in capsys.readouterr().err


@pytest.fixture(scope="module")
def poses(tmp_path_factory):
    folder = tmp_path_factory.mktemp("poses")
    config = SimulationConfig(
        structure=str(default_structure()),
        box_size=16,
        pixel_size_a=14.0,
        n_particles=300,
        snr=1.0,
        shift_std_a=3.0,
        ctf=False,
    )
    simulate(config, folder, progress=False)
    return folder / "particles.star"


def _evaluate(estimated, true, out, *extra):
    assert cli(["evaluate", str(estimated), str(true), "-o", str(out), *extra]) == 0
    return json.loads((out / "pose_errors.json").read_text())


@pytest.mark.parametrize("mirror", [False, True])
def test_globally_rotated_true_poses_score_zero(poses, tmp_path, mirror):
    true = read_star(poses)
    q = random_rotations(1, generator=torch.Generator().manual_seed(5))[0].numpy()
    rotations = true.rotations @ q.T
    if mirror:
        flip = np.diag([1.0, 1.0, -1.0])
        rotations = flip @ rotations @ flip
    estimated = true.with_poses(rotations, true.shifts_a)
    write_star(tmp_path / "estimated.star", estimated)
    result = _evaluate(tmp_path / "estimated.star", poses, tmp_path / "eval")
    assert result["mirrored"] is mirror
    assert result["median_rotation_error_deg"] < 1e-3
    assert result["mean_viewing_direction_error_deg"] < 1e-3
    assert result["median_shift_error_a"] < 1e-6
    assert (tmp_path / "eval" / "pose_errors.png").stat().st_size > 0


def test_evaluate_matches_particles_by_image_and_measures_noise(poses, tmp_path):
    true = read_star(poses)
    order = np.random.default_rng(0).permutation(len(true))[:200]
    perturbed = true.subset(order)
    # Small random rotations of 4 degrees about random axes.
    axes = np.random.default_rng(1).normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    small = exp_map(torch.from_numpy(np.radians(4.0) * axes)).numpy()
    perturbed = perturbed.with_poses(small @ perturbed.rotations, perturbed.shifts_a + 1.0)
    write_star(tmp_path / "perturbed.star", perturbed)
    result = _evaluate(tmp_path / "perturbed.star", poses, tmp_path / "eval")
    assert result["n_matched"] == 200
    assert result["config"] == {"symmetry": "C1", "per_particle": False}
    assert result["median_rotation_error_deg"] == pytest.approx(4.0, abs=0.3)
    assert result["median_shift_error_a"] == pytest.approx(np.sqrt(2), abs=1e-3)


def test_fsc_honours_the_mrc_axis_order(maps, tmp_path):
    """A map stored with its sections along x (mapc, mapr, maps = 3, 2, 1) is the same map:
    its FSC with the original is 1 at every shell (it once scored 155 A)."""
    import mrcfile

    with mrcfile.open(maps / "noisy.mrc") as mrc:
        zyx = mrc.data.copy()
    swapped = tmp_path / "swapped.mrc"
    with mrcfile.new(swapped) as mrc:
        mrc.set_data(np.ascontiguousarray(zyx.transpose(2, 1, 0)))  # array (x, y, z)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 3, 2, 1
        mrc.voxel_size = PIXEL
    (tmp_path / "noisy.mrc").symlink_to(maps / "noisy.mrc")
    result = _fsc_summary(tmp_path, "noisy.mrc", "swapped.mrc", tmp_path / "out")
    assert min(result["fsc"]["values"][1:]) > 0.999


def test_evaluate_pairs_repeated_images_in_order(poses, tmp_path):
    """A symmetry-expanded STAR (each image twice, with two poses) against itself scores 0;
    pairing every repeat with the first occurrence once gave 45 degrees."""
    true = read_star(poses)
    rows = np.repeat(np.arange(100), 2)
    expanded = true.subset(rows)
    two_fold = np.diag([-1.0, -1.0, 1.0])
    rotations = expanded.rotations.copy()
    rotations[1::2] = rotations[1::2] @ two_fold
    expanded = expanded.with_poses(rotations, expanded.shifts_a)
    write_star(tmp_path / "expanded.star", expanded)
    result = _evaluate(tmp_path / "expanded.star", tmp_path / "expanded.star", tmp_path / "eval")
    assert result["n_matched"] == 200
    assert result["median_rotation_error_deg"] < 1e-3 and result["mean_rotation_error_deg"] < 1e-3


def test_evaluate_a_relion5_star_against_itself_scores_zero(tmp_path):
    """cryoDRGN's RELION 5 fixture repeats image names; it once scored 14.5 degrees (mean)."""
    from pathlib import Path

    star = Path(__file__).resolve().parents[1] / "data" / "metadata" / "relion5.star"
    result = _evaluate(star, star, tmp_path / "eval")
    assert result["n_matched"] == 17
    assert result["mean_rotation_error_deg"] < 1e-3
