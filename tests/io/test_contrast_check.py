"""Dark particles read without ``--invert-contrast`` (or bright ones with it) are reported.

Measured (:func:`~cryohydra.physics.noise.centre_contrast`, the set below: 32 px, 7 Å/px,
256 particles at SNR 0.1): +0.20 (t 39) for bright particles, -0.21 (t -41) for dark ones;
the 7 real EMPIAR-10076 particles, which are dark, -0.043 (t -9.9). A warning needs t < -5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cryohydra.cli.main import main as cli
from cryohydra.io.batches import ParticleBatches
from cryohydra.io.star import read_star

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("sign", [1, -1])
def test_the_contrast_check_tells_dark_from_bright(simulated_set, sign):
    particles = read_star(simulated_set(snr=0.1, contrast_sign=sign) / "particles.star")
    assert ParticleBatches(particles, invert_contrast=sign < 0).contrast_warning() is None
    message = ParticleBatches(particles, invert_contrast=sign > 0).contrast_warning()
    assert message is not None and "look dark" in message
    assert ("without --invert-contrast" in message) == (sign > 0)


def test_real_dark_particles_are_reported():
    particles = read_star(DATA / "empiar10076_7" / "empiar_10076_7.star")
    assert "with --invert-contrast" in ParticleBatches(particles).contrast_warning()
    assert ParticleBatches(particles, invert_contrast=True).contrast_warning() is None


def test_a_run_on_dark_particles_warns_first(simulated_set, tmp_path, capsys):
    data = simulated_set(snr=0.1, contrast_sign=-1)
    out = tmp_path / "out"
    args = ["reconstruct", str(data / "particles.star"), "-o", str(out), "--quiet"]
    assert cli(args + ["--epochs", "1"]) == 0
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert warnings[0]["code"] == "contrast"
    assert "look dark" in capsys.readouterr().out
