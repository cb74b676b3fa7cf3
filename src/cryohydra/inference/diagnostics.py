"""Did an ab-initio run converge? Checks that need no ground truth, from what a run records.

A run that went wrong must say so: :func:`convergence_warnings` reads the per-epoch log of a
run (``log.jsonl`` records) and its final half-map FSC, and returns one warning per sign of
trouble, each with what to try. ``cryohydra reconstruct`` prints them, writes them to
``summary.json`` (``"warnings"``) and to the top of ``report.html``; the demo and the
benchmarks list them too.

The signs, and the measurements behind their thresholds (``docs/reconstruct.md``, "When a
run fails"; the demo's set, 6UO9, 6,000 particles, 64 px, 3.5 Å/px, SNR 0.1):

* ``search_not_settled``: the global pose search at the switch stopped at its round limit
  with more than ``search_converged`` of the images still moving (the demo run that failed
  on a fresh clone: 8.9 % after 10 rounds; one that ended at a median of 2.0 degrees here:
  11.5 %, so this sign also fires on runs that auto-decoding rescues).
* ``poses_still_moving``: in the last auto-decoding epoch more than :data:`MOVING_LIMIT` of
  the particles turned by more than 5 degrees (that successful run: 80 % in its first
  auto-decoding epoch, 4.7-6.8 % in its last epochs, 15.8 % in an epoch after the symmetry
  check had moved 14 % of them to their mate poses).
* ``half_maps_disagree``: the half-maps' FSC falls below 0.143 at a resolution coarser than
  :data:`HALF_MAP_LIMIT` times Nyquist. A weak sign, for gross failures only: the halves share
  one run's poses, and on the demo's set even the encoder's poses at the switch, 102 degrees
  off the truth, gave half-maps agreeing to 8.1 Å (Nyquist 7.0 Å; the true poses: 7.0 Å),
  noise aligned to the same wrong model. Only independent runs (``--half-sets``) tell. Where
  the noise, not the pixel, limits the map, a good run sits well short of Nyquist: the
  realistic 128 px HSP90 set (20,000 particles, median error 1.6 degrees, 4.23 Å against the
  truth where the true poses give 4.01 Å) had half-maps at 3.77 Å, 1.51 times Nyquist, which
  the limit of 1.5 used until 2026-12-07 called a failure; hence 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["HALF_MAP_LIMIT", "MOVING_LIMIT", "Warning_", "convergence_warnings"]

MOVING_LIMIT = 0.10
HALF_MAP_LIMIT = 2.0
_ADVICE = (
    "several starts, keeping the one that explains the images best (--starts 3), or another "
    "--seed, or more particles; a later switch (--switch N) or --half-sets (two independent "
    "runs whose agreement is the gold standard) also help"
)


@dataclass(frozen=True)
class Warning_:
    """One sign that a run did not converge: a stable ``code``, what was seen, what to try."""

    code: str
    message: str
    advice: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.message} Try: {self.advice}."


def _search_warning(records: list[dict]) -> Warning_ | None:
    for record in records:
        search = record.get("pose_search")
        if search is None or search.get("settled", True):
            continue
        changed = search["changed"]
        moves = f"{100 * changed[-1]:.1f} % of the images still changed pose"
        if "class_changed" in search:  # --classes: poses within a class, and classes
            moves = (
                f"{100 * changed[-1]:.1f} % of the images still changed pose in their class and "
                f"{100 * search['class_changed'][-1]:.1f} % of the images changed class"
            )
        return Warning_(
            "search_not_settled",
            f"the global pose search at the switch (epoch {record['epoch']}) did not settle: "
            f"{moves} in its last round (round {len(changed)}).",
            "more rounds (--search-rounds), or " + _ADVICE,
        )
    return None


def _moving_warning(records: list[dict]) -> Warning_ | None:
    refined = [r for r in records if r.get("moved_over_5deg") is not None]
    if not refined or refined[-1]["moved_over_5deg"] <= MOVING_LIMIT:
        return None
    last = refined[-1]
    return Warning_(
        "poses_still_moving",
        f"in the last epoch ({last['epoch']}) {100 * last['moved_over_5deg']:.1f} % of the "
        "particles turned by more than 5 degrees: the poses have not converged.",
        "more epochs (--epochs), or " + _ADVICE,
    )


def _half_map_warning(half_map_resolution_a: float | None, nyquist_a: float) -> Warning_ | None:
    if half_map_resolution_a is None or half_map_resolution_a <= HALF_MAP_LIMIT * nyquist_a:
        return None
    return Warning_(
        "half_maps_disagree",
        f"the half-maps agree only to {half_map_resolution_a:.1f} Å (FSC 0.143), far from "
        f"Nyquist ({nyquist_a:.1f} Å), although they share one run's poses.",
        _ADVICE,
    )


def convergence_warnings(
    runs: list[list[dict]], half_map_resolution_a: float | None, nyquist_a: float
) -> list[Warning_]:
    """Warnings for a finished job: ``runs`` holds the log records of each run (one, or two
    with half-sets), the final map's half-map FSC 0.143 resolution and Nyquist, in Å."""
    found: list[Warning_] = []
    for records in runs:
        for check in (_search_warning, _moving_warning):
            warning = check(records)
            if warning is not None and warning.code not in {w.code for w in found}:
                found.append(warning)
    half = _half_map_warning(half_map_resolution_a, nyquist_a)
    if half is not None:
        found.append(half)
    return found
