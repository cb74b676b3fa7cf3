"""What ``--keep-best`` should rank by, from one realistic run's poses (issue 24).

A run of ``bench_realistic.py`` leaves ``particles.star``: each particle's pose, score
(``cryohydraScore``) and estimated amplitude (``rlnCtfScalefactor``). This benchmark ranks the
particles by the score, by the amplitude and by the worse of the two ranks
(:func:`cryohydra.jobs.abinitio.keep_ranking`, what ``--keep-best`` does with
``--amplitude-scale``), keeps the best 80 % of each ranking, and backprojects them from the
run's poses over several random half-splits (the split moves the FSC 0.5 crossing: the curve
against the truth is flat near 0.5 at this resolution). Each row: the ranking's ROC AUC for
telling junk apart (``cryohydraJunk``), the junk's share and the share of molecules more than
10 degrees off among the kept, the FSC 0.5 against the truth for each split with its mean and
median, and the known-pose map of the molecules beside it. Rows go to ``results/keep.json``
(``--again`` adds rows beside old ones; otherwise a rule already there is skipped).

  python benchmarks/bench_keep.py --variant whitened+scale
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench_realistic import KEEP_BEST, VARIANTS, WORK
from bench_realistic import PATH as REALISTIC
from common import RESULTS, append_row, commit, read_rows
from cryohydra.io.run_folder import PARTICLES_FILE, SUMMARY_FILE
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JUNK_COLUMN, SCORE_COLUMN, _kept, keep_ranking
from cryohydra.metrics.classification import roc_auc
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.metrics.reference import reference_fsc
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from datasets import realistic

PATH = RESULTS / "keep.json"
WRONG_DEG = 10.0
RULES = {
    "score": lambda scores, amplitudes: keep_ranking(scores, None),
    "amplitude": lambda scores, amplitudes: keep_ranking(amplitudes, None),
    "worse of the two ranks": keep_ranking,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hsp90")
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--particles", type=int, default=20_000)
    estimated = [v for v, settings in VARIANTS.items() if settings.get("amplitude_scale")]
    parser.add_argument("--variant", default="whitened+scale", choices=estimated)
    parser.add_argument("--splits", type=int, default=4, help="random half-splits (seeds)")
    parser.add_argument("--again", action="store_true")
    args = parser.parse_args()
    code = commit()
    dataset = realistic(args.model, args.particles, args.box)
    run = WORK / f"{dataset.name}_{args.variant}"
    truth = read_star(dataset.star)
    found = read_star(run / PARTICLES_FILE)
    junk = np.asarray(truth.extra_columns[JUNK_COLUMN]).astype(int) == 1
    errors = pose_errors(found.rotations, truth.rotations, symmetry=dataset.symmetry)
    wrong = ~junk & (errors.rotation_error_deg > WRONG_DEG)
    scores = np.asarray(found.extra_columns[SCORE_COLUMN], dtype=np.float64)
    amplitudes = found.require_ctf().scale
    if np.all(amplitudes == amplitudes[0]):
        raise SystemExit(f"{run}: the run estimated no amplitudes (run it with --amplitude-scale)")
    known = reconstruct_known_poses(
        truth.subset(np.nonzero(~junk)[0]), invert_contrast=True, progress=False
    )
    ceiling = reference_fsc(known.full.cpu(), dataset.ground_truth, known.pixel_size_a)
    runs = [
        r
        for r in read_rows(REALISTIC)
        if (r["dataset"], r["variant"]) == (dataset.name, args.variant)
    ]
    for rule, rank in RULES.items():
        key = (dataset.name, args.variant, rule)
        done = [(r["dataset"], r["variant"], r["rule"]) for r in read_rows(PATH)]
        if not args.again and key in done:
            continue
        started = time.perf_counter()
        ranking = rank(scores, amplitudes)
        kept = _kept(ranking, KEEP_BEST, scores)
        chosen = found.subset(kept)
        fsc = []
        for seed in range(args.splits):
            result = reconstruct_known_poses(
                chosen, seed=seed, invert_contrast=True, progress=False
            )
            fsc.append(reference_fsc(result.full.cpu(), dataset.ground_truth, result.pixel_size_a))
        row = {
            "dataset": dataset.name,
            "variant": args.variant,
            "rule": rule,
            "kept": len(kept),
            "junk_roc_auc": roc_auc(ranking, ~junk),
            "junk_in_kept": float(junk[kept].mean()),
            f"over_{WRONG_DEG:g}deg_in_kept": float(wrong[kept].mean()),
            "fsc_0.5_vs_truth_a": fsc,
            "fsc_mean_a": float(np.mean(fsc)),
            "fsc_median_a": float(np.median(fsc)),
            "known_pose_fsc_0.5_a": ceiling,
            "seconds": time.perf_counter() - started,
            "run_finished": time.strftime(
                "%Y-%m-%d %H:%M", time.localtime((run / SUMMARY_FILE).stat().st_mtime)
            ),
            "run_commit": runs[-1]["commit"] if runs else None,
            "commit": code,
        }
        append_row(PATH, row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
