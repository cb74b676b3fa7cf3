"""Image stacks behind a particle set: bad stacks are reported naming the file."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryohydra.io.errors import InputFileError
from cryohydra.io.mrc import open_stack
from cryohydra.io.read import read_particles
from cryohydra.io.star import read_star

DATA = Path(__file__).resolve().parents[1] / "data"
RELION31_DIR = DATA / "relion31_5"
ASPIRE_STACK = DATA / "aspire_sample17" / "sample.mrcs"


def tiny_stack(path: Path, images: np.ndarray, pixel_size_a: float = 2.0) -> Path:
    with warnings.catch_warnings(), mrcfile.new(path) as mrc:
        warnings.simplefilter("ignore", RuntimeWarning)  # "Data array contains NaN values"
        mrc.set_data(images.astype(np.float32))
        mrc.voxel_size = pixel_size_a
    return path


def star_for(path: Path, names: list[str], **columns) -> Path:
    """A minimal RELION 3.0 STAR file naming ``names``, plus any extra ``columns``."""
    starfile.write(pd.DataFrame({"rlnImageName": names, **columns}), path)
    return path


# ----------------------------------------------------------------------------------------------
# Fixtures load
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stack, shape",
    [
        (RELION31_DIR / "relion31.mrcs", (5, 256, 256)),
        (DATA / "empiar10076_7" / "empiar_10076_7.mrc", (7, 320, 320)),
        (ASPIRE_STACK, (17, 200, 200)),
    ],
    ids=lambda x: getattr(x, "name", ""),
)
def test_fixture_stacks_open(stack, shape):
    # relion31.mrcs has no 'MAP ' ID string and no machine stamp; it must still open.
    mrc = open_stack(stack)
    try:
        assert mrc.data.shape == shape
        assert np.isfinite(mrc.data[0]).all() and mrc.data[0].std() > 0
    finally:
        mrc.close()


def test_read_particles_dispatches_on_suffix():
    star = read_particles(RELION31_DIR / "relion31.star")
    cs = read_particles(DATA / "metadata" / "cryosparc_P12_J24_001_particles.cs")
    assert len(star) == 5 and len(cs) == 2019


def test_ctf_table_fixture_loads():
    table = np.load(DATA / "metadata" / "empiar10028_ctf.npy")
    assert table.shape == (105247, 9)
    # box, pixel size, defocus U, defocus V, angle (deg), kV, Cs, amplitude contrast, phase.
    np.testing.assert_allclose(table[0, :2], [360, 1.34], rtol=1e-6)
    np.testing.assert_allclose(table[0, 2:4], [23344.70, 23445.95], rtol=1e-6)
    np.testing.assert_allclose(table[0, 5:9], [300, 2.0, 0.1, 0.0], rtol=1e-6)


def test_subset_and_pickle_keep_everything():
    p = read_star(RELION31_DIR / "relion31.star")
    images = p.load_images()
    sub = p.subset(np.array([4, 1]))
    np.testing.assert_array_equal(sub.load_images(), images[[4, 1]])
    np.testing.assert_array_equal(sub.rotations, p.rotations[[4, 1]])
    clone = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(clone.load_images([2]), images[[2]])
    p.close()


# ----------------------------------------------------------------------------------------------
# Bad stacks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, box", [(RELION31_DIR / "relion31.mrcs", 256), (ASPIRE_STACK, 200)], ids=["no-ID", "ID"]
)
def test_truncated_stack(source, box, tmp_path):
    stack = source.name
    (tmp_path / stack).write_bytes(source.read_bytes()[:-5000])
    star = star_for(tmp_path / "cut.star", [f"1@{stack}", f"2@{stack}"], rlnImagePixelSize=1.5)
    p = read_star(star)  # the header is intact, so reading the metadata works
    assert p.box_size == box
    with pytest.raises(InputFileError, match=stack) as err:
        p.load_images()
    assert "truncated" in str(err.value)


def test_index_past_end_of_stack(tmp_path):
    shutil.copy(RELION31_DIR / "relion31.mrcs", tmp_path)
    star = star_for(tmp_path / "toofar.star", ["1@relion31.mrcs", "6@relion31.mrcs"])
    p = read_particles(star)
    with pytest.raises(InputFileError, match=r"relion31.mrcs.*holds 5 images.*toofar.star.*6"):
        p.load_images()
    with pytest.raises(InputFileError, match=r"relion31.mrcs.*toofar.star"):
        p.check_images()
    assert p.load_images([0]).shape == (1, 256, 256)


def test_missing_stack_names_star(tmp_path):
    star = star_for(tmp_path / "ghost.star", ["1@nowhere/ghost.mrcs"], rlnImagePixelSize=1.0)
    p = read_particles(star)
    assert p.box_size is None
    with pytest.raises(InputFileError, match=r"ghost.star.*ghost.mrcs.*does not exist"):
        p.load_images()


def test_image_with_nan(tmp_path):
    images = np.random.default_rng(0).normal(size=(3, 8, 8))
    images[1, 4, 5] = np.nan
    tiny_stack(tmp_path / "nan.mrcs", images)
    star = star_for(tmp_path / "nan.star", ["1@nan.mrcs", "2@nan.mrcs", "3@nan.mrcs"])
    p = read_particles(star)
    np.testing.assert_allclose(p.pixel_size_a, 2.0)
    assert p.box_size == 8
    np.testing.assert_allclose(p.load_images([0, 2]), images[[0, 2]], rtol=1e-6)
    with pytest.raises(InputFileError, match=r"nan.mrcs.*image 2 .*NaN"):
        p.load_images()


def test_non_square_stack(tmp_path):
    tiny_stack(tmp_path / "wide.mrcs", np.zeros((2, 8, 10)))
    star = star_for(tmp_path / "wide.star", ["1@wide.mrcs"])
    p = read_particles(star)
    with pytest.raises(InputFileError, match=r"wide.mrcs.*not square"):
        p.load_images()


def test_box_size_disagrees_with_stack(tmp_path):
    shutil.copy(RELION31_DIR / "relion31.mrcs", tmp_path)
    blocks = starfile.read(RELION31_DIR / "relion31.star", always_dict=True)
    blocks["optics"]["rlnImageSize"] = 128
    starfile.write(blocks, tmp_path / "small.star")
    p = read_particles(tmp_path / "small.star")
    assert p.box_size == 128
    with pytest.raises(InputFileError, match=r"relion31.mrcs.*256 px.*small.star.*128"):
        p.load_images()


def test_not_an_mrc_file(tmp_path):
    (tmp_path / "junk.mrcs").write_bytes(b"\x00" * 100)
    star = star_for(tmp_path / "junk.star", ["1@junk.mrcs"], rlnImagePixelSize=1.0)
    p = read_particles(star)
    with pytest.raises(InputFileError, match="junk.mrcs"):
        p.load_images()


@pytest.mark.parametrize("name", ["particles.txt", "particles.mrcs", "particles"])
def test_unsupported_suffix(name, tmp_path):
    path = tmp_path / name
    path.write_text("whatever\n")
    with pytest.raises(InputFileError, match=rf"{name}.*unsupported"):
        read_particles(path)


def test_input_errors_survive_pickling():
    """Errors cross process boundaries (torchrun ranks, DataLoader workers) intact."""
    import pickle

    from cryohydra.io.errors import InputFileError, OutputExistsError

    error = pickle.loads(pickle.dumps(InputFileError("/data/x.star", "has no optics block")))
    assert str(error) == "/data/x.star: has no optics block" and error.problem
    assert "already exists" in str(pickle.loads(pickle.dumps(OutputExistsError("/o/map.mrc"))))
