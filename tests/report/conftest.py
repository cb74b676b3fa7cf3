"""A tiny finished run (32 px, 160 particles, 3 epochs) shared by the report and analysis tests."""

import pytest

from cryohydra.data import default_structure
from cryohydra.inference.config import ReconstructConfig
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JobOptions, run_job
from cryohydra.simulate import SimulationConfig, simulate

N = 160
CONFIG = ReconstructConfig(epochs=3, switch=1, n_heads=2, batch_size=32, seed=0)


@pytest.fixture(scope="session")
def tiny_config() -> ReconstructConfig:
    return CONFIG


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report_data")
    config = SimulationConfig(
        structure=str(default_structure()),
        box_size=32,
        pixel_size_a=7.0,
        n_particles=N,
        snr=10.0,
        shift_std_a=2.0,
        seed=1,
    )
    simulate(config, folder, progress=False)
    return folder


@pytest.fixture(scope="session")
def finished(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_run") / "run"
    options = JobOptions(out, progress=False, reference_map=dataset / "ground_truth.mrc")
    run_job(read_star(dataset / "particles.star"), CONFIG, options)
    return out
