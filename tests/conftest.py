"""Shared fixtures: the bundled structure and a tiny simulated dataset, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryohydra.data import default_structure
from cryohydra.physics.atoms import read_atomic_model

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def default_model():
    return read_atomic_model(default_structure())
