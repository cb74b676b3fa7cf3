"""Every command answers bad input with exit 2 and a message naming the option or the file,
before any work and without writing anything.

Two tables: generic checks derived from each command's own parser (every ``--device`` refuses
a device this machine lacks, every ``--datadir`` a missing folder, every output folder one
that cannot be made, every number typed ``> 0`` zero and a negative value), so a new command
gets them by being listed in ``BASE``; and command-specific cases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import starfile
import torch

from cryohydra.cli.main import build_parser, main

DATA = Path(__file__).resolve().parents[1] / "data"
ORIENT_MODEL = DATA / "orient" / "6uo9_32px_noiseless.pt"


@pytest.fixture(scope="module")
def files(simulated_set, tmp_path_factory):
    folder = simulated_set(n_particles=64, snr=10.0, seed=61)
    root = tmp_path_factory.mktemp("bad_input")
    (root / "a_file.txt").write_text("not a folder")
    (root / "table.star").write_text("data_\n\nloop_\n_rlnVoltage #1\n300\n")
    blocks = starfile.read(folder / "particles.star", always_dict=True)
    blocks["optics"]["rlnVoltage"] = 0.0
    starfile.write(blocks, folder / "zero_voltage.star")
    no_ctf = dict(blocks)
    no_ctf["particles"] = blocks["particles"].drop(
        columns=["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]
    )
    starfile.write(no_ctf, folder / "no_ctf.star")
    return {
        "star": str(folder / "particles.star"),
        "map": str(folder / "ground_truth.mrc"),
        "zero_voltage": str(folder / "zero_voltage.star"),
        "no_ctf": str(folder / "no_ctf.star"),
        "root": root,
    }


def _base(files: dict, out: Path) -> dict[str, list[str]]:
    """A valid invocation of every command (and orient step), writing to ``out``."""
    star, volume = files["star"], files["map"]
    return {
        "simulate": [volume, "-o", str(out), "--box", "16", "-n", "4", "--quiet"],
        "backproject": [star, "-o", str(out), "--quiet"],
        "reconstruct": [star, "-o", str(out), "--epochs", "1", "--quiet"],
        "fsc": [volume, volume, "-o", str(out)],
        "evaluate": [star, star, "-o", str(out)],
        "report": [str(out)],
        "analyze": [str(out)],
        "orient train": ["-o", str(out), "--particles", star, "--epochs", "1", "--box", "16"],
        "orient recover": [str(ORIENT_MODEL), star, "-o", str(out)],
        "symmetry": [volume, "-o", str(out), "--candidates", "C2"],
    }


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every runnable command, orient's steps included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                if nested:
                    yield from _subparsers(sub, f"{full} ")
                else:
                    yield full, sub


COMMANDS = dict(_subparsers(build_parser()))


def _options(command: str) -> dict[str, argparse.Action]:
    return {a.option_strings[-1]: a for a in COMMANDS[command]._actions if a.option_strings}


def _generic_cases() -> list[tuple[str, str, list[str], str]]:
    """(command, case, extra arguments, expected in the message)."""
    cases = []
    for command in COMMANDS:
        options = _options(command)
        if "--device" in options:
            cases.append((command, "device", ["--device", "cuda:7"], "--device"))
        if "--datadir" in options:
            cases.append((command, "datadir", ["--datadir", "/no/such/folder"], "--datadir"))
        for name, action in options.items():
            constraint = getattr(action.type, "constraint", None)
            if constraint == "> 0":
                cases.append((command, f"{name} 0", [name, "0"], name))
                cases.append((command, f"{name} -1", [name, "-1"], name))
            elif constraint == ">= 0":
                cases.append((command, f"{name} -1", [name, "-1"], name))
    return cases


def test_every_command_has_a_base_invocation(files, tmp_path):
    assert set(_base(files, tmp_path)) == set(COMMANDS)


def test_every_option_has_help_and_the_help_shows_defaults(capsys):
    for command, parser in COMMANDS.items():
        for action in parser._actions:
            if action.option_strings or action.dest != "help":
                assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        assert parser.description, f"{command}: no description"
    main(["reconstruct", "--help"])
    text = capsys.readouterr().out
    assert "(default: 20)" in text and "(default: semi-amortized)" in text
    # A switch that turns something off (dest "ctf", default True) claims no default.
    main(["simulate", "--help"])
    assert "(default: True)" not in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
@pytest.mark.parametrize(
    ("command", "case", "extra", "expected"),
    _generic_cases(),
    ids=[f"{c[0]}:{c[1]}" for c in _generic_cases()],
)
def test_generic_bad_value_is_refused_naming_the_option(
    files, tmp_path, capsys, command, case, extra, expected
):
    out = tmp_path / "out"
    args = command.split() + _base(files, out)[command] + extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("report", "analyze")])
def test_output_folder_that_cannot_be_made_is_refused_first(files, capsys, command, monkeypatch):
    """Under a file: refused before any work (the work itself is replaced by a failure)."""
    out = files["root"] / "a_file.txt" / "out"
    monkeypatch.setattr(
        COMMANDS[command], "_defaults", {**COMMANDS[command]._defaults, "run": _must_not_run}
    )
    assert main(command.split() + _base(files, out)[command]) == 2
    assert "a_file.txt is a file, not a folder" in capsys.readouterr().err


def _must_not_run(args):
    raise AssertionError("the command ran before its output folder was checked")


SPECIFIC = [
    # (command, arguments after the base's input, expected in the message)
    ("simulate", ["--defocus-min", "30000", "--defocus-max", "10000"], "defocus range is empty"),
    ("simulate", ["--ctf-table", "{root}/table.star"], "table.star"),
    ("simulate", ["--pixel-size", "nan"], "--pixel-size"),
    ("simulate", ["--snr", "0"], "--snr"),
    ("simulate", ["--noise-spectrum", "{root}/a_file.txt"], "a_file.txt"),
    ("simulate", ["--noise-spectrum", "{root}/table.star"], "table.star"),
    ("reconstruct", ["--symmetry", "X7"], "X7"),
    ("reconstruct", ["--keep-best", "0"], "--keep-best"),
    ("reconstruct", ["--keep-best", "1.5"], "--keep-best"),
    ("evaluate", ["--symmetry", "X7"], "X7"),
    ("backproject", ["--symmetry", "X7"], "X7"),
    ("symmetry", ["--candidates", "C2", "X7"], "X7"),
    ("symmetry", ["--threshold", "1.5"], "--threshold"),
    ("symmetry", ["--margin", "0"], "--margin"),
]


@pytest.mark.parametrize(("command", "extra", "expected"), SPECIFIC)
def test_specific_bad_input_is_refused(files, tmp_path, capsys, command, extra, expected):
    out = tmp_path / "out"
    extra = [e.format(root=files["root"]) for e in extra]
    assert main(command.split() + _base(files, out)[command] + extra) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["backproject", "reconstruct"])
def test_inputs_that_would_give_garbage_are_refused(files, tmp_path, capsys, command):
    for star, expected in ((files["zero_voltage"], "rlnVoltage"), (files["no_ctf"], "--no-ctf")):
        args = [command, star, "-o", str(tmp_path / "out"), "--epochs", "1", "--quiet"]
        if command == "backproject":
            args.remove("--epochs"), args.remove("1")
        assert main(args) == 2
        err = capsys.readouterr().err
        assert expected in err and Path(star).name in err
        assert not (tmp_path / "out").exists()


def test_no_ctf_reconstructs_an_input_without_ctf(files, tmp_path):
    out = tmp_path / "out"
    assert main(["backproject", files["no_ctf"], "-o", str(out), "--quiet", "--no-ctf"]) == 0
    assert (out / "map.mrc").exists()


def test_snr_infinity_is_allowed(files, tmp_path):
    out = tmp_path / "out"
    args = ["simulate", *_base(files, out)["simulate"], "--snr", "inf"]
    assert main(args) == 0
    assert json.loads((out / "simulation.json").read_text())["noise_std"] == 0.0


def test_paths_with_spaces_and_non_ascii_characters(files, tmp_path):
    """Once a traceback in the FSC's CSV writer after training."""
    folder = tmp_path / "my data ü"
    folder.mkdir()
    star = folder / "parti cles é.star"
    star.write_text(Path(files["star"]).read_text())
    for name in Path(files["star"]).parent.glob("*.mrcs"):
        (folder / name.name).symlink_to(name)
    out = tmp_path / "out put ü"
    assert main(["backproject", str(star), "-o", str(out), "--half-maps", "--quiet"]) == 0
    assert (out / "fsc.csv").stat().st_size > 0


def test_an_output_folder_without_write_permission_is_refused_first(files, capsys, monkeypatch):
    """A read-only folder (as root, permissions are not enforced, so access() is made to say
    no): refused before reading the input, naming the folder."""
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    out = files["root"] / "read_only_here"
    assert main(["backproject", files["star"], "-o", str(out / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no permission to write in" in err and str(files["root"]) in err


@pytest.fixture(scope="module")
def unusable_images(files, tmp_path_factory):
    """A copy of the set in which the 3rd particle's image holds a NaN and the 10th is
    constant (a pick off the micrograph's edge, extracted as zeros)."""
    import shutil

    import mrcfile
    import numpy as np

    source = Path(files["star"]).parent
    folder = tmp_path_factory.mktemp("unusable")
    blocks = starfile.read(source / "particles.star", always_dict=True)
    names = blocks["particles"]["rlnImageName"]
    stacks = {name.split("@")[1] for name in names}
    for stack in stacks:
        shutil.copy(source / stack, folder / stack)
    for row, value in ((2, np.nan), (9, 0.0)):
        index, stack = names[row].split("@")
        with mrcfile.mmap(folder / stack, mode="r+") as mrc:
            if value == value:  # constant
                mrc.data[int(index) - 1] = value
            else:
                mrc.data[int(index) - 1, 3, 4] = value
    starfile.write(blocks, folder / "particles.star")
    return folder / "particles.star", [names[2], names[9]]


@pytest.mark.parametrize("command", ["backproject", "reconstruct"])
def test_nan_and_constant_images_are_refused_before_any_work(
    unusable_images, tmp_path, capsys, command
):
    star, bad = unusable_images
    out = tmp_path / "out"
    args = [command, str(star), "-o", str(out), "--quiet"]
    assert main(args + (["--epochs", "1"] if command == "reconstruct" else [])) == 2
    err = capsys.readouterr().err
    assert "2 of the 64 images" in err and "Traceback" not in err
    for name, why in zip(bad, ("NaN or infinite", "constant"), strict=True):
        index, stack = name.split("@")
        assert f"{Path(stack).name} image {int(index)}: {why}" in err
    assert not out.exists()
