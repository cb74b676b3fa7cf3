"""Shared fixtures: the bundled structure and a tiny simulated dataset, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryohydra.data import default_structure
from cryohydra.io.structure import read_atomic_model

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def default_model():
    return read_atomic_model(default_structure())


@pytest.fixture(scope="session")
def simulated_set(tmp_path_factory):
    """``simulated_set(**overrides)`` -> folder of a small simulated set of the bundled
    structure (32 px, 7 Å/px, 256 particles, SNR 10, no shifts by default), made once per
    distinct settings and session."""
    from cryohydra.simulate import SimulationConfig, simulate

    made: dict[tuple, Path] = {}

    def make(**overrides) -> Path:
        values = dict(
            structure=str(default_structure()),
            box_size=32,
            pixel_size_a=7.0,
            n_particles=256,
            snr=10.0,
            seed=4,
        )
        values.update(overrides)
        key = tuple(sorted(values.items()))
        if key not in made:
            folder = tmp_path_factory.mktemp("simulated")
            simulate(SimulationConfig(**values), folder, progress=False)
            made[key] = folder
        return made[key]

    return make
