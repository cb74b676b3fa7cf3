"""``cryohydra reconstruct``'s options land in the configuration's fields."""

import argparse

from cryohydra.cli.common import config_from_args
from cryohydra.cli.reconstruct import add_arguments
from cryohydra.inference.config import ReconstructConfig


def _config(*options: str) -> ReconstructConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(ReconstructConfig, parser.parse_args(["p.star", "-o", "out", *options]))


def test_defaults_are_the_configuration_defaults():
    assert _config() == ReconstructConfig()


def test_renamed_and_negated_options():
    config = _config(
        "--heads", "3", "--downsample", "32", "--no-shifts", "--no-symmetry-check",
        "--pose-lr", "0.1", "--pose-lr-shift", "0.3", "--max-resolution", "8",
        "--start-resolution", "20", "--search-coarse-resolution", "35", "--encoder-box", "0",
        "--switch", "5", "--starts", "2", "--seed", "4", "--invert-contrast",
    )  # fmt: skip
    assert config.n_heads == 3 and config.working_box == 32
    assert not config.predict_shifts and not config.symmetry_check
    assert (config.pose_lr_rad, config.pose_lr_shift_a) == (0.1, 0.3)
    assert (config.max_resolution_a, config.start_resolution_a) == (8.0, 20.0)
    assert config.search_coarse_resolution_a == 35.0 and config.encoder_box is None
    assert (config.switch, config.starts, config.seed) == (5, 2, 4)
    assert config.invert_contrast
    assert _config("--search-coarse-resolution", "0").search_coarse_resolution_a is None
