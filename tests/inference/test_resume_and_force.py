"""``--resume`` continues only the same run on the same particles, and says what differs;
``--force`` clears the previous run's files and keeps the user's; Ctrl-C says how to go on;
the run records absolute input paths, so its folder can be read from anywhere."""

from __future__ import annotations

import json

import pytest

from cryohydra.cli.main import main as cli
from cryohydra.inference.train import AbInitio
from cryohydra.io.history import read_history
from cryohydra.io.run_folder import HISTORY_DIR, RUN_FILE, SWITCH_FILE

SMALL = ["--epochs", "2", "--switch", "1", "--heads", "3", "--batch-size", "32", "--quiet"]
SMALL += ["--search-rounds", "10"]  # not up to 30: these tests are not about the search


@pytest.fixture(scope="module")
def sets(simulated_set):
    """Two sets of the same size and image names, simulated with different seeds."""
    return simulated_set(n_particles=96, seed=71), simulated_set(n_particles=96, seed=72)


def _run(star, out, *extra) -> int:
    return cli(["reconstruct", str(star), "-o", str(out), *SMALL, *extra])


def test_resume_refuses_other_particles_and_names_changed_settings(sets, tmp_path, capsys):
    first, second = (s / "particles.star" for s in sets)
    out = tmp_path / "run"
    assert _run(first, out) == 0
    capsys.readouterr()
    assert _run(second, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "other particles" in err and "other images" in err and str(out) in err
    assert _run(first, out, "--resume", "--seed", "5") == 2
    assert "seed: 0 -> 5" in capsys.readouterr().err
    assert _run(first, out, "--resume") == 0  # the same run: finished, nothing to add
    # A run of an older version, whose settings lack later ones: those count as defaults.
    description = json.loads((out / RUN_FILE).read_text())
    for later in ("amplitude_scale", "mask_diameter_a"):
        del description["config"][later]
    (out / RUN_FILE).write_text(json.dumps(description))
    assert _run(first, out, "--resume") == 0
    assert _run(first, out, "--resume", "--amplitude-scale") == 2
    assert "amplitude_scale: False -> True" in capsys.readouterr().err
    # A --whiten run of a version that whitened each optics group to its own variance.
    description["config"]["whiten"] = True
    (out / RUN_FILE).write_text(json.dumps(description))
    assert _run(first, out, "--resume", "--whiten") == 2
    assert "whitening: None -> 'each optics group to one noise variance'" in capsys.readouterr().err


def test_force_clears_the_old_run_but_keeps_the_users_files(sets, tmp_path):
    star = sets[0] / "particles.star"
    out = tmp_path / "run"
    assert _run(star, out) == 0
    assert [h.epoch for h in read_history(out)] == [1, 2]
    (out / "notes.txt").write_text("mine")
    assert _run(star, out, "--force", "--mode", "amortized", "--epochs", "1") == 0
    assert [h.epoch for h in read_history(out)] == [1]  # not the old run's epoch 2
    assert not (out / SWITCH_FILE).exists()  # the amortized run has no switch
    assert (out / HISTORY_DIR).is_dir() and (out / "notes.txt").read_text() == "mine"


def test_input_paths_are_recorded_absolute(sets, tmp_path, monkeypatch):
    monkeypatch.chdir(sets[0])
    out = tmp_path / "run"
    assert _run("particles.star", out) == 0
    description = json.loads((out / RUN_FILE).read_text())
    assert description["input"] == str((sets[0] / "particles.star").resolve())
    assert description["particles"]["count"] == 96
    monkeypatch.chdir(tmp_path)  # read from elsewhere: the analysis reads the images again
    args = ["analyze", str(out), "--only", "posterior", "--particles", "0", "--nside", "2"]
    assert cli([*args, "--no-report"]) == 0


def test_ctrl_c_says_which_epoch_was_kept_and_how_to_resume(sets, tmp_path, capsys, monkeypatch):
    star = sets[0] / "particles.star"
    out = tmp_path / "run"
    original = AbInitio.run_epoch
    calls = {"n": 0}

    def interrupted(self, bar):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, bar)

    monkeypatch.setattr(AbInitio, "run_epoch", interrupted)
    assert _run(star, out) == 130
    err = capsys.readouterr().err
    assert "stopped after epoch 1" in err and "--resume" in err and "Traceback" not in err
    monkeypatch.setattr(AbInitio, "run_epoch", original)
    assert _run(star, out, "--resume") == 0
