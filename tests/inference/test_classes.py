"""Several classes (``--classes``): a mixture of two structures sorted apart with a map each,
resume, re-seeding of an empty class, the class maps' reconstruction, and what is refused.

The mixture (``conftest.py``): the tests' 6UO9 set and beta-galactosidase's, 256 particles
each, one after the other. Two ranks with torchrun: ``test_distributed.py``.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import roma
import torch
from tqdm import tqdm

from cryohydra.analysis.model import load_amortized_model
from cryohydra.cli.main import main as cli
from cryohydra.geometry.rotations import geodesic_distance
from cryohydra.geometry.symmetry import asymmetric_unit_mask, point_group
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.pose_search import class_projection_matching, known_pose_map
from cryohydra.inference.train import AbInitio
from cryohydra.io.batches import ParticleBatches
from cryohydra.io.errors import InputFileError
from cryohydra.io.history import read_history
from cryohydra.io.mrc import read_map
from cryohydra.io.particles import concatenate
from cryohydra.io.run_folder import RUN_FILE
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JobOptions, run_job
from cryohydra.metrics.map_alignment import rotate_map
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.models.volume import HartleyVolume

N = 256  # particles of each structure (conftest's mixture)


def _config(**overrides) -> ReconstructConfig:
    values = dict(epochs=3, switch=2, n_heads=3, batch_size=32, seed=0, search_rounds=10)
    values.update(classes=2, **overrides)
    return ReconstructConfig(**values)


def test_two_structures_are_sorted_apart_with_a_map_each(mixture, tmp_path):
    out = tmp_path / "run"
    # fmt: off
    cli(["reconstruct", str(mixture), "-o", str(out), "--classes", "2", "--epochs", "3",
         "--switch", "2", "--heads", "3", "--batch-size", "32", "--search-rounds", "10",
         "--quiet"])
    # fmt: on
    found = read_star(out / "particles.star").extra_columns["rlnClassNumber"]
    truth = np.repeat([1, 2], N)
    accuracy = max(np.mean(found == truth), np.mean(found == 3 - truth))
    assert accuracy >= 0.95  # measured 1.0
    summary = json.loads((out / "summary.json").read_text())
    classes = summary["classes"]
    assert [c["class"] for c in classes] == [1, 2]
    assert sum(c["particles"] for c in classes) == 2 * N
    for entry in classes:
        folder = out / f"class_{entry['class']}"
        for name in ("map.mrc", "half_map_a.mrc", "half_map_b.mrc", "fsc.json"):
            assert (folder / name).exists(), name
        assert (folder / "model_volume.mrc").exists()
    # each class's pose error is of its own particles, in the class's own frame
    estimated = read_star(out / "particles.star")
    truth_rotations = read_star(mixture).rotations
    for entry in classes:
        members = found == entry["class"]
        errors = pose_errors(estimated.rotations[members], truth_rotations[members])
        assert entry["median_rotation_error_deg"] == pytest.approx(errors.median_rotation_error_deg)
    sizes = [int(np.sum(found == k)) for k in (1, 2)]
    assert summary["top_level_class"] == int(np.argmax(sizes)) + 1
    top = out / f"class_{summary['top_level_class']}"
    assert np.array_equal(read_map(out / "map.mrc")[0], read_map(top / "map.mrc")[0])
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["class_sizes"] == sizes
    assert np.array_equal(read_history(out)[-1].classes + 1, found)  # the history's classes
    page = (out / "report.html").read_text()
    assert f"final poses, class {summary['top_level_class']}" in page  # one frame per panel
    for title in ("Classes", "Class 1", "Class 2", "Classes: FSC"):
        assert f"<h2>{title}</h2>" in page
    assert (out / "report_classes.png").exists() and (out / "report_class_2_map.png").exists()
    with pytest.raises(InputFileError, match="2 classes"):  # analyze: one map only, so far
        load_amortized_model(out)


def test_a_resumed_run_repeats_an_uninterrupted_one(mixture):
    # 64 particles of each structure: enough to resume, a quarter of the time
    particles = read_star(mixture).with_poses(None, None).subset(np.r_[0:64, N : N + 64])
    config = _config(epochs=3, switch=1, n_heads=2, search_rounds=3, search_nside=2)
    whole = AbInitio(particles, config)
    whole.fit(progress=False)
    part = AbInitio(particles, config)
    for _ in range(2):
        part.run_epoch(tqdm(disable=True))
    resumed = AbInitio(particles, config)
    resumed.load_state_dict(part.state_dict())
    resumed.fit(progress=False)
    assert torch.equal(resumed.classes, whole.classes)
    assert torch.equal(resumed.table.rotations, whole.table.rotations)
    for ours, theirs in zip(resumed.volumes, whole.volumes, strict=True):
        assert torch.equal(ours.mantissa, theirs.mantissa)
    # a finished run read back (e.g. to redo its outputs) has its classes and poses
    finished = AbInitio(particles, config)
    finished.load_state_dict(whole.state_dict())
    assert torch.equal(finished.classes, whole.classes)
    assert all(np.array_equal(a, b) for a, b in zip(finished.poses(), whole.poses(), strict=True))


def test_an_empty_class_is_reseeded_from_the_worst_fitting_half_of_the_largest(mixture):
    run = AbInitio(read_star(mixture).with_poses(None, None), _config())
    n, heads = 2 * N, run.config.heads
    run.classes[:] = 0
    run.fit_losses = torch.arange(n, dtype=torch.float32)  # the later rows fit worst
    run.table.rotations.view(n, 2, 3, 3)[:, 0] = torch.linalg.qr(torch.randn(n, 3, 3))[0]
    moving = run.fit_losses >= run.fit_losses.median()
    before = run.volumes[1].mantissa.clone()
    events = run.reseed_classes(1)
    assert events == [{"class": 2, "from": 1, "particles": int(moving.sum()), "epoch": 1}]
    assert torch.equal(run.classes == 1, moving)
    table = run.table.rotations.view(n, 2, 3, 3)
    assert torch.equal(table[moving, 1], table[moving, 0])  # their poses come along
    assert not torch.equal(run.volumes[1].mantissa, before)  # a map of their own
    w1 = run.encoder.heads.w1
    assert torch.equal(w1[heads : 2 * heads], w1[:heads])
    assert run.reseed_classes(1) == []  # no class is small now
    run.classes[:] = 0
    assert run.reseed_classes(run.config.epochs) == []  # nothing would train it after the last


def test_a_class_reseeded_under_an_imposed_group_is_rebuilt_with_it(mixture):
    particles = read_star(mixture).with_poses(None, None).subset(np.r_[0:64, N : N + 64])
    run = AbInitio(particles, _config(symmetry="C4"))
    for volume in run.volumes:  # as after the switch
        volume.impose(run.group)
    run.encoder = run.encoder_optimizer = None
    n = 128
    run.classes[:] = 0
    run.fit_losses = torch.arange(n, dtype=torch.float32)
    run.table.rotations.view(n, 2, 3, 3)[:, 0] = torch.linalg.qr(torch.randn(n, 3, 3))[0]
    moving = run.fit_losses >= run.fit_losses.median()
    assert run.reseed_classes(1)
    table = run.table.rotations.view(n, 2, 3, 3)[:, 1]
    shifts = run.table.shifts_a.view(n, 2, 2)[:, 1]
    resolution_a = run.loss_resolution_a(1)
    for group, same in ((run.group, True), (None, False)):
        made = known_pose_map(run.data, table, shifts, resolution_a, members=moving, symmetry=group)
        expected = HartleyVolume(run.data.working_box)
        with torch.no_grad():
            expected.exponent.copy_(run.volumes[1].exponent)
        expected.load_map(made)
        assert torch.allclose(expected.mantissa, run.volumes[1].mantissa, atol=1e-5) == same


def test_a_map_without_members_in_a_batch_stays_put(mixture):
    particles = read_star(mixture).with_poses(None, None).subset(np.r_[0:64, N : N + 64])
    run = AbInitio(particles, _config(epochs=3, switch=1, n_heads=2, search_rounds=2))
    for _ in range(2):  # amortized, the switch, then auto-decoding: both maps have moments
        run.run_epoch(tqdm(disable=True))
    assert run.volume_optimizer.state[run.volumes[1].mantissa]["exp_avg"].abs().max() > 0
    box = run.data.working_box
    run.volumes[1].load_map(torch.full((box, box, box), 1e3))  # explains no image
    before = [p.detach().clone() for p in run.volumes[1].parameters()]
    run.auto_decoding_epoch(3, tqdm(disable=True))
    assert run.class_sizes()[1] == 0
    for now, then in zip(run.volumes[1].parameters(), before, strict=True):
        assert torch.equal(now, then)  # Adam's old moments did not move it


def test_a_class_map_is_made_from_its_members_alone(mixture):
    particles = read_star(mixture)
    rotations, shifts = (torch.from_numpy(a).float() for a in particles.require_poses())
    members = torch.arange(2 * N) < N
    # batches of 64: the last four hold no member (an empty half-set batch once crashed)
    data = ParticleBatches(particles)
    ours = known_pose_map(data, rotations, shifts, 15.0, batch_size=64, members=members)
    alone = known_pose_map(
        ParticleBatches(particles.subset(np.arange(N))), rotations[:N], shifts[:N], 15.0
    )
    every = known_pose_map(ParticleBatches(particles), rotations, shifts, 15.0)

    def correlation(a, b):
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    assert correlation(ours, alone) > 0.999
    assert correlation(every, alone) < 0.99  # the other structure's particles weigh in


def test_classes_with_an_imposed_group_and_estimated_amplitudes(mixture, tmp_path):
    """Each class's map is turned onto the group's axes at the switch (a frame per class) and
    imposes it; each particle's amplitude is fitted against its own class's map, and their
    mean is 1 within each class."""
    particles = read_star(mixture).with_poses(None, None).subset(np.r_[0:64, N : N + 64])
    config = _config(
        epochs=2, switch=1, n_heads=2, search_rounds=2, symmetry="C4", amplitude_scale=True
    )
    out = tmp_path / "run"
    run_job(particles, config, JobOptions(out, progress=False))
    switched = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    frames = switched["pose_search"]["group_frame"]
    assert [frame["group"] for frame in frames] == ["C4", "C4"]
    found = read_star(out / "particles.star")
    assert bool(asymmetric_unit_mask(torch.from_numpy(found.rotations), point_group("C4")).all())
    scale = found.require_ctf().scale
    classes = found.extra_columns["rlnClassNumber"]
    for klass in (1, 2):  # each map holds its class's scale (one mean for all: 0.95, 1.06)
        assert abs(scale[classes == klass].mean() - 1.0) < 1e-3
        # measured 0.26 and 0.26; fitted against class 1's map alone, class 2's was 0.52
        assert 0.05 < scale[classes == klass].std() < 0.4
    quarter = point_group("C4")[1]
    inner = (slice(1, None),) * 3
    for klass in (1, 2):
        volume = torch.from_numpy(np.asarray(read_map(out / f"class_{klass}" / "map.mrc")[0]))
        turned = rotate_map(volume, quarter)
        assert float((turned - volume)[inner].norm() / volume[inner].norm()) < 1e-5


def test_each_class_is_turned_onto_the_group_axes_with_its_own_poses(mixture):
    particles = read_star(mixture)
    rotations, shifts = (torch.from_numpy(a).float() for a in particles.require_poses())
    run = AbInitio(particles.with_poses(None, None), _config(symmetry="C4"))
    turn = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.9, 0.4]))
    in_frame = torch.stack([rotations, rotations @ turn], dim=1)  # class 1's map turned
    for klass, volume in enumerate(run.volumes):  # each class a structure, in its own frame
        members = (torch.arange(2 * N) >= N) == bool(klass)
        own = known_pose_map(run.data, in_frame[:, klass], shifts, 15.0, members=members)
        volume.load_map(own)
    table = in_frame.reshape(-1, 3, 3)
    records, moved, _ = run.into_group_frame(1, table, shifts.repeat_interleave(2, dim=0))
    turns = [record["turned_deg"] for record in records]
    assert abs(turns[0] - turns[1]) > 10  # two frames: measured 13.9 and 50.8 degrees
    before, after = table.view(-1, 2, 3, 3), moved.view(-1, 2, 3, 3)
    for klass, turn in enumerate(turns):  # every pose in a class moved by its class's turn
        angles = torch.rad2deg(geodesic_distance(after[:, klass], before[:, klass]))
        assert torch.allclose(angles, torch.full_like(angles, turn), atol=0.05)
    assert all(volume.operators is not None for volume in run.volumes)


def test_the_class_search_reassigns_and_rebuilds_every_round(mixture):
    particles = read_star(mixture)
    rotations, shifts = (torch.from_numpy(a).float() for a in particles.require_poses())
    data = ParticleBatches(particles.with_poses(None, None))
    truth = torch.arange(2 * N) >= N  # class 1: beta-galactosidase
    start = truth ^ (torch.rand(2 * N, generator=torch.Generator().manual_seed(0)) < 0.48)
    turn = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.9, 0.4]))
    in_frame = torch.stack([rotations, rotations @ turn], dim=1)  # class 1's map turned
    volumes = [HartleyVolume(data.working_box) for _ in range(2)]
    for klass, volume in enumerate(volumes):  # maps of 48 % the other structure
        members = start == bool(klass)
        volume.load_map(known_pose_map(data, in_frame[:, klass], shifts, 15.0, members=members))
    pure = [
        known_pose_map(data, in_frame[:, k], shifts, 15.0, members=truth == bool(k)) for k in (0, 1)
    ]
    found = class_projection_matching(
        volumes,
        data,
        in_frame.clone(),
        shifts[:, None].expand(-1, 2, -1).clone(),
        start.long(),
        resolution_a=15.0,
        nside=1,
        rounds=3,
        converged=0.0,
        candidates=in_frame[:, :, None],  # the true pose in each map's frame among the options
    )
    assert found.rotations.shape == (2 * N, 2, 3, 3) and found.errors.shape == (2 * N, 2)
    # one reassignment leaves 11.5 % wrong (measured: 0.885 right after the first round); the
    # maps rebuilt from it sort the rest in the second
    assert 0.3 < found.class_changed[0] < 0.45  # measured 0.377
    assert found.class_changed[1] > 0.06  # measured 0.115
    assert float((found.classes == truth.long()).double().mean()) > 0.99  # measured 1.0
    for volume, own in zip(volumes, pure, strict=True):  # rebuilt from their new members
        correlation = torch.corrcoef(torch.stack([volume.to_map().flatten(), own.flatten()]))
        assert float(correlation[0, 1]) > 0.99


def test_the_class_search_pools_the_pose_change_over_the_classes(mixture):
    # 32 of one class's 256 images start far from their pose and find it (a candidate): 32 of
    # all 512 moved, not 32 of the class's 256, so that a small class cannot hold the search
    particles = read_star(mixture)
    rotations, shifts = (torch.from_numpy(a).float() for a in particles.require_poses())
    data = ParticleBatches(particles.with_poses(None, None))
    truth = (torch.arange(2 * N) >= N).long()
    volumes = [HartleyVolume(data.working_box) for _ in range(2)]
    for klass, volume in enumerate(volumes):
        volume.load_map(known_pose_map(data, rotations, shifts, 15.0, members=truth == klass))
    both = rotations[:, None].expand(-1, 2, -1, -1)
    start = both.clone()
    start[N : N + 32, 1] = roma.random_rotmat(32, generator=torch.Generator().manual_seed(1))
    found = class_projection_matching(
        volumes,
        data,
        start,
        shifts[:, None].expand(-1, 2, -1).clone(),
        truth,
        resolution_a=15.0,
        nside=1,
        rounds=1,
        converged=0.0,
        candidates=both[:, :, None],
    )
    assert found.class_changed == [0.0]
    assert found.changed[0] == pytest.approx(32 / (2 * N), abs=2 / (2 * N))  # measured 32


def test_what_several_classes_do_not_do_yet(mixture, tmp_path):
    with pytest.raises(ValueError, match="--classes 2"):
        _config(mode="amortized")
    with pytest.raises(ValueError, match="classes must be"):
        ReconstructConfig(classes=0)
    particles = read_star(mixture)
    with pytest.raises(ValueError, match="--half-sets"):
        run_job(particles, _config(), JobOptions(tmp_path / "run", half_sets=True))
    assert not (tmp_path / "run" / RUN_FILE).exists()  # refused before the folder is claimed


def test_sets_are_joined_only_when_their_images_agree(mixture):
    particles = read_star(mixture)
    first, second = particles.subset(np.arange(N)), particles.subset(np.arange(N, 2 * N))
    joined = concatenate([first, second], mixture)
    assert np.array_equal(joined.image_paths, particles.image_paths)
    assert np.array_equal(joined.rotations, particles.rotations)
    with pytest.raises(InputFileError, match="px images"):
        concatenate([first, replace(second, box_size=64)], mixture)
    with pytest.raises(InputFileError, match="only one has poses"):
        concatenate([first, second.with_poses(None, None)], mixture)
