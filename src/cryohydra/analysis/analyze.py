"""``cryohydra analyze``: the three analyses of a run, as ``OUTDIR/analysis_*.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryohydra.analysis.figures import (
    all_candidates,
    plot_head_specialisation,
    plot_posteriors,
    plot_trajectories,
    posterior_maps,
)
from cryohydra.analysis.model import load_amortized_model

__all__ = ["ANALYSES", "analyze"]

ANALYSES = ("posterior", "heads", "trajectories")


def analyze(
    outdir: str | Path,
    rows: list[int] | None = None,
    analyses: tuple[str, ...] = ANALYSES,
    nside: int = 8,
    datadir: str | Path | None = None,
    device: str = "cpu",
    closeup_samples: int = 41,
    closeup_psi: int = 72,
) -> dict[str, Path]:
    """Make the requested analyses of the run in ``outdir``; returns ``name -> PNG``.

    ``rows``: the particles for the posterior and the trajectories (default: three spread over
    the set). ``nside``: HEALPix order of the posterior's viewing directions (``6 nside``
    in-plane angles each); the close-up is a ``closeup_samples``-square gnomonic grid times
    ``closeup_psi`` in-plane angles. The head specialisation needs true poses in the input
    and is skipped without.
    """
    outdir = Path(outdir)
    unknown = set(analyses) - set(ANALYSES)
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}; choose from {', '.join(ANALYSES)}")
    model = load_amortized_model(outdir, datadir=datadir, device=device)
    n = len(model.particles)
    rows = [int(r) for r in (rows if rows else np.linspace(0, n - 1, 3).astype(int))]
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise ValueError(f"particles {bad} are outside 0..{n - 1}")
    candidates = all_candidates(model)
    out: dict[str, Path] = {}
    maps = None
    if "posterior" in analyses or "trajectories" in analyses:
        maps = posterior_maps(model, candidates, rows, nside)
    if "posterior" in analyses:
        out["posterior"] = plot_posteriors(
            model,
            candidates,
            rows,
            maps,
            outdir / "analysis_posterior.png",
            closeup_samples=closeup_samples,
            closeup_psi=closeup_psi,
        )
    if "heads" in analyses and model.particles.has_poses:
        truth, _ = model.particles.require_poses()
        out["heads"] = plot_head_specialisation(
            candidates, truth, outdir / "analysis_head_specialisation.png", model.symmetry
        )
    if "trajectories" in analyses:
        out["trajectories"] = plot_trajectories(
            model, candidates, rows, maps, outdir / "analysis_trajectories.png"
        )
    return out
