"""`make demo`'s program on a tiny set: simulate, ab-initio reconstruction, known-pose ceiling."""

import json

import pytest

from cryohydra.demo import MARKER, main


def test_demo_runs_end_to_end_and_keeps_foreign_folders(tmp_path, capsys):
    outdir = tmp_path / "demo"
    # 160 particles and 2 epochs cannot reach the known-pose map: the demo must say so
    # (exit status 1, "FAILED", the convergence warnings), not end as if it had worked.
    tiny = ["-n", "160", "--epochs", "2", "--starts", "2", "--device", "cpu"]
    assert main(["--outdir", str(outdir), *tiny]) == 1
    printed = capsys.readouterr().out
    assert "FAILED: the ab-initio map is not within 10 %" in printed
    report = json.loads((outdir / "report.json").read_text())
    assert report["reached_known_pose_map"] is False
    assert isinstance(report["warnings"], list)
    # Measured: the map from the true poses of these 160 particles reaches 9.20 Å against the
    # truth (Nyquist 7 Å); the 2-epoch ab initio 41.8 Å, median error 98 degrees. The verdict
    # follows the numbers.
    known = report["known_pose_resolution_vs_truth_a_05"]
    assert report["nyquist_a"] <= known < 10.5
    assert report["resolution_vs_truth_a_05"] > 1.10 * known
    assert len(report["starts"]["starts"]) == 2 and "starts: losses" in printed
    recon = outdir / "reconstruction"
    for name in (
        "map.mrc",
        "half_map_a.mrc",
        "particles.star",
        "fsc.png",
        "log.jsonl",
        "report.html",
    ):
        assert (recon / name).stat().st_size > 0
    assert str(recon / "map.mrc") in printed
    assert (outdir / MARKER).exists()
    # Running again replaces the demo's own folder; a folder it did not make is refused.
    again = ["-n", "160", "--epochs", "1", "--starts", "1", "--device", "cpu"]
    assert main(["--outdir", str(outdir), *again]) == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not made by the demo"):
        main(["--outdir", str(foreign), "-n", "160", "--epochs", "1"])
    assert (foreign / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_the_demo_reaches_its_known_pose_map(tmp_path, capsys):
    """``make demo`` as a user runs it (6,000 particles, 20 epochs, 3 starts; about a quarter
    of an hour on two cores): the ab-initio map within 10 % of the known-pose map, the poses
    still at the end. (The search at the switch may not settle in a run that ends well: on
    this set both seeds that succeeded with one start warned so; docs/reconstruct.md.)"""
    outdir = tmp_path / "demo"
    assert main(["--outdir", str(outdir), "--device", "cpu"]) == 0
    report = json.loads((outdir / "report.json").read_text())
    assert report["reached_known_pose_map"]
    assert report["median_rotation_error_deg"] < 3.0
    assert {w["code"] for w in report["warnings"]} <= {"search_not_settled"}
    assert "Success" in capsys.readouterr().out
