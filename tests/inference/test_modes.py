"""The training modes: each one's candidates match what it declares."""

import pytest
import torch

from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.modes import MODES, CryoAI, get_mode
from cryohydra.inference.objective import rotated_half_turn
from cryohydra.models.encoder import PoseEncoder

BOX = 16


@pytest.mark.parametrize("name", list(MODES))
def test_candidates_have_the_declared_shape(name):
    config = ReconstructConfig(mode=name, n_heads=3)
    torch.manual_seed(0)
    encoder = PoseEncoder(BOX, 4.0, config.heads)
    images = torch.randn(5, BOX, BOX)
    rotations, shifts = config.training_mode.candidates(encoder, images)
    assert rotations.shape == (5, config.n_candidates, 3, 3)
    assert shifts.shape == (5, config.n_candidates, 2)
    assert config.amortized_only == (not get_mode(name).switches)


def test_cryoai_second_candidate_is_the_half_turned_image_mapped_back():
    torch.manual_seed(1)
    encoder = PoseEncoder(BOX, 4.0, 1).eval()
    images = torch.randn(4, BOX, BOX)
    rotations, shifts = CryoAI().candidates(encoder, images)
    turned_rot, turned_shift = encoder(rotated_half_turn(images))
    half_turn = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))
    assert torch.allclose(rotations[:, 1], half_turn @ turned_rot[:, 0], atol=1e-6)
    assert torch.allclose(shifts[:, 1], -turned_shift[:, 0])
    assert torch.allclose(rotations[:, 0], encoder(images)[0][:, 0], atol=1e-6)


def test_unknown_mode_names_the_choices():
    with pytest.raises(ValueError, match="semi-amortized, amortized, cryoai"):
        ReconstructConfig(mode="other")
