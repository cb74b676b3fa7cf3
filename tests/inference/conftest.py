"""Fixtures of the inference tests."""

import pytest

from cryohydra.io.particles import concatenate
from cryohydra.io.star import read_star, write_star


@pytest.fixture(scope="session")
def mixture(simulated_set, test_data, tmp_path_factory):
    """A STAR file of two structures: the tests' 6UO9 set (3 A shifts) and the same simulation
    of beta-galactosidase (5A1A, D2), 32 px, 7 A/px, SNR 10, 256 particles each, one
    after the other (for ``--classes``)."""
    first = read_star(simulated_set(shift_std_a=3.0) / "particles.star")
    other = simulated_set(
        shift_std_a=3.0, structure=str(test_data / "models" / "5a1a.cif.gz"), seed=5
    )
    folder = tmp_path_factory.mktemp("mixture")
    star = folder / "particles.star"
    write_star(star, concatenate([first, read_star(other / "particles.star")], star))
    return star
