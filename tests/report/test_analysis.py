"""``cryohydra analyze``: the posterior, head specialisation and trajectories of a tiny run."""

import healpy
import numpy as np
import torch
from matplotlib.image import imread

from cryohydra.analysis.analyze import analyze
from cryohydra.analysis.model import load_amortized_model
from cryohydra.cli.main import main as cli
from cryohydra.geometry.rotations import random_rotations, viewing_direction
from cryohydra.io.mrc import read_map
from cryohydra.metrics.pose_error import (
    align_rotations,
    rotation_errors_under_alignment,
    true_mates_in_estimate_frame,
)


def test_analyses_write_their_figures_and_join_the_report(finished):
    made = analyze(finished, rows=[0, 5], nside=2, closeup_samples=9, closeup_psi=12)
    assert set(made) == {"posterior", "heads", "trajectories"}
    for path in made.values():
        image = imread(path)
        assert image.shape[0] > 200 and float(image[..., :3].std()) > 0.01, path
    assert cli(["analyze", str(finished), "--only", "heads", "--nside", "2"]) == 0
    assert "Analysis: head specialisation" in (finished / "report.html").read_text()
    assert cli(["analyze", str(finished), "--particles", "100000", "--nside", "2"]) == 2


def test_posterior_of_the_true_map_peaks_at_the_true_viewing_direction(finished, dataset):
    """With the volume replaced by the ground truth (same frame as the true poses), the loss
    over the sphere is lowest at each image's true viewing direction, to the grid's spacing."""
    model = load_amortized_model(finished)
    truth_map, _ = read_map(dataset / "ground_truth.mrc")
    model.run.volume.load_map(torch.from_numpy(np.ascontiguousarray(truth_map)).float())
    rotations, shifts = model.particles.require_poses()
    nside = 4  # pixels about 15 degrees apart
    misses = []
    for row in range(6):
        posterior = model.sphere_posterior(row, torch.from_numpy(shifts[row]).float(), nside)
        best = np.array(healpy.pix2vec(nside, int(np.argmin(posterior))))
        true = viewing_direction(torch.from_numpy(rotations[row])).numpy()
        misses.append(np.degrees(np.arccos(np.clip(best @ true, -1, 1))))
    assert np.median(misses) < 15.0, misses


def test_errors_under_a_given_alignment_and_true_poses_in_the_estimate_frame():
    g = torch.Generator().manual_seed(3)
    truth = random_rotations(50, generator=g)
    q = random_rotations(1, generator=g)[0]
    estimated = truth @ q.T  # the estimate's frame is rotated: R_est Q = T
    found, mirrored = align_rotations(estimated, truth)
    assert not mirrored
    errors = rotation_errors_under_alignment(estimated, truth, found, mirrored)
    assert errors.max() < 1e-4
    mates = true_mates_in_estimate_frame(truth, found, mirrored)
    assert mates.shape == (50, 1, 3, 3)
    assert torch.allclose(mates[:, 0], estimated, atol=1e-6)
    # Another pose under the same alignment is scored in that frame, not re-aligned.
    off = rotation_errors_under_alignment(
        estimated @ random_rotations(1, generator=g)[0], truth, found, mirrored
    )
    assert np.median(off) > 10.0
