"""cryoSPARC .cs reading and writing, checked against values read by eye from the fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cryohydra.io.cryosparc import read_cs, write_cs
from cryohydra.io.errors import InputFileError, OutputExistsError
from cryohydra.io.particles import ParticleSet
from cryohydra.io.star import read_star, write_star

DATA = Path(__file__).resolve().parents[1] / "data"
P12 = DATA / "metadata" / "cryosparc_P12_J24_001_particles.cs"
J2 = DATA / "metadata" / "cryosparc_J2_particles_exported.cs"
EMPIAR_CS = DATA / "empiar10076_7" / "empiar_10076_7.cs"
EMPIAR_STAR = DATA / "empiar10076_7" / "empiar_10076_7.star"
RELION31 = DATA / "relion31_5" / "relion31.star"


def rodrigues(w: np.ndarray) -> np.ndarray:
    """exp([w]_x) by Rodrigues' formula (independent of the code under test)."""
    theta = np.linalg.norm(w)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / theta
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def assert_same_particles(a: ParticleSet, b: ParticleSet) -> None:
    """Same particles up to the float32 precision of .cs files."""
    assert len(a) == len(b)
    assert list(a.image_paths) == list(b.image_paths)
    np.testing.assert_array_equal(a.image_indices, b.image_indices)
    np.testing.assert_allclose(a.pixel_size_a, b.pixel_size_a, rtol=1e-6)
    assert a.box_size == b.box_size
    assert (a.ctf is None) == (b.ctf is None)
    if a.ctf is not None:
        for name, value in a.ctf.as_dict().items():
            np.testing.assert_allclose(b.ctf.as_dict()[name], value, rtol=1e-6, atol=1e-6)
    assert (a.rotations is None) == (b.rotations is None)
    if a.rotations is not None:
        assert np.abs(a.rotations - b.rotations).max() < 1e-6
        np.testing.assert_allclose(b.shifts_a, a.shifts_a, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Fixture values
# ----------------------------------------------------------------------------------------------


def test_p12_refinement_values():
    p = read_cs(P12)
    assert len(p) == 2019
    assert p.box_size == 180
    np.testing.assert_allclose(p.pixel_size_a, 2.95, rtol=1e-6)
    assert p.image_indices[0] == 0
    assert p.image_paths[0].endswith(
        "J19/extract/20150917_05196_DNA-TET-25k-DE20_raw.region_000.sum-all_003-072_particles.mrc"
    )
    assert p.ctf.defocus_u_a[0] == pytest.approx(45591.37, rel=1e-6)
    assert p.ctf.defocus_v_a[0] == pytest.approx(45309.793, rel=1e-6)
    assert p.ctf.astigmatism_angle_rad[0] == pytest.approx(-1.3636448, rel=1e-6)
    np.testing.assert_allclose(p.ctf.voltage_kv, 200.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 2.0)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.07, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.bfactor_a2, 0.0)  # no ctf/bfactor field
    # cryoSPARC's axis-angle vector is the inverse rotation: R = exp([e]_x)^T.
    expected = rodrigues(np.array([2.3386633, -0.25595567, -1.2236784])).T
    np.testing.assert_allclose(p.rotations[0], expected, atol=1e-6)
    np.testing.assert_allclose(p.shifts_a[0], np.array([11.334375, -1.828125]) * 2.95, rtol=1e-6)
    np.testing.assert_array_equal(np.unique(p.optics_group), [1])


def test_j2_has_ctf_but_no_3d_poses():
    p = read_cs(J2)
    assert len(p) == 22
    assert p.rotations is None and p.shifts_a is None
    assert p.box_size == 300
    np.testing.assert_allclose(p.pixel_size_a, 1.345, rtol=1e-6)
    assert p.ctf.defocus_u_a[0] == pytest.approx(16412.178, rel=1e-6)
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 2.7, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.1, rtol=1e-6)
    # '>J1/imported/...' is relative to the project folder: the '>' is dropped.
    assert ">" not in p.image_paths[0]
    assert p.image_paths[0].endswith(
        "metadata/J1/imported/000090334788266266069_18jam15b_0345_ali_DW.mrcs"
    )
    with pytest.raises(InputFileError, match="cryosparc_J2_particles_exported.cs"):
        p.require_poses()


def test_j2_stacks_found_in_datadir_by_base_name(tmp_path):
    name = "000090334788266266069_18jam15b_0345_ali_DW.mrcs"
    (tmp_path / name).write_bytes(b"")
    p = read_cs(J2, datadir=tmp_path)
    assert Path(p.image_paths[0]) == tmp_path / name


def test_empiar10076_cs_agrees_with_star():
    cs, star = read_cs(EMPIAR_CS), read_star(EMPIAR_STAR)
    assert len(cs) == len(star) == 7
    assert cs.box_size == star.box_size == 320
    np.testing.assert_allclose(cs.pixel_size_a, 5e4 / 38168, rtol=1e-6)
    np.testing.assert_allclose(cs.pixel_size_a, star.pixel_size_a, rtol=1e-6)
    assert cs.ctf.defocus_u_a[0] == pytest.approx(15301.1, rel=1e-7)
    assert cs.ctf.astigmatism_angle_rad[0] == pytest.approx(np.deg2rad(5.28), abs=1e-6)
    assert cs.ctf.astigmatism_angle_rad[0] == pytest.approx(0.092153385, abs=1e-6)
    for name, value in star.ctf.as_dict().items():
        np.testing.assert_allclose(cs.ctf.as_dict()[name], value, rtol=1e-6, atol=1e-6)
    assert cs.rotations is None
    assert list(cs.image_paths) == list(star.image_paths)
    np.testing.assert_array_equal(cs.image_indices, star.image_indices)
    np.testing.assert_array_equal(cs.load_images(), star.load_images())


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [P12, J2, EMPIAR_CS], ids=lambda s: s.name)
def test_cs_round_trip(source, tmp_path):
    original = read_cs(source)
    out = write_cs(tmp_path / "out.cs", original)
    assert out == tmp_path / "out.cs" and sorted(x.name for x in tmp_path.iterdir()) == ["out.cs"]
    assert_same_particles(original, read_cs(out))


def test_cs_round_trip_images_load_identically(tmp_path):
    original = read_cs(EMPIAR_CS)
    again = read_cs(write_cs(tmp_path / "deeper" / "copy.cs", original))
    np.testing.assert_array_equal(again.load_images(), original.load_images())


def test_star_to_cs_to_star(tmp_path):
    original = read_star(RELION31)
    via_cs = read_cs(write_cs(tmp_path / "a" / "mid.cs", original))
    back = read_star(write_star(tmp_path / "b" / "back.star", via_cs))
    for converted in (via_cs, back):
        assert_same_particles(original, converted)
    np.testing.assert_array_equal(back.load_images(), original.load_images())


def test_cs_to_star_to_cs(tmp_path):
    original = read_cs(P12)
    back = read_cs(
        write_cs(tmp_path / "back.cs", read_star(write_star(tmp_path / "mid.star", original)))
    )
    assert_same_particles(original, back)


def test_write_cs_refuses_to_overwrite(tmp_path):
    target = Path(shutil.copy(EMPIAR_CS, tmp_path / "exists.cs"))
    before = target.read_bytes()
    p = read_cs(P12)
    with pytest.raises(OutputExistsError, match="exists.cs"):
        write_cs(target, p)
    assert target.read_bytes() == before
    write_cs(target, p, force=True)
    assert len(read_cs(target)) == 2019


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def save_without(tmp_path: Path, source: Path, drop: list[str], name: str) -> Path:
    data = np.load(source)
    keep = [f for f in data.dtype.names if f not in drop]
    out = tmp_path / name
    with open(out, "wb") as handle:
        np.save(handle, data[keep])
    return out


def test_missing_blob_field(tmp_path):
    bad = save_without(tmp_path, P12, ["blob/psize_A"], "nopsize.cs")
    with pytest.raises(InputFileError, match="nopsize.cs.*blob/psize_A"):
        read_cs(bad)


def test_partial_ctf_fields(tmp_path):
    bad = save_without(tmp_path, P12, ["ctf/accel_kv"], "nokv.cs")
    with pytest.raises(InputFileError, match="nokv.cs.*ctf/accel_kv"):
        read_cs(bad)


def test_no_ctf_fields_means_no_ctf(tmp_path):
    fields = [f for f in np.load(EMPIAR_CS).dtype.names if f.startswith("ctf/")]
    p = read_cs(save_without(tmp_path, EMPIAR_CS, fields, "noctf.cs"))
    assert p.ctf is None and len(p) == 7


def test_nan_defocus(tmp_path):
    data = np.load(P12)
    data["ctf/df1_A"][5] = np.nan
    bad = tmp_path / "nan.cs"
    with open(bad, "wb") as handle:
        np.save(handle, data)
    with pytest.raises(InputFileError, match=r"nan.cs.*ctf/df1_A.*row 6"):
        read_cs(bad)


def test_not_a_cs_file(tmp_path):
    bad = tmp_path / "text.cs"
    bad.write_text("uid,path\n1,a.mrcs\n")
    with pytest.raises(InputFileError, match="text.cs"):
        read_cs(bad)


def test_missing_cs_file(tmp_path):
    with pytest.raises(InputFileError, match="absent.cs.*does not exist"):
        read_cs(tmp_path / "absent.cs")


def test_a_ctf_scale_that_is_not_positive_is_refused_with_its_row(tmp_path):
    data = np.load(P12)
    data["ctf/scale"][1] = -1.0
    path = tmp_path / "negative_scale.cs"
    with path.open("wb") as out:
        np.save(out, data)
    with pytest.raises(
        InputFileError, match=r"negative_scale.cs.*ctf/scale must be > 0, found -1 in row 2"
    ):
        read_cs(path)
