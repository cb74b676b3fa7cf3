"""Ab-initio runs end to end on a tiny simulated set (32 px, 256 particles)."""

import json

import numpy as np
import pytest
import torch
from tqdm import tqdm

from cryohydra.cli.main import main as cli
from cryohydra.geometry.rotations import exp_map
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.train import AMORTIZED, AUTO_DECODING, AbInitio
from cryohydra.io.history import read_history
from cryohydra.io.mrc import read_map
from cryohydra.io.run_folder import SWITCH_FILE
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JobOptions, run_job
from cryohydra.metrics.fsc import masked_fsc
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.models.pose_table import PoseTable

N = 256


@pytest.fixture(scope="module")
def dataset(simulated_set):
    # the session's factory: made once, shared with the other tests that ask the same
    return simulated_set(shift_std_a=3.0)


def _small(**overrides) -> ReconstructConfig:
    # 10 search rounds (the default is up to 30): on this set the search does 16 rounds at
    # most otherwise, which doubled these runs' time; tests of the search set their own.
    values = dict(epochs=2, switch=1, n_heads=3, batch_size=32, seed=0, search_rounds=10)
    values.update(overrides)
    return ReconstructConfig(**values)


def test_auto_decoding_refines_perturbed_poses(dataset):
    particles = read_star(dataset / "particles.star")
    true_rot, true_shift = particles.require_poses()
    run = AbInitio(particles.with_poses(None, None), _small(epochs=4, pose_lr_shift_a=0.2))
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(N, 3, generator=g, dtype=torch.float64)
    w = axis / axis.norm(dim=1, keepdim=True) * np.deg2rad(15.0)
    start = (exp_map(w) @ torch.from_numpy(true_rot)).float()
    run.table = PoseTable.create(start, torch.from_numpy(true_shift).float(), 0.05, 0.2)
    run.encoder, run.encoder_optimizer, run.stage = None, None, AUTO_DECODING
    before = pose_errors(run.poses()[0], true_rot).median_rotation_error_deg
    run.fit(progress=False)
    after = pose_errors(run.poses()[0], true_rot).median_rotation_error_deg
    assert before == pytest.approx(15.0, abs=0.5)
    assert after < 0.6 * before


def test_switch_after_fixed_epoch_and_modes_without_switch(dataset):
    particles = read_star(dataset / "particles.star")
    run = AbInitio(particles, _small(epochs=2, switch=1))
    records = [run.run_epoch(tqdm(disable=True)) for _ in range(2)]
    assert run.switch_epoch == 1 and run.stage == AUTO_DECODING and run.encoder is None
    search = records[0]["pose_search"]  # the global search ran at the switch and is logged
    assert search["changed"][0] == 1.0 and 1 <= len(search["changed"]) <= run.config.search_rounds
    assert "pose_search" not in records[1] and "coarse" not in search
    assert search["resolution_a"] == run.loss_resolution_a(1)
    coarse_first = AbInitio(particles, _small(epochs=2, switch=1, search_coarse_resolution_a=35.0))
    search = coarse_first.run_epoch(tqdm(disable=True))["pose_search"]
    assert search["coarse"]["resolution_a"] == 35.0 and search["coarse"]["changed"][0] == 1.0
    assert search["resolution_a"] == coarse_first.loss_resolution_a(1) == 15.0
    plain = AbInitio(particles, _small(epochs=2, switch=1, search_rounds=0))
    assert "pose_search" not in plain.run_epoch(tqdm(disable=True)) and plain.stage == AUTO_DECODING
    for mode in ("amortized", "cryoai"):
        run = AbInitio(particles, _small(epochs=1, mode=mode))
        record = run.run_epoch(tqdm(disable=True))
        assert run.stage == AMORTIZED and run.encoder is not None
        assert len(record["head_usage"]) == (3 if mode == "amortized" else 2)
        rotations = torch.from_numpy(run.poses()[0])
        assert torch.allclose(torch.det(rotations), torch.ones(N, dtype=torch.float64), atol=1e-5)


def test_automatic_switch_follows_its_criterion(dataset):
    particles = read_star(dataset / "particles.star")
    eager = AbInitio(
        particles,
        _small(
            epochs=4,
            switch="auto",
            min_amortized_epochs=2,
            switch_head_change=1.0,
            switch_pose_change_deg=180.0,
        ),
    )
    eager.fit(progress=False)
    assert eager.switch_epoch == 2  # needs two epochs to measure a change
    never = AbInitio(
        particles,
        _small(epochs=4, switch="auto", switch_head_change=0.0, switch_pose_change_deg=0.0),
    )
    never.fit(progress=False)
    assert never.switch_epoch == 2  # the latest switch: half the epochs


def test_resolution_marches_after_the_switch_and_encoder_sees_a_cropped_box(dataset):
    particles = read_star(dataset / "particles.star")  # 32 px at 7 Å: Nyquist 14 Å
    config = _small(epochs=6, switch=2, start_resolution_a=28.0, march_epochs=2, encoder_box=16)
    run = AbInitio(particles, config)
    assert run.encoder_box == 16  # the heads' input size follows it: a mismatch would fail
    records = [run.run_epoch(tqdm(disable=True)) for _ in range(4)]
    limits = [r["loss_resolution_a"] for r in records]
    # 1/28 -> 1/14 linearly in frequency over two epochs after the switch at epoch 2.
    assert limits == pytest.approx([28.0, 28.0, 1 / ((1 / 28 + 1 / 14) / 2), 14.0])
    assert run.data.grid_at(28.0).n_points < run.data.grid_at(None).n_points
    amortized = AbInitio(particles, _small(epochs=6, mode="amortized", march_epochs=0))
    schedule = [amortized.loss_resolution_a(e) for e in range(1, 7)]
    assert schedule == [15.0] * 3 + [14.0] * 3  # default start 15 Å; no switch: from epoch 3


def test_symmetry_check_never_worsens_a_particle_and_is_logged(dataset):
    particles = read_star(dataset / "particles.star")
    # The search as measured (10 rounds; with the 30-round default this set's search ends
    # with 29 % of the particles at the pseudo-mate, which the check then moves).
    config = _small(epochs=4, switch=1, march_epochs=2, start_resolution_a=28.0, search_rounds=10)
    run = AbInitio(particles, config)
    records = [run.run_epoch(tqdm(disable=True)) for _ in range(3)]
    assert "symmetry_check" not in records[0]  # amortized
    assert "symmetry_check" not in records[1]  # first auto-decoding epoch: still marching...
    checked = records[2]["symmetry_check"]  # ...done: checked at the final resolution
    # Measured: the map's self-superposition is 6UO9's pseudo-two-fold (179.93 degrees,
    # correlation 0.79), and it moved none of the particles (0.0).
    assert checked["self_alignment"]["angle_deg"] > 175.0
    assert checked["self_alignment"]["correlation"] > 0.6
    assert checked["moved_to_mate"] < 0.05

    def errors():
        grid = run.loss_grid(3)
        batch = run.data.load(np.arange(N), grid)
        return run.candidate_losses(
            batch, run.table.rotations[:, None], run.table.shifts_a[:, None]
        )[:, 0]

    before = errors()
    run.symmetry_check(3)
    assert bool((errors() <= before + 1e-3 * before.abs()).all())


def _star_poses(path):
    particles = read_star(path)
    return particles.require_poses()


def test_resume_repeats_an_uninterrupted_run(dataset, tmp_path, monkeypatch):
    config = _small(epochs=3, switch=1)
    particles = read_star(dataset / "particles.star")
    run_job(particles, config, JobOptions(tmp_path / "straight", progress=False))

    calls = {"n": 0}
    original = AbInitio.run_epoch

    def interrupted(self, bar):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, bar)

    monkeypatch.setattr(AbInitio, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(
            read_star(dataset / "particles.star"),
            config,
            JobOptions(tmp_path / "resumed", progress=False),
        )
    monkeypatch.setattr(AbInitio, "run_epoch", original)
    assert len((tmp_path / "resumed" / "log.jsonl").read_text().splitlines()) == 2
    run_job(
        read_star(dataset / "particles.star"),
        config,
        JobOptions(tmp_path / "resumed", resume=True, progress=False),
    )
    straight = _star_poses(tmp_path / "straight" / "particles.star")
    resumed = _star_poses(tmp_path / "resumed" / "particles.star")
    np.testing.assert_allclose(resumed[0], straight[0], atol=1e-6)
    np.testing.assert_allclose(resumed[1], straight[1], atol=1e-5)
    epochs = [
        json.loads(line)["epoch"]
        for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3]
    # Every epoch's poses are kept, the last equal to the output, and the model at the switch.
    history = read_history(tmp_path / "resumed")
    assert [h.epoch for h in history] == [1, 2, 3]
    assert [h.stage for h in history] == [AMORTIZED, AUTO_DECODING, AUTO_DECODING]
    assert (history[0].winners >= 0).all() and (history[1].winners == -1).all()
    np.testing.assert_allclose(history[-1].rotations, straight[0], atol=1e-5)
    snapshot = torch.load(tmp_path / "resumed" / SWITCH_FILE)
    assert snapshot["epoch"] == 1 and snapshot["rotations"].shape == (N, 3, 3)
    assert set(snapshot["encoder"]) == set(AbInitio(particles, config).encoder.state_dict())


def test_cli_reconstruct_half_sets_outputs_and_refusals(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "reconstruct",
        str(dataset / "particles.star"),
        "-o",
        str(out),
        "--epochs",
        "2",
        "--switch",
        "1",
        "--heads",
        "2",
        "--batch-size",
        "32",
        "--search-rounds",
        "10",
        "--half-sets",
        "--quiet",
        "--reference-map",
        str(dataset / "ground_truth.mrc"),
    ]
    assert cli(args) == 0
    # Two epochs with a switch after the first: the last auto-decoding epoch still moves
    # most poses, and the command says so with what to try.
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert "poses_still_moving" in [w["code"] for w in summary["warnings"]]
    assert "WARNING: in the last epoch (2)" in printed and "Try: more epochs" in printed
    for name in (
        "map.mrc",
        "half_map_a.mrc",
        "half_map_b.mrc",
        "particles.star",
        "fsc.png",
        "fsc.csv",
        "summary.json",
        "pose_error.png",
        "half_a/checkpoint.pt",
        "half_b/log.jsonl",
        "half_a/model_volume.mrc",
    ):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gold_standard"] is True
    # The gold-standard FSC is that of two different half-maps, each from its own half's run.
    halves = [read_map(out / f"half_map_{h}.mrc")[0] for h in "ab"]
    assert not np.array_equal(halves[0], halves[1])
    curve = masked_fsc(halves[0], halves[1], summary["pixel_size_a"])
    assert curve.resolution_a(0.143) == pytest.approx(summary["half_map_resolution_a_0.143"])
    half_rows = [len(read_history(out / h)[-1].rotations) for h in ("half_a", "half_b")]
    assert sorted(half_rows) == [N // 2, N // 2]
    assert "resolution_vs_reference_a_0.5" in summary
    records = [json.loads(x) for x in (out / "half_b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert "pose_error" in records[0] and "model_fsc_vs_reference_a_0.5" in records[0]
    estimated = read_star(out / "particles.star")
    assert len(estimated) == N and estimated.has_poses
    # A finished run is not redone silently, and a user's folder is never used.
    assert cli(args) == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    assert cli([*args[:3], str(mine), *args[4:]]) == 2
    assert (mine / "notes.txt").read_text() == "precious"


def test_loader_workers_give_the_same_run(dataset):
    """Batches read ahead by DataLoader workers train exactly as batches read in turn."""
    particles = read_star(dataset / "particles.star")
    runs = []
    for workers in (0, 2):
        run = AbInitio(particles, _small(epochs=2, switch=1, search_rounds=1), workers=workers)
        run.fit(progress=False)
        runs.append(run)
    assert torch.equal(runs[0].table.rotations, runs[1].table.rotations)
    assert torch.equal(runs[0].volume.mantissa, runs[1].volume.mantissa)


def test_several_starts_continue_the_one_with_the_lowest_loss(dataset, tmp_path):
    particles = read_star(dataset / "particles.star")
    config = _small(epochs=3, switch=1, starts=3)
    summary = run_job(particles, config, JobOptions(tmp_path / "starts", progress=False))
    choice = json.loads((tmp_path / "starts" / "starts.json").read_text())
    starts = choice["starts"]
    assert [s["seed"] for s in starts] == [0, 1, 2]
    assert all(s["epoch"] == 2 and s["switch_epoch"] == 1 for s in starts)
    assert all(0 <= s["median_rotation_error_deg"] <= 180 for s in starts)  # truth in the input
    losses = [s["loss"] for s in starts]
    assert len(set(losses)) == 3  # the seeds made different starts
    assert choice["chosen_start"] == int(np.argmin(losses))
    assert summary["training"][0]["starts"] == choice
    for k in range(3):  # each start's log stays, its state goes
        folder = tmp_path / "starts" / "starts" / f"start_{k}"
        assert len((folder / "log.jsonl").read_text().splitlines()) == 2
        assert not (folder / "checkpoint.pt").exists()
    # The run is the chosen start carried on: the same as one start with its seed.
    seed = choice["chosen_seed"]
    single = _small(epochs=3, switch=1, seed=seed)
    run_job(particles, single, JobOptions(tmp_path / "single", progress=False))
    continued = _star_poses(tmp_path / "starts" / "particles.star")
    alone = _star_poses(tmp_path / "single" / "particles.star")
    np.testing.assert_allclose(continued[0], alone[0], atol=1e-6)
    np.testing.assert_allclose(continued[1], alone[1], atol=1e-5)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "starts" / "log.jsonl").open()]
    assert epochs == [1, 2, 3]
    with pytest.raises(ValueError, match="starts"):
        ReconstructConfig(mode="amortized", starts=2)


def test_progress_bar_is_labelled_and_shows_the_search(dataset, capsys):
    """The bar says which epoch and stage from its first line (once an unlabelled '0/N'), and
    the pose search at the switch shows its round and images instead of a frozen bar."""
    particles = read_star(dataset / "particles.star")
    AbInitio(particles, _small(epochs=2, switch=1, search_rounds=1)).fit(progress=True)
    err = capsys.readouterr().err
    first = err.replace("\r", "\n").strip().splitlines()[0]
    assert first.startswith("epoch 1/2 amortized")
    assert "pose search at" in err and "round 1/1" in err and "img" in err
