"""A tiny finished run (32 px, 160 particles, 3 epochs) shared by the report and analysis tests."""

import pytest

from cryohydra.inference.config import ReconstructConfig
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JobOptions, run_job

N = 160
CONFIG = ReconstructConfig(epochs=3, switch=1, n_heads=2, batch_size=32, seed=0, search_rounds=10)


@pytest.fixture(scope="session")
def tiny_config() -> ReconstructConfig:
    return CONFIG


@pytest.fixture(scope="session")
def dataset(simulated_set):
    # the session's factory: made once, shared with the other tests that ask the same
    return simulated_set(n_particles=N, shift_std_a=2.0, seed=1)


@pytest.fixture(scope="session")
def finished(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_run") / "run"
    options = JobOptions(out, progress=False, reference_map=dataset / "ground_truth.mrc")
    run_job(read_star(dataset / "particles.star"), CONFIG, options)
    return out
