"""``reconstruct --whiten``: batches whitened by the noise spectrum of the images' background.

The set: the bundled structure, 32 px at 7 Å/px, 200 particles at SNR 0.1 with noise shaped
like the real EMPIAR-10076 particles' background (``simulate --noise-spectrum``).
Measured: the read images' background power in shell 2 is 2.4 times that of the last three
shells as stored, 1.09 times once whitened.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cryohydra.cli.main import main as cli
from cryohydra.io.batches import ParticleBatches
from cryohydra.io.particles import CTFParams, ParticleSet
from cryohydra.io.star import read_star
from cryohydra.metrics.reference import reference_fsc
from cryohydra.physics.noise import Whitened, background_power_spectrum, disc_window
from cryohydra.reconstruct.backproject import reconstruct_known_poses

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def coloured_set(simulated_set):
    real = DATA / "empiar10076_7" / "empiar_10076_7.star"
    return simulated_set(n_particles=200, snr=0.1, seed=9, noise_spectrum=str(real))


def _tilt(images) -> float:
    power = background_power_spectrum(images, 7.0, mask_radius_px=8).power
    return float(power[2] / power[-3:].mean())


def test_whitened_batches_have_white_noise_and_whitened_transfer(coloured_set):
    particles = read_star(coloured_set / "particles.star")
    plain = ParticleBatches(particles)
    whitened = ParticleBatches(particles, whiten=True)
    rows = np.arange(200)
    assert not plain.whitenings and _tilt(plain.read(rows)) > 1.8  # measured 2.4
    assert abs(_tilt(whitened.read(rows)) - 1) < 0.25  # measured 1.09
    batch = whitened.load(rows[:8])
    assert isinstance(whitened.transfer_function(rows[:8]), Whitened)
    ratio = batch.transfer / plain.load(rows[:8]).transfer
    gain = whitened.whitenings[1].gain(batch.frequencies_a)
    np.testing.assert_allclose(ratio[0].numpy(), gain.numpy(), rtol=1e-4)


def _in_two_optics_groups(first: ParticleSet, second: ParticleSet) -> ParticleSet:
    """The two sets as one, the second as optics group 2."""

    def both(name: str) -> np.ndarray:
        return np.concatenate([getattr(first, name), getattr(second, name)])

    arrays = first.ctf.as_dict()
    ctf = CTFParams(**{k: np.concatenate([v, second.ctf.as_dict()[k]]) for k, v in arrays.items()})
    groups = np.repeat([1, 2], [len(first), len(second)])
    return replace(
        first,
        image_paths=both("image_paths"),
        image_indices=both("image_indices"),
        pixel_size_a=both("pixel_size_a"),
        ctf=ctf,
        rotations=both("rotations"),
        shifts_a=both("shifts_a"),
        optics_group=groups,
        image_names=None,
        extra_columns={},
        _stacks={},
    )


def test_each_optics_group_is_whitened_by_its_own_background(coloured_set, simulated_set):
    coloured = read_star(coloured_set / "particles.star")
    white = read_star(simulated_set(n_particles=200, snr=0.1, seed=10) / "particles.star")
    mixed = _in_two_optics_groups(coloured, white)
    pooled = ParticleBatches(replace(mixed, optics_group=np.ones(400, np.int64)), whiten=True)
    grouped = ParticleBatches(mixed, whiten=True)
    first, second = np.arange(200), np.arange(200, 400)
    # One spectrum for both leaves the coloured group tilted and tilts the white one the
    # other way (measured 1.60 and 0.67); one per group makes both white (1.09 and 1.00).
    assert _tilt(pooled.read(first)) > 1.3 and _tilt(pooled.read(second)) < 0.8
    for rows in (first, second):
        assert abs(_tilt(grouped.read(rows)) - 1) < 0.2
    # A batch across the groups, and one of the second group alone: each image's transfer
    # carries its own group's gain.
    k = grouped.frequencies_a
    # No rows at all (one parity of a one-image batch in the search's backprojection).
    assert grouped.transfer_function(np.array([], dtype=np.int64))(k).shape == (0, *k.shape[:-1])
    for rows, groups in (([0, 399], (1, 2)), ([399, 398], (2, 2))):
        transfer = grouped.transfer_function(np.array(rows))
        plain = ParticleBatches(mixed).transfer_function(np.array(rows))
        ratio = transfer(k) / plain(k)
        for i, group in enumerate(groups):
            np.testing.assert_allclose(
                ratio[i].numpy(), grouped.whitenings[group].gain(k).numpy(), rtol=1e-4
            )


def test_a_background_masked_to_zero_gets_no_colour_verdict(coloured_set, monkeypatch):
    """Pre-masked particles (nothing outside the disc) have no noise spectrum to judge: the
    advisory check says nothing rather than failing the run."""
    data = ParticleBatches(read_star(coloured_set / "particles.star"))
    inside = 1 - disc_window(32, 8.0)
    read = data.read
    monkeypatch.setattr(data, "read", lambda rows: read(rows) * inside.float())
    assert data.colour_warning() is None


def test_every_group_is_whitened_to_one_noise_level(coloured_set, simulated_set):
    """Groups of one noise shape at SNR 0.1 and 0.01 (200 images each, and 40 of the second,
    too few for a shape of their own): all whiten to one variance, the groups' mean weighted
    by their sizes, and their whitened backgrounds have one level."""
    real = DATA / "empiar10076_7" / "empiar_10076_7.star"
    quiet = read_star(coloured_set / "particles.star")
    loud = read_star(
        simulated_set(n_particles=200, snr=0.01, seed=9, noise_spectrum=str(real))
        / "particles.star"
    )
    for second in (loud, loud.subset(np.arange(40))):
        mixed = _in_two_optics_groups(quiet, second)
        data = ParticleBatches(mixed, whiten=True)
        first, other = np.arange(200), np.arange(200, len(mixed))
        one, two = data.whitenings[1], data.whitenings[2]
        expected = (200 * one.own_mean_power + len(other) * two.own_mean_power) / len(mixed)
        assert one.mean_power == two.mean_power == pytest.approx(expected)
        assert two.own_mean_power > 5 * one.own_mean_power  # the second is the noisier
        levels = [_background_level(data.read(rows)) for rows in (first, other)]
        assert levels[1] == pytest.approx(levels[0], rel=0.15)


def _background_level(images) -> float:
    return float(background_power_spectrum(images, 7.0, mask_radius_px=8).power[1:].mean())


def test_reconstruct_whiten_runs_and_records_it(coloured_set, tmp_path, capsys):
    args = ["reconstruct", str(coloured_set / "particles.star"), "--quiet", "--epochs", "1"]
    warned = {}
    for whiten in (True, False):
        out = tmp_path / f"whiten_{whiten}"
        assert cli(args + ["-o", str(out)] + ["--whiten"] * whiten) == 0
        assert json.loads((out / "cryohydra-run.json").read_text())["config"]["whiten"] is whiten
        assert (out / "map.mrc").exists()
        summary = json.loads((out / "summary.json").read_text())
        warned[whiten] = "coloured_noise" in {w["code"] for w in summary["warnings"]}
    assert warned == {True: False, False: True}  # the plain loss on coloured noise is told
    assert "the noise looks coloured" in capsys.readouterr().out


def test_a_shard_reads_its_images_with_the_whole_sets_statistics(coloured_set):
    """A torchrun rank's shard (``ParticleBatches.shard``) keeps the image scale and noise
    spectra of the whole set: its images are the whole set's rows, bit for bit."""
    particles = read_star(coloured_set / "particles.star")
    whole = ParticleBatches(particles, whiten=True)
    rows = np.arange(1, 200, 2)
    shard = whole.shard(rows)
    assert len(shard) == 100 and shard.scale == whole.scale
    np.testing.assert_array_equal(shard.read(np.arange(10)).numpy(), whole.read(rows[:10]).numpy())
    k = whole.frequencies_a
    np.testing.assert_array_equal(
        shard.transfer_function(np.arange(3))(k).numpy(),
        whole.transfer_function(rows[:3])(k).numpy(),
    )
    # Estimated from the shard alone, both differ (what each rank used to do).
    alone = ParticleBatches(particles.subset(rows), whiten=True)
    assert alone.scale != whole.scale
    assert not np.allclose(alone.read(np.arange(10)).numpy(), whole.read(rows[:10]).numpy())


def test_coloured_noise_is_reported_unless_whitened(coloured_set, simulated_set):
    """``NoiseSpectrum.tilt`` of the background above 1.4 without ``--whiten`` is reported
    (measured: 1.78 on the coloured set, 0.98 on the white one, 1.76 on the real particles)."""
    coloured = read_star(coloured_set / "particles.star")
    white = read_star(simulated_set(n_particles=200, snr=0.1, seed=10) / "particles.star")
    real = read_star(DATA / "empiar10076_7" / "empiar_10076_7.star")
    for particles in (coloured, real):
        message = ParticleBatches(particles).colour_warning()
        assert message is not None and "the noise looks coloured" in message
    assert ParticleBatches(white).colour_warning() is None


def test_known_pose_maps_weigh_a_noisier_group_less_when_whitened(
    coloured_set, simulated_set, tmp_path
):
    """``backproject --whiten``: each optics group whitened to one noise variance, so a group
    20 times noisier weighs in less. Measured (200 + 200 particles, both with the real
    particles' noise shape, group 1 at SNR 0.005, group 2 at SNR 0.1; FSC 0.5 vs the truth):
    26.4 Å plain, 15.0 Å whitened; each group whitened to its own variance (the shape alone,
    which is the same in both), 26.2 Å."""
    real = DATA / "empiar10076_7" / "empiar_10076_7.star"
    noisy = simulated_set(n_particles=200, snr=0.005, seed=9, noise_spectrum=str(real))
    clean = simulated_set(n_particles=200, snr=0.1, seed=10, noise_spectrum=str(real))
    mixed = _in_two_optics_groups(
        read_star(noisy / "particles.star"), read_star(clean / "particles.star")
    )
    resolution = {}
    for whiten in (False, True):
        result = reconstruct_known_poses(mixed, progress=False, whiten=whiten)
        truth = noisy / "ground_truth.mrc"
        resolution[whiten] = reference_fsc(result.full.cpu(), truth, result.pixel_size_a)
    assert resolution[True] < 0.75 * resolution[False]  # measured 0.57
    out = tmp_path / "bp"
    args = ["backproject", str(coloured_set / "particles.star"), "-o", str(out), "--quiet"]
    assert cli(args + ["--whiten"]) == 0
    assert json.loads((out / "backproject.json").read_text())["config"]["whiten"] is True
