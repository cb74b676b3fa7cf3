"""A finished (or running) reconstruction's model, loaded back for analysis.

The amortized stage's model is the encoder and the volume as they were at the switch
(``switch_state.pt``, :mod:`cryohydra.io.history`) or, for a run that never switched
(``--mode amortized`` / ``cryoai``), as they are in ``checkpoint.pt``. It is loaded into an
:class:`~cryohydra.inference.train.AbInitio` built from the run's own settings and input,
so the analyses use exactly the run's data pipeline, candidate poses and loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryohydra.geometry.sampling import so3_grid
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.pose_search import grid_errors
from cryohydra.inference.train import AbInitio
from cryohydra.io.errors import InputFileError
from cryohydra.io.history import EpochPoses, read_history
from cryohydra.io.particles import ParticleSet, random_half_split
from cryohydra.io.run_folder import CHECKPOINT_FILE, SWITCH_FILE, RunFolder

__all__ = ["AmortizedModel", "load_amortized_model"]


@dataclass
class AmortizedModel:
    """The run (encoder and volume of the amortized stage loaded), its particles with their
    true poses if known, the epoch the model is from, and the per-epoch poses."""

    run: AbInitio
    particles: ParticleSet
    epoch: int
    history: list[EpochPoses]
    description: dict

    @property
    def resolution_a(self) -> float:
        """The resolution the amortized stage compared images at."""
        return self.run.loss_resolution_a(self.epoch)

    @property
    def symmetry(self):
        value = self.description.get("symmetry", "C1")
        return np.asarray(value) if isinstance(value, list) else value

    @torch.no_grad()
    def head_poses(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Every candidate pose of the images ``rows``: rotations ``(B, C, 3, 3)`` and
        shifts ``(B, C, 2)`` Å."""
        assert self.run.encoder is not None
        self.run.encoder.eval()
        batch = self.run.data.load(np.asarray(rows))
        rotations, shifts = self.run.candidates(batch.images)
        if shifts is None:
            shifts = torch.zeros(*rotations.shape[:2], 2, device=rotations.device)
        return rotations, shifts

    @torch.no_grad()
    def best_head(self, rows: np.ndarray) -> np.ndarray:
        """Index of the winning candidate of each image."""
        rotations, shifts = self.head_poses(rows)
        batch = self.run.data.load(np.asarray(rows), self.run.loss_grid(self.epoch))
        errors = self.run.candidate_losses(batch, rotations, shifts)
        return errors.argmin(dim=1).cpu().numpy()

    @torch.no_grad()
    def losses(
        self, row: int, rotations: torch.Tensor, shift_a: torch.Tensor, chunk: int = 4096
    ) -> torch.Tensor:
        """The model's loss ``(G,)`` (squared error up to a constant, at the amortized stage's
        resolution) of image ``row`` in each of the poses ``rotations (G, 3, 3)`` with the
        in-plane shift ``shift_a (2,)``."""
        run = self.run
        batch = run.data.load(np.array([row]), run.loss_grid(self.epoch))
        spectra = batch.model.unshift(batch.spectra, shift_a[None])
        hartley = run.volume.hartley()
        out = []
        for part in torch.split(rotations.to(run.device, torch.float32), chunk):
            slices = run.volume.slices(part, batch.grid, hartley)
            out.append(grid_errors(slices, spectra, batch.transfer)[0])
        return torch.cat(out)

    def sphere_posterior(self, row: int, shift_a: torch.Tensor, nside: int) -> np.ndarray:
        """For each HEALPix pixel of viewing direction (order ``nside``), the best loss over
        ``6 nside`` in-plane angles (:func:`cryohydra.geometry.sampling.so3_grid`)."""
        grid = so3_grid(nside)
        losses = self.losses(row, grid, shift_a)
        return losses.reshape(12 * nside**2, 6 * nside).amin(dim=1).cpu().numpy()


def load_amortized_model(
    outdir: str | Path, datadir: str | Path | None = None, device: str = "cpu"
) -> AmortizedModel:
    """Load a run's amortized-stage model (half A's for a half-set run)."""
    folder = RunFolder.read(outdir)
    description = folder.description
    classes = description.get("config", {}).get("classes", 1)
    if classes > 1:
        raise InputFileError(
            Path(outdir),
            f"is a run of {classes} classes: the analyses of the amortized stage read one "
            "map and its heads, not yet several (docs/classes.md)",
        )
    run_dir = folder.first_run_dir
    snapshot_path = run_dir / SWITCH_FILE
    if snapshot_path.exists():
        state = torch.load(snapshot_path, map_location=device, weights_only=False)
    else:
        state = torch.load(run_dir / CHECKPOINT_FILE, map_location=device, weights_only=False)
        if state.get("encoder") is None:
            raise FileNotFoundError(
                f"{run_dir}: no {SWITCH_FILE} and the checkpoint has no encoder (a run from "
                "before cryohydra kept the model at the switch)"
            )
    particles = folder.read_input(datadir)
    if description.get("half_sets"):  # half A's particles
        particles = particles.subset(
            random_half_split(description["n_particles"], description["config"]["seed"])[0]
        )
    config = ReconstructConfig.from_dict(description["config"])
    run = AbInitio(particles.with_poses(None, None), config, device)
    run.volume.load_state_dict(state["volume"])
    assert run.encoder is not None
    run.encoder.load_state_dict(state["encoder"])
    return AmortizedModel(run, particles, int(state["epoch"]), read_history(run_dir), description)
