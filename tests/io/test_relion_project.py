"""A user's RELION project: names resolved from the project's root as RELION does, every input
column carried into the STAR we write, and the inputs RELION writes that we must refuse."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryohydra.io.errors import InputFileError
from cryohydra.io.star import read_star, write_star

CARRIED_PARTICLE_COLUMNS = {
    "rlnMicrographName": ["MotionCorr/job002/mic1.mrc", "MotionCorr/job002/mic2.mrc"],
    "rlnCoordinateX": [101.5, 2203.0],
    "rlnCoordinateY": [55.0, 804.25],
    "rlnRandomSubset": [1, 2],
    "rlnClassNumber": [3, 1],
    "rlnGroupNumber": [7, 8],
}


def _project(root, premultiplied: int = 0, voltage: float = 300.0):
    """``root/Extract/job012/stack.mrcs`` (2 images) and ``root/Refine3D/job050/run_data.star``
    naming it from the project root, as RELION writes it."""
    stack = root / "Extract" / "job012" / "stack.mrcs"
    stack.parent.mkdir(parents=True)
    images = np.random.default_rng(0).normal(size=(2, 16, 16)).astype(np.float32)
    with mrcfile.new(stack) as mrc:
        mrc.set_data(images)
        mrc.voxel_size = 2.0
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["myScope"],
            "rlnOpticsGroup": [1],
            "rlnMicrographOriginalPixelSize": [0.885],
            "rlnVoltage": [voltage],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
            "rlnImagePixelSize": [2.0],
            "rlnImageSize": [16],
            "rlnImageDimensionality": [2],
            "rlnCtfDataAreCtfPremultiplied": [premultiplied],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnImageName": [
                "000001@Extract/job012/stack.mrcs",
                "000002@Extract/job012/stack.mrcs",
            ],
            **CARRIED_PARTICLE_COLUMNS,
            "rlnDefocusU": [15000.0, 16000.0],
            "rlnDefocusV": [14500.0, 15500.0],
            "rlnDefocusAngle": [10.0, 20.0],
            "rlnAngleRot": [10.0, 20.0],
            "rlnAngleTilt": [30.0, 40.0],
            "rlnAnglePsi": [50.0, 60.0],
            "rlnOriginXAngst": [1.0, -2.0],
            "rlnOriginYAngst": [0.5, 0.0],
            "rlnOpticsGroup": [1, 1],
        }
    )
    star = root / "Refine3D" / "job050" / "run_data.star"
    star.parent.mkdir(parents=True)
    starfile.write({"optics": optics, "particles": particles}, star)
    return star, images


def test_names_resolve_from_the_project_root(tmp_path, monkeypatch):
    star, images = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    particles = read_star("Refine3D/job050/run_data.star")
    np.testing.assert_array_equal(particles.load_images(), images)


def test_missing_stack_error_lists_the_folders_searched(tmp_path, monkeypatch):
    star, _ = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    particles = read_star(star)
    with pytest.raises(InputFileError, match="run_data.star") as err:
        particles.load_images()
    assert str(elsewhere) in str(err.value) and str(star.parent) in str(err.value)
    assert "--datadir" in str(err.value)
    # --datadir naming the project's root finds them.
    found = read_star(star, datadir=tmp_path / "project")
    assert found.load_images().shape == (2, 16, 16)


def test_two_different_stacks_of_one_name_are_ambiguous(tmp_path, monkeypatch):
    star, _ = _project(tmp_path)
    twin = star.parent / "Extract" / "job012" / "stack.mrcs"
    twin.parent.mkdir(parents=True)
    with mrcfile.new(twin) as mrc:
        mrc.set_data(np.zeros((2, 16, 16), np.float32))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError, match="run_data.star.*two different files"):
        read_star(star)


def test_every_input_column_reaches_the_output_star(tmp_path, monkeypatch):
    star, _ = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    particles = read_star("Refine3D/job050/run_data.star")
    out = tmp_path / "cryohydra" / "job001" / "particles.star"
    out.parent.mkdir(parents=True)
    write_star(out, particles.subset(np.array([1, 0])))
    blocks = starfile.read(out, always_dict=True)
    table, optics = blocks["particles"], blocks["optics"]
    for name, values in CARRIED_PARTICLE_COLUMNS.items():
        assert table[name].tolist() == values[::-1], name
    assert optics["rlnMicrographOriginalPixelSize"].tolist() == [0.885]
    assert optics["rlnCtfDataAreCtfPremultiplied"].tolist() == [0]
    assert optics["rlnOpticsGroupName"].tolist() == ["myScope"]
    # Names stay relative to the project's root, where RELION looks for them.
    assert table["rlnImageName"].tolist() == [
        "000002@Extract/job012/stack.mrcs",
        "000001@Extract/job012/stack.mrcs",
    ]
    again = read_star(out)
    np.testing.assert_allclose(again.rotations, particles.rotations[[1, 0]], atol=1e-9)
    assert set(again.extra_columns) == set(CARRIED_PARTICLE_COLUMNS)


def test_ctf_premultiplied_images_are_refused(tmp_path):
    star, _ = _project(tmp_path, premultiplied=1)
    with pytest.raises(InputFileError, match="run_data.star.*rlnCtfDataAreCtfPremultiplied"):
        read_star(star)


def test_zero_voltage_is_refused(tmp_path):
    star, _ = _project(tmp_path, voltage=0.0)
    with pytest.raises(InputFileError, match=r"run_data.star.*rlnVoltage must be > 0 kV, found 0"):
        read_star(star)


def test_image_names_without_numbers_naming_one_stack_are_refused(tmp_path):
    star, _ = _project(tmp_path)
    blocks = starfile.read(star, always_dict=True)
    blocks["particles"]["rlnImageName"] = ["Extract/job012/stack.mrcs"] * 2
    bad = tmp_path / "bare.star"
    starfile.write(blocks, bad)
    with pytest.raises(InputFileError, match=r"bare.star.*rows 1 and 2 has no image number"):
        read_star(bad)
