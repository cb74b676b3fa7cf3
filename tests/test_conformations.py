"""The second conformation of the classes benchmark (``benchmarks/datasets.py``, ``hinged``):
one domain turned about its hinge by the angle asked, nothing else moved."""

from __future__ import annotations

import sys
from pathlib import Path

import gemmi
import numpy as np

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from datasets import HSP90_MD_FIRST, HSP90_MD_LAST, HSP90_NTD_LAST, MODELS, hinged  # noqa: E402

sys.path.remove(str(BENCHMARKS))


def _cas(path: Path, chain: str, first: int, last: int) -> np.ndarray:
    model = gemmi.read_structure(str(path))[0]
    return np.array(
        [
            r["CA"][0].pos.tolist()
            for r in model[chain]
            if first <= r.seqid.num <= last and r.find_atom("CA", "*")
        ]
    )


def test_one_domain_turns_by_the_angle_about_its_hinge(tmp_path):
    source, out = MODELS["hsp90"][0], tmp_path / "hinged.pdb"
    done = hinged(source, out, "A", HSP90_NTD_LAST, (HSP90_MD_FIRST, HSP90_MD_LAST), 20.0)
    before, after = _cas(source, "A", 1, HSP90_NTD_LAST), _cas(out, "A", 1, HSP90_NTD_LAST)
    fit = gemmi.superpose_positions(
        [gemmi.Position(*p) for p in after], [gemmi.Position(*p) for p in before]
    )
    rotation = np.array(fit.transform.mat.tolist())
    angle = np.degrees(np.arccos((np.trace(rotation) - 1) / 2))
    assert abs(angle - 20.0) < 0.01 and fit.rmsd < 1e-3  # a rigid turn by 20 degrees
    hinge = np.array(done["hinge_a"])
    assert np.allclose(rotation @ (before - hinge).T + hinge[:, None], after.T, atol=1e-2)
    for chain, first, last in (("A", HSP90_MD_FIRST, 677), ("B", 1, 677)):
        assert np.allclose(_cas(source, chain, first, last), _cas(out, chain, first, last))
