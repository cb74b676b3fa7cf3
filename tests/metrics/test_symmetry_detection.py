"""Detecting a map's point group in any orientation, and imposing one on a map.

Test objects: Gaussian blobs placed at ``Q g p_j`` for every element ``g`` of a group (an
exactly symmetric map, its axes turned by a random ``Q``), the beta-galactosidase model 5A1A
(D2), and, in the slow tier, HSP90 (a C2 homodimer) and 6UO9 (a heterodimer with a
pseudo-two-fold: it must say C1).

Measured (``detect_symmetry`` defaults, 64 px maps): 6UO9 at 3.5 Å/px C2 0.771 (C1 reported),
HSP90 at 2.5 Å/px C2 0.921, 5A1A at 3.5 Å/px D2 0.998, blob maps 0.99 for their own group;
the threshold 0.85 sits between the pseudo- and the true two-fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cryohydra.cli.main import main as cli
from cryohydra.data import default_structure
from cryohydra.geometry.rotations import random_rotations
from cryohydra.geometry.symmetry import point_group
from cryohydra.io.mrc import write_map
from cryohydra.metrics.map_alignment import rotate_map, shift_map
from cryohydra.metrics.symmetry import detect_symmetry, standard_orientation
from cryohydra.simulate import load_structure

DATA = Path(__file__).resolve().parents[1] / "data"
BENCHMARK_DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"


def blob_map(symbol: str, box: int, seed: int = 0, turn: np.ndarray | None = None) -> torch.Tensor:
    """Gaussian blobs (1.5 px) at ``Q g p_j`` for every ``g`` of the group, a few ``p_j``."""
    rng = np.random.default_rng(seed)
    n = {"I": 1, "O": 1, "T": 2, "C1": 8}.get(symbol, 3)
    points = rng.normal(size=(n, 3))
    radii = rng.uniform(0.5, 1.0, size=(n, 1)) * box * 0.35
    points *= radii / np.linalg.norm(points, axis=1, keepdims=True)
    group = point_group(symbol).numpy()
    centres = np.einsum("gij,nj->gni", group, points).reshape(-1, 3)
    if turn is not None:
        centres = centres @ turn.T
    k = np.arange(box) - box // 2
    z, y, x = np.meshgrid(k, k, k, indexing="ij")
    grid = np.stack([x, y, z], axis=-1)
    volume = np.zeros((box,) * 3)
    for centre in centres:
        volume += np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 1.5**2))
    return torch.tensor(volume, dtype=torch.float32)


TURN = random_rotations(1, torch.Generator().manual_seed(3))[0].numpy()


def _same_operators(found: np.ndarray, expected: np.ndarray, tolerance: float) -> bool:
    distance = np.abs(found[:, None] - expected[None]).max(axis=(-1, -2))
    return bool((distance.min(axis=1) < tolerance).all() and len(found) == len(expected))


FAST_CANDIDATES = {"C1": ("C2", "C3", "D2"), "D5": ("C5", "D5", "C8", "D8"), "I": ("D5", "O", "I")}


@pytest.mark.parametrize("symbol", list(FAST_CANDIDATES))
def test_a_turned_symmetric_map_gives_its_group_and_axes(symbol):
    volume = blob_map(symbol, 48 if symbol == "I" else 32, turn=TURN)
    detection = detect_symmetry(volume, 3.0, candidates=FAST_CANDIDATES[symbol])
    assert detection.symbol == symbol, detection.summary()
    if symbol != "C1":
        best = detection.best
        assert best is not None and best.score > 0.95
        q = best.orientation
        group = point_group(symbol).numpy()
        # The group found in the map's frame is the true one, Q_true G Q_true^T.
        assert _same_operators(q @ group @ q.T, TURN @ group @ TURN.T, 0.05)


def _gaussian(box: int, centre: tuple[int, int, int], sigma_px: float) -> torch.Tensor:
    k = torch.arange(box) - box // 2
    z, y, x = torch.meshgrid(k, k, k, indexing="ij")
    cx, cy, cz = centre
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma_px**2))


@pytest.mark.parametrize(
    ("centre", "sigma_px", "weight"),
    [
        # Density in a corner, outside the scoring mask (a box edge): 30 % of the molecule's
        # mass moved the plain centre of mass 5 px (measured: C1 reported, C3 0.32).
        ((13, 13, 13), 2.0, 0.3),
        # A broad haze inside the mask (a skirt of noise): the centre of mass moves 2.2 px and
        # C3 scores 0.773 about it, 0.970 about the refined centre (measured).
        ((6, -5, 4), 5.0, 0.4),
    ],
    ids=["corner", "haze"],
)
def test_density_off_the_molecule_does_not_hide_its_group(centre, sigma_px, weight):
    volume = blob_map("C3", 32, turn=TURN)
    extra = _gaussian(32, centre, sigma_px)
    volume = volume + weight * volume.sum() / extra.sum() * extra
    detection = detect_symmetry(volume, 3.0, candidates=("C2", "C3", "D3"))
    assert detection.symbol == "C3", detection.summary()
    assert detection.best is not None and detection.best.score > 0.9  # measured 0.970-0.999


def _self_correlations(volume: torch.Tensor, symbol: str) -> np.ndarray:
    turned = rotate_map(volume, point_group(symbol)[1:], oversampling=2)
    flat = turned.reshape(len(turned), -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    ref = volume.reshape(-1).double() - volume.double().mean()
    return (flat @ ref / (flat.norm(dim=1) * ref.norm())).numpy()


def test_standard_orientation_brings_a_turned_off_centre_map_onto_relions_axes():
    # D5 blobs turned by a random Q and moved off the box centre: the group holds about
    # the moved centre and turned axes, not about RELION's axes through index L // 2.
    moved = shift_map(blob_map("D5", 32, turn=TURN), torch.tensor([6.0, -4.5, 3.0]), 3.0)
    assert _self_correlations(moved, "D5").max() < 0.5  # measured 0.23-0.29
    found = standard_orientation(moved, 3.0, "D5")
    assert found.correlation > 0.95  # measured 0.998
    # Measured 0.9992-0.9999 over the 9 operators.
    assert _self_correlations(found.aligned_map, "D5").min() > 0.98
    c1 = standard_orientation(moved, 3.0, "C1")
    assert torch.equal(c1.rotation, torch.eye(3, dtype=torch.float64))


@pytest.mark.slow
def test_beta_galactosidase_is_d2():
    volume, pixel_a = load_structure(DATA / "models" / "5a1a.cif.gz", 48, 4.5)
    detection = detect_symmetry(volume, pixel_a, candidates=("C2", "C4", "D2", "D4", "T"))
    assert detection.symbol == "D2", detection.summary()
    assert detection.best.score > 0.95
    assert detection.best.score > 0.95


def test_symmetry_command_writes_every_score(tmp_path, capsys):
    path = tmp_path / "map.mrc"
    write_map(path, blob_map("D5", 32, turn=TURN).numpy(), 3.0)
    out = tmp_path / "sym"
    assert cli(["symmetry", str(path), "-o", str(out), "--candidates", "C5", "D5", "C2"]) == 0
    assert "symmetry: D5" in capsys.readouterr().out
    result = json.loads((out / "symmetry.json").read_text())
    assert result["symbol"] == "D5"
    assert {s["symbol"] for s in result["scores"]} == {"C5", "D5", "C2"}
    assert cli(["symmetry", str(path), "-o", str(out)]) == 2  # exists: needs --force


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "pixel_a", "expected"),
    [
        (default_structure(), 3.5, "C1"),
        (BENCHMARK_DATA / "hsp90_hsp82_dimer.pdb.gz", 2.5, "C2"),
    ],
    ids=["6uo9", "hsp90"],
)
def test_a_pseudo_two_fold_is_not_a_symmetry(path, pixel_a, expected):
    volume, _ = load_structure(path, 64, pixel_a)
    detection = detect_symmetry(volume, pixel_a)
    assert detection.symbol == expected, detection.summary()


@pytest.mark.slow
@pytest.mark.parametrize("symbol", ["C3", "C7", "D2", "T", "O"])
def test_more_turned_groups(symbol):
    detection = detect_symmetry(blob_map(symbol, 64, seed=1, turn=TURN), 3.0)
    assert detection.symbol == symbol, detection.summary()
