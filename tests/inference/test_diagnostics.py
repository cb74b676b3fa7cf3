"""Convergence warnings: each sign of a failed run is reported, a converged run has none."""

from cryohydra.inference.diagnostics import HALF_MAP_LIMIT, MOVING_LIMIT, convergence_warnings


def _records(settled: bool = True, moved: float = 0.01) -> list[dict]:
    search = {"changed": [1.0, 0.3, 0.09], "settled": settled, "sources": {}, "seconds": 1.0}
    return [
        {"epoch": 1, "stage": "amortized"},
        {"epoch": 2, "stage": "amortized", "switched": True, "pose_search": search},
        {"epoch": 3, "stage": "auto-decoding", "moved_over_5deg": 0.5},
        {"epoch": 4, "stage": "auto-decoding", "moved_over_5deg": moved},
    ]


def test_a_converged_run_has_no_warning():
    assert convergence_warnings([_records()], half_map_resolution_a=7.2, nyquist_a=7.0) == []
    # a good run whose map the noise limits: the realistic 128 px set's, 3.77 A at 2.5 A Nyquist
    assert convergence_warnings([_records()], half_map_resolution_a=3.77, nyquist_a=2.5) == []


def test_each_sign_of_trouble_is_reported_once_with_advice():
    warnings = convergence_warnings(
        [_records(settled=False, moved=MOVING_LIMIT + 0.01)] * 2,  # both half-set runs
        half_map_resolution_a=HALF_MAP_LIMIT * 7.0 + 0.1,
        nyquist_a=7.0,
    )
    assert [w.code for w in warnings] == [
        "search_not_settled",
        "poses_still_moving",
        "half_maps_disagree",
    ]
    assert "9.0 % of the images" in warnings[0].message and "epoch 2" in warnings[0].message
    assert all(w.advice and "Try:" in str(w) for w in warnings)


def test_a_class_search_that_did_not_settle_says_which_measure_moved():
    records = _records(settled=False)
    records[1]["pose_search"]["class_changed"] = [0.2, 0.05, 0.031]
    (warning,) = convergence_warnings([records], 7.0, 7.0)
    assert "9.0 % of the images still changed pose in their class" in warning.message
    assert "3.1 % of the images changed class" in warning.message


def test_only_the_last_epoch_counts_for_moving_poses_and_limits_are_inclusive():
    assert convergence_warnings([_records(moved=MOVING_LIMIT)], 7.0, 7.0) == []
    assert convergence_warnings([_records()], HALF_MAP_LIMIT * 7.0, 7.0) == []
    # a run from before these checks (no records of them) gives none either
    assert convergence_warnings([[{"epoch": 1, "stage": "amortized"}]], None, 7.0) == []
