"""RELION STAR reading and writing, checked against values read by eye from the fixtures."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from cryohydra.geometry.rotations import euler_relion_to_matrix, matrix_to_euler_relion
from cryohydra.io.errors import InputFileError, OutputExistsError
from cryohydra.io.particles import ParticleSet
from cryohydra.io.star import read_star, write_star

DATA = Path(__file__).resolve().parents[1] / "data"
RELION31 = DATA / "relion31_5" / "relion31.star"
RELION31_V2 = DATA / "relion31_5" / "relion31.v2.star"
SIX_GROUPS = DATA / "relion31_5" / "relion31.6opticsgroups.star"
ASPIRE30 = DATA / "aspire_sample17" / "sample_particles_relion30.star"
ASPIRE31 = DATA / "aspire_sample17" / "sample_particles_relion31.star"
ASPIRE_DATA = DATA / "aspire_sample17" / "sample_relion_data.star"
RELION5 = DATA / "metadata" / "relion5.star"
PFCRT = DATA / "metadata" / "FinalRefinement-OriginalParticles-PfCRT.star"
BETAGAL = DATA / "metadata" / "empiar10061_betagal_452ptcl_simSPI.star"
EMPIAR10076 = DATA / "empiar10076_7" / "empiar_10076_7.star"

ALL_STARS = [
    RELION31,
    RELION31_V2,
    SIX_GROUPS,
    ASPIRE30,
    ASPIRE31,
    ASPIRE_DATA,
    RELION5,
    PFCRT,
    BETAGAL,
    EMPIAR10076,
]


def euler_deg(particles: ParticleSet) -> np.ndarray:
    """RELION (rot, tilt, psi) in degrees of the set's rotations, ``(N, 3)``."""
    return np.rad2deg(matrix_to_euler_relion(torch.from_numpy(particles.rotations)).numpy())


def matrix_from_deg(rot: float, tilt: float, psi: float) -> np.ndarray:
    return euler_relion_to_matrix(torch.tensor(np.deg2rad([rot, tilt, psi]))).numpy()


def assert_same_particles(a: ParticleSet, b: ParticleSet, rtol: float = 1e-9) -> None:
    """Same particles up to float precision (rotations within 1e-6)."""
    assert len(a) == len(b)
    assert list(a.image_paths) == list(b.image_paths)
    np.testing.assert_array_equal(a.image_indices, b.image_indices)
    np.testing.assert_allclose(a.pixel_size_a, b.pixel_size_a, rtol=rtol)
    assert a.box_size == b.box_size
    assert (a.ctf is None) == (b.ctf is None)
    if a.ctf is not None:
        for name, value in a.ctf.as_dict().items():
            np.testing.assert_allclose(b.ctf.as_dict()[name], value, rtol=rtol, atol=1e-7)
    assert (a.rotations is None) == (b.rotations is None)
    if a.rotations is not None:
        assert np.abs(a.rotations - b.rotations).max() < 1e-6
    assert (a.shifts_a is None) == (b.shifts_a is None)
    if a.shifts_a is not None:
        np.testing.assert_allclose(b.shifts_a, a.shifts_a, atol=1e-5)


def write_table(path: Path, blocks: dict | pd.DataFrame) -> Path:
    starfile.write(blocks, path)
    return path


# ----------------------------------------------------------------------------------------------
# Fixture values
# ----------------------------------------------------------------------------------------------


def test_relion31_values():
    p = read_star(RELION31)
    assert len(p) == 5
    np.testing.assert_allclose(p.pixel_size_a, 2.806)
    assert p.box_size == 256
    assert p.ctf.defocus_u_a[0] == pytest.approx(13108.082418)
    assert p.ctf.defocus_v_a[0] == pytest.approx(12845.582418)
    assert p.ctf.astigmatism_angle_rad[0] == pytest.approx(np.deg2rad(-160.39))
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 0.01)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.1)
    np.testing.assert_allclose(p.ctf.phase_shift_rad, 0.0)
    np.testing.assert_array_equal(np.unique(p.optics_group), [1])
    np.testing.assert_allclose(euler_deg(p)[0], [-102.30296, 82.318041, 124.706463], atol=1e-6)
    np.testing.assert_allclose(p.rotations[0], matrix_from_deg(-102.30296, 82.318041, 124.706463))
    np.testing.assert_allclose(p.shifts_a[0], [0.019324, -0.64686])  # Å, no sign flip
    np.testing.assert_allclose(p.shifts_a[4], [-0.33773, 0.385262])
    np.testing.assert_array_equal(p.image_indices, np.arange(5))
    assert all(Path(s) == RELION31.parent / "relion31.mrcs" for s in p.image_paths)


def test_relion31_blocks_swapped_read_identically():
    a, b = read_star(RELION31), read_star(RELION31_V2)
    assert_same_particles(a, b, rtol=0)
    np.testing.assert_array_equal(a.optics_group, b.optics_group)


def test_relion31_images_load_beside_star():
    images = read_star(RELION31).load_images()
    with warnings.catch_warnings():  # this stack has no 'MAP ' ID string
        warnings.simplefilter("ignore", RuntimeWarning)
        with mrcfile.open(RELION31.parent / "relion31.mrcs", permissive=True) as mrc:
            expected = np.array(mrc.data)
    assert images.shape == (5, 256, 256) and images.dtype == np.float32
    np.testing.assert_array_equal(images, expected)


def test_images_found_through_datadir(tmp_path):
    # The STAR alone, away from its stack: found only with --datadir.
    star = Path(shutil.copy(RELION31, tmp_path / "moved.star"))
    alone = read_star(star)
    with pytest.raises(InputFileError, match="moved.star") as err:
        alone.load_images()
    assert "relion31.mrcs" in str(err.value) and "--datadir" in str(err.value)
    found = read_star(star, datadir=RELION31.parent)
    np.testing.assert_array_equal(found.load_images(), read_star(RELION31).load_images())


def test_datadir_matches_by_base_name(tmp_path):
    names = ["000001@Extract/job133/Micrographs/relion31.mrcs", "000002@Extract/relion31.mrcs"]
    table = pd.DataFrame({"rlnImageName": names, "rlnImagePixelSize": 2.806})
    star = write_table(tmp_path / "deep.star", table)
    p = read_star(star, datadir=RELION31.parent)
    assert all(Path(s) == RELION31.parent / "relion31.mrcs" for s in p.image_paths)
    np.testing.assert_array_equal(p.image_indices, [0, 1])
    assert p.box_size == 256  # from the stack header
    assert p.ctf is None and p.rotations is None and p.shifts_a is None


def test_six_optics_groups():
    p = read_star(SIX_GROUPS)
    assert len(p) == 139
    assert p.box_size == 196
    groups = np.unique(p.optics_group)
    np.testing.assert_array_equal(groups, [1, 2, 3, 4, 5, 6])
    expected_pixel = {1: 1.25, 2: 1.24, 3: 1.25, 4: 1.25, 5: 1.24, 6: 1.25}
    for group, pixel in expected_pixel.items():
        np.testing.assert_allclose(p.pixel_size_a[p.optics_group == group], pixel)
    np.testing.assert_allclose(p.ctf.cs_mm[p.optics_group == 4], 2.6)
    np.testing.assert_allclose(p.ctf.cs_mm[p.optics_group != 4], 2.7)
    np.testing.assert_allclose(p.ctf.voltage_kv, 200.0)
    # First row: group 6, image 3 of Polish/job520/Micrographs/0003_shiny.mrcs.
    assert p.optics_group[0] == 6 and p.image_indices[0] == 2
    assert p.image_paths[0].endswith("Polish/job520/Micrographs/0003_shiny.mrcs")
    assert p.ctf.defocus_u_a[0] == pytest.approx(10352.805929)
    np.testing.assert_allclose(euler_deg(p)[0], [-128.10516, 37.068920, -82.17809], atol=1e-6)
    np.testing.assert_allclose(p.shifts_a[0], [13.284554, -3.21701])


def test_six_optics_groups_stacks_missing_names_star():
    p = read_star(SIX_GROUPS)
    with pytest.raises(InputFileError, match="relion31.6opticsgroups.star") as err:
        p.load_images([0])
    assert "0003_shiny.mrcs" in str(err.value)


def test_aspire_relion30_and_31_agree():
    p30, p31 = read_star(ASPIRE30), read_star(ASPIRE31)
    assert len(p30) == len(p31) == 17
    assert p30.box_size == p31.box_size == 200  # neither names it: from the stack header
    # 3.0: detector pixel 5 um / magnification 37369.207031; the 3.1 copy says 1.4 Å.
    np.testing.assert_allclose(p30.pixel_size_a, 5e4 / 37369.207031)
    np.testing.assert_allclose(p31.pixel_size_a, 1.4)
    np.testing.assert_allclose(p30.ctf.defocus_u_a, 21186.804688)
    np.testing.assert_allclose(p31.ctf.defocus_u_a, p30.ctf.defocus_u_a)
    np.testing.assert_allclose(p31.ctf.defocus_v_a, p30.ctf.defocus_v_a)
    np.testing.assert_allclose(p31.ctf.astigmatism_angle_rad, np.deg2rad(7.476096))
    # Optics group 2 (images 9..17) is at 200 kV in the 3.1 file, as are those rows in 3.0.
    np.testing.assert_array_equal(p31.optics_group, [1] * 8 + [2] * 9)
    np.testing.assert_allclose(p31.ctf.voltage_kv[p31.optics_group == 2], 200.0)
    np.testing.assert_allclose(p31.ctf.voltage_kv[p31.optics_group == 1], 300.0)
    np.testing.assert_allclose(p30.ctf.voltage_kv, p31.ctf.voltage_kv)
    # The 3.1 file repeats row 14's metadata for image 15 (fixture quirk): skip that row.
    rows = np.delete(np.arange(17), 14)
    assert np.abs(p30.rotations[rows] - p31.rotations[rows]).max() < 1e-12
    np.testing.assert_allclose(euler_deg(p30)[0], [109.186640, 122.200343, 71.118492], atol=1e-6)
    # Shifts: 3.0 rlnOriginX is in pixels, 3.1 rlnOriginXAngst in Å (the same numbers here).
    np.testing.assert_allclose(p30.shifts_a[0], np.array([0.1996, 0.1996]) * 5e4 / 37369.207031)
    np.testing.assert_allclose(p31.shifts_a[0], [0.1996, 0.1996])
    np.testing.assert_array_equal(p30.load_images([0, 16]), p31.load_images([0, 16]))


def test_aspire_relion_data_all_300kv():
    p = read_star(ASPIRE_DATA)
    assert len(p) == 17
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(p.rotations, read_star(ASPIRE30).rotations)


def test_relion5_values():
    p = read_star(RELION5)
    assert len(p) == 17
    np.testing.assert_allclose(p.pixel_size_a, 0.89)
    np.testing.assert_allclose(p.ctf.voltage_kv, 100.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 1.6)
    assert p.box_size == 448
    assert p.ctf.defocus_u_a[0] == pytest.approx(11949.06133)
    np.testing.assert_allclose(euler_deg(p)[0], [111.508618, 36.742536, 141.158035], atol=1e-6)
    np.testing.assert_allclose(p.shifts_a[0], [-3.12578, -1.41031])
    assert p.image_paths[1].endswith("toy_images_b.mrcs") and p.image_indices[1] == 1


def test_relion5_missing_stacks_reported_with_star_name():
    with pytest.raises(InputFileError, match="relion5.star") as err:
        read_star(RELION5).load_images()
    assert "toy_images_a.mrcs" in str(err.value)


def test_relion30_detector_pixel_and_pixel_origin():
    with pytest.warns(UserWarning, match="rlnAmplitudeContrast"):
        p = read_star(PFCRT)  # data_images block; no amplitude contrast column
    assert len(p) == 5
    np.testing.assert_allclose(p.pixel_size_a, 1.035 * 1e4 / 10000)
    assert p.box_size is None  # no rlnImageSize and no stack on disk
    assert p.ctf.defocus_u_a[0] == pytest.approx(15686.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 0.001)
    np.testing.assert_allclose(euler_deg(p)[0], [16.093530, 86.352776, 98.225690], atol=1e-6)
    np.testing.assert_allclose(p.shifts_a[0], np.array([-0.14063, -0.04688]) * 1.035)
    assert p.image_paths[0].endswith("Extract/job012/FinalRefinement-OriginalParticles-PfCRT.mrcs")


def test_missing_amplitude_contrast_warns_and_uses_relion_default():
    with pytest.warns(UserWarning, match="rlnAmplitudeContrast"):
        p = read_star(PFCRT)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.0)


def test_betagal_values():
    p = read_star(BETAGAL)
    assert len(p) == 452
    np.testing.assert_allclose(p.pixel_size_a, 1.911)
    assert p.box_size == 128
    assert p.image_indices[0] == 38
    assert p.ctf.defocus_u_a[0] == pytest.approx(11546.09375)
    np.testing.assert_allclose(euler_deg(p)[0], [117.716420, 21.078015, 113.923438], atol=1e-6)
    np.testing.assert_allclose(p.shifts_a[0], [-6.40480, -9.26365])


def test_empiar10076_relion30():
    p = read_star(EMPIAR10076)  # block named data_
    assert len(p) == 7
    np.testing.assert_allclose(p.pixel_size_a, 5e4 / 38168)
    assert p.box_size == 320
    assert p.ctf.defocus_u_a[0] == pytest.approx(15301.1)
    assert p.ctf.astigmatism_angle_rad[0] == pytest.approx(0.092153385, abs=1e-6)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.07)
    assert p.rotations is None and p.shifts_a is None
    assert p.load_images().shape == (7, 320, 320)


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*rlnAmplitudeContrast")
@pytest.mark.parametrize("star", ALL_STARS, ids=lambda s: s.name)
def test_write_read_round_trip(star, tmp_path):
    original = read_star(star)
    out = write_star(tmp_path / "sub" / "out.star", original)
    again = read_star(out)
    assert_same_particles(original, again)
    # Output optics groups never mix input groups (they may split one with mixed voltages).
    pairs = set(zip(original.optics_group.tolist(), again.optics_group.tolist(), strict=True))
    assert len(pairs) == len(set(again.optics_group.tolist()))
    assert starfile.read(out, always_dict=True).keys() == {"optics", "particles"}


def test_round_trip_images_load_identically(tmp_path):
    original = read_star(RELION31)
    again = read_star(write_star(tmp_path / "elsewhere" / "copy.star", original))
    names = starfile.read(tmp_path / "elsewhere" / "copy.star")["particles"]["rlnImageName"]
    relative = os.path.relpath(original.image_paths[0], tmp_path / "elsewhere")
    assert names[0] == f"000001@{relative}" and names[4] == f"000005@{relative}"
    np.testing.assert_array_equal(again.load_images(), original.load_images())


def test_write_keeps_six_optics_groups(tmp_path):
    original = read_star(SIX_GROUPS)
    out = write_star(tmp_path / "six.star", original)
    optics = starfile.read(out)["optics"]
    assert len(optics) == 6
    np.testing.assert_array_equal(read_star(out).optics_group, original.optics_group)
    assert set(optics["rlnImageDimensionality"]) == {2}


def test_write_splits_groups_that_differ(tmp_path):
    p = read_star(ASPIRE30)  # all in group 1, but 300 and 200 kV
    out = write_star(tmp_path / "split.star", p)
    optics = starfile.read(out)["optics"]
    assert sorted(optics["rlnVoltage"]) == [200.0, 300.0]
    np.testing.assert_allclose(read_star(out).ctf.voltage_kv, p.ctf.voltage_kv)


def test_write_refuses_to_overwrite(tmp_path):
    target = tmp_path / "exists.star"
    target.write_text("keep me\n")
    p = read_star(RELION31)
    with pytest.raises(OutputExistsError, match="exists.star"):
        write_star(target, p)
    assert target.read_text() == "keep me\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["exists.star"]
    write_star(target, p, force=True)
    assert len(read_star(target)) == 5


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def relion31_blocks() -> dict:
    return starfile.read(RELION31, always_dict=True)


def test_missing_ctf_column(tmp_path):
    blocks = relion31_blocks()
    blocks["optics"] = blocks["optics"].drop(columns=["rlnVoltage"])
    star = write_table(tmp_path / "no_voltage.star", blocks)
    with pytest.raises(InputFileError, match="no_voltage.star.*rlnVoltage"):
        read_star(star)


def test_missing_ctf_columns_relion30(tmp_path):
    table = starfile.read(EMPIAR10076).drop(columns=["rlnDefocusV", "rlnSphericalAberration"])
    star = write_table(tmp_path / "partial.star", table)
    with pytest.raises(InputFileError, match="partial.star") as err:
        read_star(star)
    assert "rlnDefocusV" in str(err.value) and "rlnSphericalAberration" in str(err.value)


def test_no_defocus_means_no_ctf(tmp_path):
    blocks = relion31_blocks()
    blocks["particles"] = blocks["particles"].drop(columns=list(blocks["particles"].columns[6:9]))
    p = read_star(write_table(tmp_path / "noctf.star", blocks))
    assert p.ctf is None and p.rotations is not None
    with pytest.raises(InputFileError, match="noctf.star"):
        p.require_ctf()


def test_nan_in_used_column(tmp_path):
    blocks = relion31_blocks()
    blocks["particles"].loc[2, "rlnAngleTilt"] = np.nan
    star = write_table(tmp_path / "nan.star", blocks)
    with pytest.raises(InputFileError, match=r"nan.star.*rlnAngleTilt.*row 3"):
        read_star(star)


def test_text_in_numeric_column(tmp_path):
    text = RELION31.read_text().replace("13108.082418", "13108.0x2418")
    star = tmp_path / "text.star"
    star.write_text(text)
    with pytest.raises(InputFileError, match=r"text.star.*rlnDefocusU.*row 1"):
        read_star(star)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="nothing.star.*does not exist"):
        read_star(tmp_path / "nothing.star")


def test_no_image_name_column(tmp_path):
    blocks = relion31_blocks()
    blocks["particles"] = blocks["particles"].drop(columns=["rlnImageName"])
    star = write_table(tmp_path / "noname.star", blocks)
    with pytest.raises(InputFileError, match="noname.star.*rlnImageName"):
        read_star(star)


def test_not_a_star_file(tmp_path):
    star = tmp_path / "garbage.star"
    star.write_text("this is not a STAR file\n")
    with pytest.raises(InputFileError, match="garbage.star"):
        read_star(star)


def test_bad_image_name(tmp_path):
    blocks = relion31_blocks()
    blocks["particles"].loc[1, "rlnImageName"] = "0@relion31.mrcs"
    star = write_table(tmp_path / "zero.star", blocks)
    with pytest.raises(InputFileError, match=r"zero.star.*'0@relion31.mrcs'.*row 2"):
        read_star(star)


def test_unknown_optics_group(tmp_path):
    blocks = relion31_blocks()
    blocks["particles"].loc[0, "rlnOpticsGroup"] = 7
    star = write_table(tmp_path / "group7.star", blocks)
    with pytest.raises(InputFileError, match=r"group7.star.*\[7\]"):
        read_star(star)


def test_conflicting_image_sizes(tmp_path):
    blocks = starfile.read(SIX_GROUPS, always_dict=True)
    blocks["optics"].loc[0, "rlnImageSize"] = 200
    star = write_table(tmp_path / "sizes.star", blocks)
    with pytest.raises(InputFileError, match="sizes.star.*rlnImageSize"):
        read_star(star)


def test_pixel_size_from_stack_header(tmp_path):
    with mrcfile.new(tmp_path / "tiny.mrcs") as mrc:
        mrc.set_data(np.zeros((2, 8, 8), dtype=np.float32))
        mrc.voxel_size = 3.5
    star = write_table(tmp_path / "bare.star", {"": {"rlnImageName": "2@tiny.mrcs"}})
    p = read_star(star)
    np.testing.assert_allclose(p.pixel_size_a, 3.5)
    assert p.box_size == 8 and p.image_indices[0] == 1


def test_no_pixel_size_anywhere(tmp_path):
    with mrcfile.new(tmp_path / "nopix.mrcs") as mrc:
        mrc.set_data(np.zeros((2, 8, 8), dtype=np.float32))
    star = write_table(tmp_path / "nopix.star", {"": {"rlnImageName": "1@nopix.mrcs"}})
    with pytest.raises(InputFileError, match="nopix.star.*no pixel size"):
        read_star(star)


def test_ctf_scale_factor_round_trips_through_star_and_cs(tmp_path):
    from cryohydra.io.cryosparc import read_cs, write_cs

    original = read_star(RELION31)
    assert np.all(original.ctf.scale == 1)
    assert (
        "rlnCtfScalefactor"
        not in starfile.read(write_star(tmp_path / "ones.star", original))["particles"]
    )
    scale = np.linspace(0.5, 1.5, len(original))
    scaled = original.with_amplitude_scale(scale)
    back = read_star(write_star(tmp_path / "scaled.star", scaled))
    np.testing.assert_allclose(back.ctf.scale, scale, rtol=1e-9)
    np.testing.assert_allclose(read_cs(write_cs(tmp_path / "s.cs", scaled)).ctf.scale, scale)
    # The scale multiplies each particle's CTF.
    frequencies = torch.tensor([[0.01, 0.02], [0.05, -0.03]])
    rows = np.arange(len(original))
    ratio = scaled.transfer_function(rows)(frequencies) / original.transfer_function(rows)(
        frequencies
    )
    np.testing.assert_allclose(ratio.numpy(), np.repeat(scale[:, None], 2, 1), rtol=1e-5)


def test_a_ctf_scale_factor_that_is_not_positive_is_refused_with_its_row(tmp_path):
    blocks = starfile.read(RELION31, always_dict=True)
    blocks["particles"]["rlnCtfScalefactor"] = [1.0, 0.9, 0.0, 1.1, 1.0][: len(blocks["particles"])]
    path = write_table(tmp_path / "zero_scale.star", blocks)
    with pytest.raises(
        InputFileError, match=r"zero_scale.star.*rlnCtfScalefactor must be > 0, found 0 in row 3"
    ):
        read_star(path)
