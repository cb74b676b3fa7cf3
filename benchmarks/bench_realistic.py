"""Ab initio on realistic stacks (issue 24): coloured noise, junk, dark particles, uneven
contrast, 6 Å shifts, B = 100 Å^2, the CTF past the box (``datasets.realistic``).

Each set is run with its defaults for such a stack (``--invert-contrast``, ``--keep-best 0.8``:
the final map from the best-ranked 80 %) in four variants: the plain (white-noise) loss,
``--whiten``, ``--whiten --amplitude-scale``, and ``--amplitude-scale`` alone (what the
amplitudes buy without whitening). Scored on the molecule's particles only
(``cryohydraJunk`` 0): median and mean rotation error (modulo the molecule's group), and the
FSC 0.5 against the truth beside the known-pose map made from the molecule's particles
(acceptance: within 10 %); the ROC AUC for telling junk apart of what ``--keep-best`` ranks by
(acceptance: >= 0.9; the score alone, or with ``--amplitude-scale`` the score and the amplitude
together), beside the score's and the amplitudes', and the junk's share among the kept; the
amplitudes' correlation with the true contrast; training time.

Each run appends a row to ``results/realistic.json`` as it finishes (rows already there are
skipped: the benchmark resumes where it stopped; ``--again`` adds a row beside an old one). A
run cut short (the session ended) resumes from its last checkpoint; its row then says
``"resumed": true``, and its training time is the sum of its epochs' times in ``log.jsonl``
(every process's, the search and evaluation included) rather than this process's.

  python benchmarks/bench_realistic.py --models hsp90 --box 64 --particles 20000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from common import RESULTS, append_row, commit, logged_seconds, read_rows, unfinished_run
from cryohydra.inference.config import ReconstructConfig
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JUNK_COLUMN, JobOptions, run_job
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.metrics.reference import reference_fsc
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from datasets import realistic

PATH = RESULTS / "realistic.json"
WORK = RESULTS.parent / "work" / "realistic"
KEEP_BEST = 0.8
VARIANTS = {
    "white": {},
    "whitened": {"whiten": True},
    "whitened+scale": {"whiten": True, "amplitude_scale": True},
    "scale": {"amplitude_scale": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hsp90"])
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--particles", type=int, default=20_000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--again", action="store_true", help="run even where a row exists")
    parser.add_argument(
        "--note", default=None, help="recorded in each row (say what was done by hand, if any)"
    )
    args = parser.parse_args()
    code = commit()  # the code this process imported, even if a commit lands meanwhile
    for model in args.models:
        dataset = realistic(model, args.particles, args.box)
        particles = read_star(dataset.star)
        good = np.asarray(particles.extra_columns[JUNK_COLUMN]).astype(int) == 0
        true_rotations, _ = particles.require_poses()
        known = reconstruct_known_poses(
            particles.subset(np.nonzero(good)[0]), invert_contrast=True, progress=False
        )
        ceiling = reference_fsc(known.full.cpu(), dataset.ground_truth, known.pixel_size_a)
        for variant in args.variants:
            key = (dataset.name, variant)
            if not args.again and any((r["dataset"], r["variant"]) == key for r in read_rows(PATH)):
                continue
            outdir = WORK / f"{dataset.name}_{variant}"
            config = ReconstructConfig(invert_contrast=True, **VARIANTS[variant])
            resumed = not args.again and unfinished_run(outdir, config.epochs)
            started = time.perf_counter()
            summary = run_job(
                particles,
                config,
                JobOptions(
                    outdir,
                    reference_map=dataset.ground_truth,
                    symmetry=dataset.symmetry,
                    progress=False,
                    report=False,
                    force=not resumed,
                    resume=resumed,
                    keep_best=KEEP_BEST,
                ),
            )
            found = read_star(outdir / "particles.star")
            errors = pose_errors(
                found.rotations[good], true_rotations[good], symmetry=dataset.symmetry
            )
            scores = summary["particle_scores"]
            row = {
                "dataset": dataset.name,
                "variant": variant,
                "particles": len(particles),
                "molecules": int(good.sum()),
                "median_rotation_error_deg": errors.median_rotation_error_deg,
                "mean_rotation_error_deg": errors.mean_rotation_error_deg,
                "within_5deg": float(np.mean(errors.rotation_error_deg < 5)),
                "fsc_0.5_vs_truth_a": summary["resolution_vs_reference_a_0.5"],
                "known_pose_fsc_0.5_a": ceiling,
                "within_10_percent": summary["resolution_vs_reference_a_0.5"] <= 1.1 * ceiling,
                "ranked_by": scores.get("ranked_by"),
                "ranking_junk_roc_auc": scores.get("ranking_junk_roc_auc"),
                "junk_roc_auc": scores.get("junk_roc_auc"),
                "amplitude_junk_roc_auc": scores.get("amplitude_junk_roc_auc"),
                "junk_in_kept": scores.get("junk_in_kept"),
                "amplitude_correlation": summary.get("amplitude_scale", {}).get(
                    "correlation_with_truth"
                ),
                "warnings": summary.get("warnings"),
                "training_min": (logged_seconds(outdir) if resumed else summary["training_seconds"])
                / 60,
                "resumed": resumed,
                "total_min": (time.perf_counter() - started) / 60,
                "commit": code,
                "note": args.note,
            }
            append_row(PATH, row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
