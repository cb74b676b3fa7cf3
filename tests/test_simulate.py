import json
import math
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from cryohydra.cli.main import main as cli
from cryohydra.data import default_structure
from cryohydra.geometry.rotations import viewing_direction
from cryohydra.io.errors import InputFileError, OutputExistsError
from cryohydra.io.star import read_star
from cryohydra.physics.imaging import FourierVolume, ImagingModel, spectra_to_images
from cryohydra.physics.noise import NoiseSpectrum, background_power_spectrum
from cryohydra.physics.projector import SliceGrid
from cryohydra.physics.shifts import shift_images
from cryohydra.simulate import SimulationConfig, simulate

BOX, PIXEL = 32, 7.0


def _config(**changes) -> SimulationConfig:
    settings = dict(
        structure=str(default_structure()),
        box_size=BOX,
        pixel_size_a=PIXEL,
        n_particles=150,
        snr=0.1,
        shift_std_a=4.0,
        chunk_size=64,
        seed=7,
    )
    settings.update(changes)
    return SimulationConfig(**settings)


@pytest.fixture(scope="module")
def noisy_and_clean(tmp_path_factory):
    noisy = tmp_path_factory.mktemp("noisy")
    clean = tmp_path_factory.mktemp("clean")
    simulate(_config(), noisy, progress=False)
    simulate(_config(snr=math.inf), clean, progress=False)
    return noisy, clean


def _stack(folder) -> np.ndarray:
    with mrcfile.open(folder / "particles.mrcs") as mrc:
        return mrc.data.copy()


def test_measured_snr_matches_the_requested_one(noisy_and_clean):
    noisy, clean = noisy_and_clean
    signal, images = _stack(clean), _stack(noisy)
    noise = images - signal
    measured = signal.var(axis=(1, 2)).mean() / noise.var()
    assert measured == pytest.approx(0.1, rel=0.05)
    summary = json.loads((noisy / "simulation.json").read_text())
    assert summary["snr_db"] == pytest.approx(-10.0)
    assert abs(noise.mean()) < 0.02 * noise.std()


def test_same_seed_same_dataset(noisy_and_clean, tmp_path):
    noisy, _ = noisy_and_clean
    simulate(_config(), tmp_path / "again", progress=False)
    assert np.array_equal(_stack(noisy), _stack(tmp_path / "again"))
    simulate(_config(seed=8), tmp_path / "other", progress=False)
    assert not np.allclose(_stack(noisy), _stack(tmp_path / "other"))


def test_star_file_holds_the_truth_that_made_the_images(noisy_and_clean):
    """Re-create the clean images from the STAR file's poses, shifts and CTF alone."""
    _, clean = noisy_and_clean
    particles = read_star(clean / "particles.star")
    assert len(particles) == 150 and particles.box_size == BOX
    assert particles.pixel_size_a[0] == pytest.approx(PIXEL)
    rotations, shifts = particles.require_poses()
    with mrcfile.open(clean / "ground_truth.mrc") as mrc:
        volume = torch.from_numpy(mrc.data.copy())
        assert float(mrc.voxel_size.x) == pytest.approx(PIXEL)
    grid = SliceGrid.create(BOX)
    rows = np.arange(10)
    spectra = ImagingModel(grid, PIXEL).images(
        FourierVolume.from_map(volume),
        torch.from_numpy(rotations[rows]),
        torch.from_numpy(shifts[rows]),
        particles.transfer_function(rows),
    )
    expected = spectra_to_images(spectra, grid).numpy()
    got = particles.load_images(rows)
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
    assert np.std(shifts) == pytest.approx(4.0, rel=0.15)


def test_shifting_by_plus_t_centres_the_particle(tmp_path):
    centred = tmp_path / "centred"
    shifted = tmp_path / "shifted"
    simulate(_config(snr=math.inf, shift_std_a=0.0, n_particles=8), centred, progress=False)
    simulate(_config(snr=math.inf, shift_std_a=5.0, n_particles=8), shifted, progress=False)
    t = torch.from_numpy(read_star(shifted / "particles.star").shifts_a)
    images = torch.from_numpy(_stack(shifted)).double()
    # Translating I by +t is J(x) = I(x - t), i.e. shift_images with -t.
    recentred = shift_images(images, -t, PIXEL).numpy()
    reference = _stack(centred)
    assert np.abs(recentred - reference).max() < 0.02 * np.abs(reference).max()


def test_preferred_orientations_and_dark_contrast(tmp_path):
    config = _config(
        n_particles=400, orientations="preferred", n_views=2, view_kappa=100.0, ctf=False
    )
    simulate(config, tmp_path / "pref", progress=False)
    rotations = read_star(tmp_path / "pref" / "particles.star").rotations
    d = viewing_direction(torch.from_numpy(rotations)).numpy()
    # Two tight lobes: most directions are close to one of two points.
    first = d[0]
    near_first = d @ first > 0.9
    rest = d[~near_first]
    assert near_first.mean() > 0.25 and (rest @ rest[0] > 0.9).mean() > 0.9
    bright = _config(n_particles=4, ctf=False, snr=math.inf, shift_std_a=0.0)
    dark = _config(n_particles=4, ctf=False, snr=math.inf, shift_std_a=0.0, contrast_sign=-1)
    simulate(bright, tmp_path / "bright", progress=False)
    simulate(dark, tmp_path / "dark", progress=False)
    assert np.allclose(_stack(tmp_path / "bright"), -_stack(tmp_path / "dark"))
    assert _stack(tmp_path / "bright").sum() > 0  # protein is positive without CTF


def test_ctf_table_and_map_input(tmp_path, test_data):
    table = test_data / "metadata" / "empiar10028_ctf.npy"
    simulate(_config(n_particles=20, ctf_table=str(table)), tmp_path / "a", progress=False)
    ctf = read_star(tmp_path / "a" / "particles.star").require_ctf()
    rows = np.load(table).astype(np.float64)
    assert set(np.round(ctf.defocus_u_a, 1)) <= set(np.round(rows[:, 2], 1))
    assert np.allclose(ctf.voltage_kv, 300) and np.allclose(ctf.cs_mm, 2.0)
    # A map as input keeps its voxel size.
    simulate(
        _config(structure=str(tmp_path / "a" / "ground_truth.mrc"), pixel_size_a=None),
        tmp_path / "b",
        progress=False,
    )
    assert read_star(tmp_path / "b" / "particles.star").pixel_size_a[0] == pytest.approx(PIXEL)
    with pytest.raises(InputFileError, match="voxel size"):
        simulate(
            _config(structure=str(tmp_path / "a" / "ground_truth.mrc"), pixel_size_a=3.0),
            tmp_path / "c",
            progress=False,
        )


def test_outputs_are_never_overwritten_without_force(tmp_path):
    simulate(_config(n_particles=4), tmp_path, progress=False)
    before = (tmp_path / "particles.star").read_bytes()
    with pytest.raises(OutputExistsError):
        simulate(_config(n_particles=5), tmp_path, progress=False)
    assert (tmp_path / "particles.star").read_bytes() == before
    simulate(_config(n_particles=5), tmp_path, force=True, progress=False)
    assert len(read_star(tmp_path / "particles.star")) == 5


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["simulate", str(default_structure()), "-o", str(out), "--box", "32"]
    args += ["--pixel-size", "7", "-n", "10", "--quiet", "--orientations", "euler"]
    assert cli(args) == 0
    assert "particles.star" in capsys.readouterr().out
    assert cli(args) == 2  # exists already
    assert "--force" in capsys.readouterr().err
    missing = ["simulate", str(tmp_path / "missing.pdb"), "-o", str(tmp_path / "new")]
    assert cli([*missing, "--pixel-size", "2"]) == 2
    assert "missing.pdb" in capsys.readouterr().err


def test_coloured_noise_shaped_like_a_real_stacks_background(noisy_and_clean, tmp_path):
    """``--noise-spectrum``: the noise takes the shape of the spectrum measured on the real
    EMPIAR-10076 particles' background, at the SNR asked (the clean images are unchanged).
    Measured: shape within 4.9 % of the spectrum asked (shells 2-16), power in shell 2 2.57
    times that of the last 3 shells (white noise: 0.98), SNR 0.0996."""
    noisy, clean = noisy_and_clean
    real = Path(__file__).parent / "data" / "empiar10076_7" / "empiar_10076_7.star"
    summary = simulate(_config(noise_spectrum=str(real)), tmp_path / "coloured", progress=False)
    signal = _stack(clean)
    noise = _stack(tmp_path / "coloured") - signal
    assert signal.var(axis=(1, 2)).mean() / noise.var() == pytest.approx(0.1, rel=0.05)
    wanted = NoiseSpectrum.from_dict(summary["noise_spectrum"])
    found = background_power_spectrum(torch.from_numpy(noise), PIXEL, mask_radius_px=4)
    ratio = found.power / wanted.at(torch.from_numpy(found.frequencies_per_a)).numpy()
    ratio = ratio[2:] / ratio[2:].mean()
    assert np.abs(ratio - 1).max() < 0.15
    # Coloured: the real background's power falls over these frequencies; white noise's not.
    assert found.power[2] > 1.5 * found.power[-3:].mean()
    white_noise = torch.from_numpy(_stack(noisy) - signal)
    white = background_power_spectrum(white_noise, PIXEL, mask_radius_px=4)
    assert white.power[2] < 1.2 * white.power[-3:].mean()
    assert json.loads((noisy / "simulation.json").read_text())["noise_spectrum"] is None


def test_contrast_spread_and_junk_with_their_labels(tmp_path):
    """``--contrast-sd`` scales each molecule image by its factor, ``--junk-fraction``
    replaces images by empty ice, aggregates or carbon edges; both are labelled in the STAR,
    and the SNR stays that of the molecule's images."""
    plain = simulate(_config(snr=math.inf, n_particles=120), tmp_path / "plain", progress=False)
    assert plain["junk"] is None
    assert not [
        c
        for c in read_star(tmp_path / "plain" / "particles.star").extra_columns
        if "cryohydra" in c
    ]
    summary = simulate(
        _config(snr=math.inf, n_particles=120, contrast_sd=0.3, junk_fraction=0.3),
        tmp_path / "mixed",
        progress=False,
    )
    star = read_star(tmp_path / "mixed" / "particles.star")
    contrast = star.extra_columns["cryohydraContrast"].astype(float)
    junk = star.extra_columns["cryohydraJunk"].astype(int)
    kinds = star.extra_columns["cryohydraJunkKind"].astype(str)
    assert 0.15 < junk.mean() < 0.45 and set(kinds[junk == 1]) == {"empty", "aggregate", "edge"}
    assert set(kinds[junk == 0]) == {"none"}
    assert summary["junk"] == {k: int((kinds == k).sum()) for k in ("empty", "aggregate", "edge")}
    base, mixed = _stack(tmp_path / "plain"), _stack(tmp_path / "mixed")
    good = junk == 0
    # The molecule's images are the plain ones times their contrast factor.
    ratio = (mixed[good] * base[good]).sum(axis=(1, 2)) / (base[good] ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(ratio, contrast[good], rtol=1e-4)
    assert contrast.std() > 0.15
    # Junk: empty ice is blank; the others carry the molecule's mean clean variance.
    assert np.abs(mixed[kinds == "empty"]).max() == 0
    reference = mixed[good].var(axis=(1, 2)).mean()
    for kind in ("aggregate", "edge"):
        variance = mixed[kinds == kind].var(axis=(1, 2))
        np.testing.assert_allclose(variance, reference, rtol=0.02)
        assert (
            np.abs(
                np.corrcoef(mixed[kinds == kind][0].ravel(), base[kinds == kind][0].ravel())[0, 1]
            )
            < 0.5
        )
    assert summary["clean_variance"] == pytest.approx(reference, rel=1e-3)


def test_ctf_on_a_canvas_loses_what_defocus_spreads_past_the_box(tmp_path):
    """With a strong defocus the CTF spreads a particle's signal over more than the box: on
    the box itself (canvas 1) it wraps around to the far side; on a canvas twice the box it is
    lost past the edge, as in a microscope, and four times changes little more."""
    stacks = {}
    for canvas in (1, 2, 4):
        config = _config(
            snr=math.inf,
            n_particles=6,
            shift_std_a=0.0,
            defocus_min_a=40_000.0,
            defocus_max_a=40_000.0,
            pixel_size_a=3.0,
            ctf_canvas=canvas,
            oversampling=1,  # the 4-box canvas would otherwise slice a 256^3 transform
        )
        simulate(config, tmp_path / str(canvas), progress=False)
        stacks[canvas] = _stack(tmp_path / str(canvas))

    def distance(a: int, b: int) -> float:
        return float(np.linalg.norm(stacks[a] - stacks[b]) / np.linalg.norm(stacks[b]))

    assert distance(1, 4) > 0.2  # measured 0.73
    assert distance(2, 4) < 0.5 * distance(1, 4)  # measured 0.07
