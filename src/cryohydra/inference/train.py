"""The optimisation loop of ab-initio reconstruction (semi-amortized pose inference).

Stage 1, *amortized*: the encoder proposes ``M`` poses per image; all ``B x M`` projections of
the volume are compared with the images in one batched call and each image trains only its
winning head (winner-takes-all); the encoder and the volume take one Adam step per batch.

The switch: each particle's pose is set from its best head (one pass of the encoder in
evaluation mode), the encoder is dropped and the volume's learning rate lowered. It happens
after a fixed epoch or, with ``switch="auto"``, once the amortized stage has settled: from one
epoch to the next few images change winning head and the best poses barely move.

Global search at the switch (beyond the paper): a few rounds of projection matching on a grid
of SO(3) at the amortized stage's resolution, alternating with a known-pose reconstruction
(:mod:`~cryohydra.inference.pose_search`), starting from the encoder's map and shifts.

Stage 2, *auto-decoding*: for each batch, ``pose_steps`` Adam steps on each particle's own pose
(:class:`~cryohydra.models.pose_table.PoseTable`, volume held fixed), then one step on the
volume with the poses held fixed.

Frequency marching (beyond the paper): while poses are global the loss compares frequencies
only up to ``start_resolution_a`` and the encoder sees images cropped to ``encoder_box``;
after the switch the limit rises to ``max_resolution_a`` over ``march_epochs`` epochs
(:meth:`AbInitio.loss_resolution_a`).

Everything the loop needs to continue (volume, encoder, optimisers, the pose table, the switch
state, the epoch) is in :meth:`AbInitio.state_dict`, written after every epoch; the batch order
of an epoch depends only on ``(seed, epoch)``, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cryohydra.geometry.rotations import geodesic_distance
from cryohydra.geometry.symmetry import point_group
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.distributed import Context, shard_batches, shard_rows
from cryohydra.inference.frames import poses_into_reference_frame
from cryohydra.inference.objective import (
    candidate_errors,
    winner_takes_all,
)
from cryohydra.inference.pose_search import (
    SCALE_LIMITS,
    class_projection_matching,
    known_pose_map,
    normalised_amplitudes,
    projection_matching,
)
from cryohydra.io.batches import Batch, ParticleBatches, epoch_batches
from cryohydra.io.particles import ParticleSet
from cryohydra.metrics.map_alignment import self_alignment
from cryohydra.metrics.symmetry import standard_orientation
from cryohydra.models.encoder import PoseEncoder
from cryohydra.models.pose_table import PoseTable
from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.fourier import fourier_crop_2d
from cryohydra.physics.masks import soft_spherical_mask
from cryohydra.physics.projector import SliceGrid

__all__ = [
    "AMORTIZED",
    "AUTO_DECODING",
    "MASK_EDGE_PX",
    "MIN_CLASS_FRACTION",
    "SCALE_LIMITS",
    "AbInitio",
    "volume_mask",
]

AMORTIZED, AUTO_DECODING = "amortized", "auto-decoding"
_INIT_SAMPLE = 512
MASK_EDGE_PX = 3.0
# A class holding less than this fraction of the particles after an epoch is re-seeded
# (``--classes``): from the worst-fitting half of the largest class.
MIN_CLASS_FRACTION = 0.02


def volume_mask(diameter_a: float, box_size: int, pixel_size_a: float) -> torch.Tensor:
    """The learned volume's soft spherical mask ``(L, L, L)``: 1 within ``diameter_a / 2``
    (Å, at ``pixel_size_a`` Å/px), a raised-cosine edge of ``MASK_EDGE_PX`` pixels beyond it.
    A ValueError when that does not fit in the box."""
    radius_px = diameter_a / 2 / pixel_size_a
    if radius_px + MASK_EDGE_PX > box_size / 2:
        largest = 2 * (box_size / 2 - MASK_EDGE_PX) * pixel_size_a
        raise ValueError(
            f"a mask of diameter {diameter_a:g} A does not fit in the box of {box_size} px at "
            f"{pixel_size_a:.3f} A/px with its {MASK_EDGE_PX:g} px soft edge (at most "
            f"{largest:.1f} A)"
        )
    return soft_spherical_mask(box_size, radius_px, MASK_EDGE_PX)


class AbInitio:
    """One ab-initio run on a particle set: the model, its optimisers and the pose table.

    Args:
        particles: images with CTF (poses, if present, are only used to report errors).
        config: the settings.
        device: where the work runs.
        evaluate: optional callback ``(run) -> dict`` adding metrics to each epoch's record
            (pose error, FSC against a known map).
        context: the rank of this process in a ``torchrun`` run
            (:mod:`~cryohydra.inference.distributed`): it then trains on its shard of the
            particles, with the encoder and volume in ``DistributedDataParallel``; the pose
            table holds the shard's rows (:meth:`poses` and :meth:`state_dict` gather them).
        workers: DataLoader processes reading the training batches ahead (0: read in turn).
    """

    def __init__(
        self,
        particles: ParticleSet,
        config: ReconstructConfig,
        device: str | torch.device = "cpu",
        evaluate: Callable[[AbInitio], dict] | None = None,
        context: Context | None = None,
        workers: int = 0,
    ) -> None:
        self.config = config
        self.workers = workers
        self.device = torch.device(device)
        self.context = context or Context()
        self.n_total = len(particles)
        self.shard = shard_rows(self.n_total, self.context)
        self.check(particles, config)
        # The image scale and the noise spectra come from the whole set (every rank reads the
        # same sample of it), so a rank's data do not depend on the number of ranks.
        self.data = ParticleBatches(
            particles,
            working_box=config.working_box,
            max_resolution_a=config.max_resolution_a,
            invert_contrast=config.invert_contrast,
            whiten=config.whiten,
            device=self.device,
        )
        if self.context.active:
            particles = particles.subset(self.shard)
            self.data = self.data.shard(self.shard)
        self.particles = particles
        self.evaluate = evaluate
        box = self.data.working_box
        self.encoder_box = min(config.encoder_box or box, box)
        n = len(particles)
        generator = torch.Generator().manual_seed(config.seed)
        sample = self.data.load(np.arange(min(n, _INIT_SAMPLE)))
        amplitude = HartleyVolume.amplitude_from_spectra(sample.spectra, self.data.grid)
        group = point_group(config.symmetry)
        # An imposed group (more than the identity): from the switch on, about the axes found
        # on the map of the switch's search (:meth:`into_group_frame`); from the start in a
        # mode without a switch.
        self.group = group.to(torch.float32) if len(group) > 1 else None
        mask = (
            None
            if config.mask_diameter_a is None
            else volume_mask(config.mask_diameter_a, box, self.data.pixel_size_a)
        )
        # One map per class (``--classes``), each from the same generator in turn.
        self.n_classes = config.classes
        self.volumes = nn.ModuleList(
            HartleyVolume(
                box,
                amplitude.cpu(),
                generator=generator,
                symmetry=self.group if config.amortized_only else None,
                mask=mask,
            )
            for _ in range(self.n_classes)
        ).to(self.device)
        self.volume_optimizer = torch.optim.Adam(self.volumes.parameters(), lr=config.volume_lr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.encoder: PoseEncoder | None = PoseEncoder(
                self.encoder_box,
                self.data.pixel_size_a * box / self.encoder_box,
                config.heads * self.n_classes,
                backbone=config.backbone,
                max_shift_a=config.max_shift_a,
                bf16=config.encoder_bf16,
            ).to(self.device)
        self.encoder_optimizer: torch.optim.Optimizer | None = torch.optim.Adam(
            self.encoder.parameters(), lr=config.encoder_lr
        )
        # Training steps go through these: DistributedDataParallel in a torchrun run (it
        # broadcasts rank 0's parameters now and all-reduces the gradients), else the modules.
        self._train_volumes = [self._parallel(volume) for volume in self.volumes]
        self._train_encoder = self._parallel(self.encoder)
        self.seen = torch.zeros(n, dtype=torch.bool)  # rows of the shard trained on
        # The pose table holds a pose per particle and class: row ``i K + k`` is particle
        # ``i``'s pose in class ``k`` (``K = 1``: row ``i``).
        k = self.n_classes
        eye = torch.eye(3, device=self.device).expand(n * k, 3, 3)
        self.table = PoseTable.create(
            eye,
            torch.zeros(n * k, 2, device=self.device),
            config.pose_lr_rad,
            config.pose_lr_shift_a,
        )
        self.winners = torch.full((n,), -1, dtype=torch.int64, device=self.device)
        self.classes = torch.zeros(n, dtype=torch.int64, device=self.device)
        # Each particle's loss at its last visit (under its class's map): what re-seeding ranks.
        self.fit_losses = torch.zeros(n, device=self.device)
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self.epoch = 0
        self.stage = AMORTIZED
        self.switch_epoch: int | None = None
        # The encoder and volume as they were at the switch (before the search replaced the
        # volume): kept for the analyses of the amortized stage, written once by the job.
        self.switch_snapshot: dict | None = None

    @staticmethod
    def check(particles: ParticleSet, config: ReconstructConfig) -> None:
        """A ValueError for settings these particles cannot have (before any work): an
        amplitude scale without a CTF, a mask larger than the box."""
        if config.amplitude_scale and particles.ctf is None:
            raise ValueError(
                f"{particles.source}: --amplitude-scale needs the particles' CTF (the scale "
                "multiplies it)"
            )
        if config.mask_diameter_a is not None:
            box = particles.box_size or particles.load_images([0]).shape[-1]
            working = config.working_box or box
            pixel_a = float(particles.pixel_size_a[0]) * box / working
            volume_mask(config.mask_diameter_a, working, pixel_a)

    @property
    def volume(self) -> HartleyVolume:
        """The first class's map (the only one without ``--classes``)."""
        return self.volumes[0]

    def _class_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` rows of the pose table holding particles ``rows``' pose in each class."""
        k = self.n_classes
        return rows[:, None] * k + torch.arange(k, device=rows.device)

    def _own_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``(B,)`` rows of the pose table holding particles ``rows``' pose in their class."""
        return rows * self.n_classes + self.classes[rows]

    def own_rotations(self) -> torch.Tensor:
        """``(n, 3, 3)`` this rank's particles' rotations in their class."""
        return self.table.rotations.view(-1, self.n_classes, 3, 3)[
            torch.arange(len(self.classes), device=self.device), self.classes
        ]

    def own_shifts(self) -> torch.Tensor:
        """``(n, 2)`` Å this rank's particles' shifts in their class."""
        return self.table.shifts_a.view(-1, self.n_classes, 2)[
            torch.arange(len(self.classes), device=self.device), self.classes
        ]

    def _parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.context.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # ------------------------------------------------------------------------------------
    # Candidates and passes
    # ------------------------------------------------------------------------------------

    def loss_resolution_a(self, epoch: int) -> float:
        """Resolution limit (Å) of the loss during ``epoch`` (1-based): ``start_resolution_a``
        until the switch (for modes without one, until ``latest_switch``), then rising
        linearly in frequency to ``max_resolution_a`` over ``march_epochs`` epochs."""
        config = self.config
        final = max(config.max_resolution_a or 0.0, self.data.nyquist_a)
        start = max(config.start_resolution_a or final, final)
        refine_from = config.latest_switch if config.amortized_only else self.switch_epoch
        if refine_from is None or epoch <= refine_from:
            return start
        done = 1.0 if config.march_epochs == 0 else (epoch - refine_from) / config.march_epochs
        frequency = 1 / start + min(1.0, done) * (1 / final - 1 / start)
        return 1 / frequency

    def loss_grid(self, epoch: int) -> SliceGrid:
        """The frequencies the loss compares during ``epoch``."""
        return self.data.grid_at(self.loss_resolution_a(epoch))

    def candidates(
        self, images: torch.Tensor, encoder: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Candidate poses ``(B, C, 3, 3)`` and shifts ``(B, C, 2)`` (or None) of a batch
        (``encoder``: the one to run, default the plain module)."""
        assert self.encoder is not None
        encoder = self.encoder if encoder is None else encoder
        if self.encoder_box < images.shape[-1]:
            images = fourier_crop_2d(images, self.encoder_box)
        rotations, shifts = self.config.training_mode.candidates(encoder, images)
        return rotations, (shifts if self.config.predict_shifts else None)

    def candidate_losses(
        self,
        batch: Batch,
        rotations: torch.Tensor,
        shifts: torch.Tensor | None,
        hartley: torch.Tensor | None = None,
        volume: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """The loss ``(B, M)`` of each of ``M`` candidate poses ``(B, M, 3, 3)``, ``(B, M, 2)``
        of a batch under the current volume (:func:`candidate_errors`)."""
        return candidate_errors(
            self.volume if volume is None else volume,
            batch.spectra,
            batch.transfer,
            rotations,
            shifts,
            batch.model,
            hartley,
        )

    def class_losses(
        self,
        batch: Batch,
        rotations: torch.Tensor,
        shifts: torch.Tensor | None,
        hartleys: list[torch.Tensor] | None = None,
        train: bool = False,
    ) -> torch.Tensor:
        """The loss ``(B, K, C)`` of ``C`` candidate poses per class, ``(B, K, C, 3, 3)`` and
        ``(B, K, C, 2)``, each under its class's map (``train``: through the modules that
        train, ``DistributedDataParallel`` in a torchrun run)."""
        volumes = self._train_volumes if train else list(self.volumes)
        return torch.stack(
            [
                self.candidate_losses(
                    batch,
                    rotations[:, k],
                    None if shifts is None else shifts[:, k],
                    None if hartleys is None else hartleys[k],
                    volume,
                )
                for k, volume in enumerate(volumes)
            ],
            dim=1,
        )

    def _by_class(
        self, rotations: torch.Tensor, shifts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's ``K M`` candidates ``(B, K M, ...)`` as ``(B, K, M, ...)``: head
        ``j`` proposes poses in class ``j // M``."""
        k = self.n_classes
        by_class = rotations.unflatten(1, (k, -1))
        return by_class, None if shifts is None else shifts.unflatten(1, (k, -1))

    def _record(
        self,
        rows: torch.Tensor,
        rotations: torch.Tensor,
        shifts: torch.Tensor | None,
        errors: torch.Tensor,
        winner: torch.Tensor,
    ) -> None:
        """Keep each image's best candidate in each class (by ``errors`` ``(B, K M)``) in the
        pose table; its class is the winner's."""
        k = self.n_classes
        index = torch.arange(len(rows), device=rows.device)
        per_class = errors.detach().unflatten(1, (k, -1))
        heads = per_class.shape[-1]
        best = per_class.argmin(dim=-1) + torch.arange(k, device=rows.device) * heads
        best[index, winner // heads] = winner  # the winner's own class: exactly the winner
        table_rows = self._class_rows(rows)
        self.table.rotations[table_rows] = rotations[index[:, None], best].detach().float()
        if shifts is not None:
            self.table.shifts_a[table_rows] = shifts[index[:, None], best].detach().float()
        self.winners[rows] = winner
        self.classes[rows] = winner // heads

    def _rest_idle_maps(self, classes: torch.Tensor) -> None:
        """Drop the gradients of the maps of the classes that no image of the batch
        (``classes`` ``(B,)``, on any rank) belongs to: their gradient is zero, and Adam would
        still move them on their old moments."""
        if self.n_classes == 1:
            return
        counts = torch.bincount(classes, minlength=self.n_classes).to(torch.float64)
        for klass in (self.context.sum(counts) == 0).nonzero()[:, 0].tolist():
            for parameter in self.volumes[klass].parameters():
                parameter.grad = None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` (row indices), in training order."""
        config = self.config
        if self.context.active:
            batches = shard_batches(
                len(self.data), self.n_total, config.batch_size, config.seed, epoch, self.context
            )
        else:
            batches = epoch_batches(len(self.data), config.batch_size, config.seed, epoch)
        return batches

    def amortized_epoch(
        self, epoch: int, bar: tqdm, batches: list[np.ndarray] | None = None
    ) -> float:
        """Train one amortized epoch on ``batches`` (default :meth:`epoch_batches`); returns
        the mean loss."""
        assert self.encoder is not None and self.encoder_optimizer is not None
        self.encoder.train()
        total, count = 0.0, 0
        grid = self.loss_grid(epoch)
        batches = self.epoch_batches(epoch) if batches is None else batches
        for rows, images in self.data.stream(batches, self.workers):
            batch = self.data.load(rows, grid, images)
            self.seen[rows] = True
            rotations, shifts = self.candidates(batch.images, self._train_encoder)
            errors = self.class_losses(batch, *self._by_class(rotations, shifts), train=True)
            errors = errors.flatten(1)  # (B, K M): the winner takes all over (class, head)
            loss, winner = winner_takes_all(errors)
            self.encoder_optimizer.zero_grad(set_to_none=True)
            self.volume_optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            self._rest_idle_maps(winner // self.config.heads)
            self.encoder_optimizer.step()
            self.volume_optimizer.step()
            self._record(batch.rows, rotations, shifts, errors, winner)
            self.fit_losses[batch.rows] = loss.detach()
            total += float(loss.detach().sum())
            count += len(rows)
            bar.update(len(rows))
        return self.context.sum_float(total) / self.context.sum_float(count)

    @torch.no_grad()
    def encoder_pass(self, epoch: int, keep_candidates: bool = False) -> torch.Tensor | None:
        """Set every particle's pose from its best candidate (encoder in evaluation mode),
        compared at the resolution of ``epoch``; with ``keep_candidates``, return every
        image's candidate rotations ``(n, C, 3, 3)`` (this rank's particles)."""
        assert self.encoder is not None
        self.encoder.eval()
        hartleys = [volume.hartley() for volume in self.volumes]
        grid = self.loss_grid(epoch)
        n = len(self.data)
        kept = []
        for start in range(0, n, self.config.batch_size):
            rows = np.arange(start, min(n, start + self.config.batch_size))
            batch = self.data.load(rows, grid)
            rotations, shifts = self.candidates(batch.images)
            errors = self.class_losses(batch, *self._by_class(rotations, shifts), hartleys)
            errors = errors.flatten(1)
            loss, winner = winner_takes_all(errors)
            self._record(batch.rows, rotations, shifts, errors, winner)
            self.fit_losses[batch.rows] = loss
            if keep_candidates:
                kept.append(rotations.to(torch.float32))
        return torch.cat(kept) if keep_candidates else None

    @torch.no_grad()
    def _fits(self, epoch: int):
        """For each batch of this rank's particles: ``rows`` and, between its image ``X`` and
        the projection ``P`` at its pose (with its transfer function and shift), over the
        frequencies of ``epoch``'s loss but the mean (``k = 0``, which an uneven background
        shifts), ``Re <P, X>``, ``|P|^2`` and ``|X|^2``, each ``(B,)`` float64."""
        hartleys = [volume.hartley() for volume in self.volumes]
        grid = self.loss_grid(max(epoch, 1))
        n = len(self.data)
        shifts_on = self.config.predict_shifts
        for start in range(0, n, self.config.batch_size):
            batch = self.data.load(np.arange(start, min(n, start + self.config.batch_size)), grid)
            rows = batch.rows
            own = self._own_rows(rows)
            shifts = self.table.shifts_a[own] if shifts_on else None
            predicted = self._own_slices(self.table.rotations[own], rows, batch.grid, hartleys)
            predicted = batch.model.modulate(predicted, batch.transfer, shifts)
            ac = batch.grid.coords[:, :2].norm(dim=-1) > 0.5
            image, model = batch.spectra[:, ac].cdouble(), predicted[:, ac].cdouble()
            inner = (model.conj() * image).real.sum(dim=-1)
            yield rows, inner, model.abs().square().sum(-1), image.abs().square().sum(-1)

    def _own_slices(
        self,
        rotations: torch.Tensor,
        rows: torch.Tensor,
        grid: SliceGrid,
        hartleys: list[torch.Tensor],
    ) -> torch.Tensor:
        """``(B, P)`` slices of particles ``rows`` at ``rotations`` ``(B, 3, 3)``, each from its
        class's map."""
        if self.n_classes == 1:
            return self.volume.slices(rotations, grid, hartleys[0])
        classes = self.classes[rows]
        out = torch.zeros(len(rows), grid.n_points, dtype=torch.complex64, device=self.device)
        for k, volume in enumerate(self.volumes):
            members = classes == k
            if members.any():
                out[members] = volume.slices(rotations[members], grid, hartleys[k])
        return out

    @torch.no_grad()
    def particle_scores(self) -> np.ndarray:
        """Each particle's score ``(N,)`` (all particles; every rank must call this): the
        correlation of its image with the projection at its pose (CTF-modulated, shifted),
        over the frequencies of the last epoch's loss but the image's mean. Junk (empty ice,
        an edge, an aggregate, another protein) matches no projection and scores near 0."""
        scores = torch.empty(len(self.data), dtype=torch.float64, device=self.device)
        for rows, inner, model_power, image_power in self._fits(self.epoch):
            scores[rows] = inner / (model_power * image_power).sqrt().clamp_min(1e-30)
        return self._gather(scores).cpu().numpy()

    def amplitude_scales(self) -> np.ndarray:
        """Every particle's CTF amplitude ``(N,)`` as the run now uses it (gathered like
        :meth:`poses`): the input's (1 when absent) unless ``amplitude_scale`` estimates it."""
        ctf = self.data.particles.ctf
        local = np.ones(len(self.data)) if ctf is None else ctf.scale
        return self._gather(torch.as_tensor(local, device=self.device)).cpu().numpy()

    @torch.no_grad()
    def update_amplitude_scales(self, epoch: int) -> dict:
        """Each particle's amplitude ``a`` in closed form against the map at its pose: with
        the projection ``P`` made with the current ``a``, the least-squares factor
        ``b = Re <P, X> / |P|^2`` gives ``a b``; then bounded to ``SCALE_LIMITS`` and divided
        by the mean over all particles (the map holds the overall scale; with ``--classes``,
        over the class's members: each map holds its class's). Returns the spread."""
        current = torch.as_tensor(self.data.particles.require_ctf().scale, device=self.device)
        found = current.clone()
        for rows, inner, model_power, _ in self._fits(epoch):
            found[rows] = current[rows] * inner / model_power.clamp_min(1e-30)
        if self.n_classes == 1:
            found = normalised_amplitudes(found, self.n_total, self.context)
        else:  # each map holds its class's scale: the mean is 1 within each class
            sizes = torch.bincount(self.classes, minlength=self.n_classes).double()
            for klass, size in enumerate(self.context.sum(sizes).tolist()):
                members = self.classes == klass
                if size > 0:  # the same on every rank
                    found[members] = normalised_amplitudes(found[members], int(size), self.context)
        self.data.set_amplitude_scale(found.cpu().numpy())
        every = self._gather(found)
        return {
            "sd": float(every.std(correction=0)),
            "min": float(every.min()),
            "max": float(every.max()),
            "change": float(self._gather((found - current).abs()).mean()),
        }

    def _pose_steps(self, batch: Batch, hartleys: list[torch.Tensor]) -> None:
        """``pose_steps`` Adam steps on the batch's poses, in every class under its map."""
        shifts_on = self.config.predict_shifts
        k = self.n_classes
        rows = self._class_rows(batch.rows).reshape(-1)  # (B K,)
        for _ in range(self.config.pose_steps):
            w, d = self.table.perturbation(rows)
            rotations, shifts = self.table.poses(rows, w, d)
            errors = self.class_losses(
                batch,
                rotations.view(-1, k, 1, 3, 3),
                shifts.view(-1, k, 1, 2) if shifts_on else None,
                hartleys,
            )
            grad_w, grad_d = torch.autograd.grad(errors.sum(), [w, d], allow_unused=True)
            grad_d = torch.zeros_like(d) if grad_d is None else grad_d
            self.table.step(rows, grad_w, grad_d)

    def auto_decoding_epoch(
        self, epoch: int, bar: tqdm, batches: list[np.ndarray] | None = None
    ) -> float:
        """Train one auto-decoding epoch on ``batches`` (default :meth:`epoch_batches`); returns
        the mean loss."""
        total, count = 0.0, 0
        shifts_on = self.config.predict_shifts
        hartleys = [volume.hartley().detach() for volume in self.volumes]
        grid = self.loss_grid(epoch)
        batches = self.epoch_batches(epoch) if batches is None else batches
        for rows, images in self.data.stream(batches, self.workers):
            batch = self.data.load(rows, grid, images)
            self.seen[rows] = True
            self._pose_steps(batch, hartleys)
            table_rows = self._class_rows(batch.rows)  # (B, K)
            rotations = self.table.rotations[table_rows][:, :, None]
            shifts = self.table.shifts_a[table_rows][:, :, None] if shifts_on else None
            errors = self.class_losses(batch, rotations, shifts, train=True)[..., 0]  # (B, K)
            if self.n_classes > 1:  # each particle to the class whose map explains it best
                self.classes[batch.rows] = errors.detach().argmin(dim=1)
            loss = errors.gather(1, self.classes[batch.rows][:, None])[:, 0]
            self.volume_optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            self._rest_idle_maps(self.classes[batch.rows])
            self.volume_optimizer.step()
            hartleys = [volume.hartley().detach() for volume in self.volumes]
            self.fit_losses[batch.rows] = loss.detach()
            total += float(loss.detach().sum())
            count += len(rows)
            bar.update(len(rows))
        return self.context.sum_float(total) / self.context.sum_float(count)

    @torch.no_grad()
    def symmetry_check(self, epoch: int) -> dict:
        """Move particles to their pose under the map's strongest self-superposition where
        that explains their image better (see ``ReconstructConfig.symmetry_check``); with
        several classes, in each class's map for its members (``"classes"`` lists them)."""
        if self.n_classes == 1:
            return self._symmetry_check(epoch, 0)
        checked = [self._symmetry_check(epoch, k) for k in range(self.n_classes)]
        return {
            "moved_to_mate": sum(c["moved_to_mate"] for c in checked),
            "classes": checked,
        }

    @torch.no_grad()
    def _symmetry_check(self, epoch: int, klass: int) -> dict:
        volume = self.volumes[klass]
        found = None
        if self.context.is_main:  # one rank aligns; every rank gets its result
            try:
                found = self_alignment(
                    volume.to_map().cpu(),
                    self.data.pixel_size_a,
                    lowpass_a=self.loss_resolution_a(1),  # pseudo-symmetry is low-resolution
                )
            except ValueError:  # every superposition refined back onto the identity
                found = None
        found = self.context.broadcast_object(found)
        if found is None:
            return {"self_alignment": None, "moved_to_mate": 0.0}
        angle = float(torch.rad2deg(geodesic_distance(found.rotation, torch.eye(3).double())))
        out = {"self_alignment": {"correlation": found.correlation, "angle_deg": angle}}
        if found.correlation < self.config.symmetry_check_min_correlation:
            return out
        in_class = self.table.rotations.view(-1, self.n_classes, 3, 3)[:, klass]
        shifts_in_class = self.table.shifts_a.view(-1, self.n_classes, 2)[:, klass]
        mates = poses_into_reference_frame(
            in_class.cpu().double().numpy(), shifts_in_class.cpu().double().numpy(), found
        )
        mate_rotations = torch.from_numpy(mates[0]).to(self.device, torch.float32)
        mate_shifts = torch.from_numpy(mates[1]).to(self.device, torch.float32)
        shifts_on = self.config.predict_shifts
        hartley = volume.hartley()
        grid = self.loss_grid(epoch)
        moved = 0
        n = len(self.data)
        for start in range(0, n, self.config.batch_size):
            batch = self.data.load(np.arange(start, min(n, start + self.config.batch_size)), grid)
            rows = batch.rows
            candidates = torch.stack([in_class[rows], mate_rotations[rows]], dim=1)
            shifts_ = torch.stack([shifts_in_class[rows], mate_shifts[rows]], dim=1)
            errors = self.candidate_losses(
                batch, candidates, shifts_ if shifts_on else None, hartley, volume
            )
            better = rows[(errors[:, 1] < errors[:, 0]) & (self.classes[rows] == klass)]
            table_rows = better * self.n_classes + klass
            self.table.replace(table_rows, mate_rotations[better], mate_shifts[better])
            moved += len(better)
        out["moved_to_mate"] = self.context.sum_float(moved) / self.n_total
        return out

    # ------------------------------------------------------------------------------------
    # Classes
    # ------------------------------------------------------------------------------------

    def class_sizes(self) -> list[int]:
        """Particles in each class (all ranks)."""
        counts = torch.bincount(self.classes, minlength=self.n_classes)
        return [int(c) for c in self.context.sum(counts)]

    def largest_class(self) -> int:
        """The class (0-based) holding the most particles (all ranks must call this)."""
        return int(np.argmax(self.class_sizes()))

    def class_assignments(self) -> np.ndarray:
        """Every particle's class ``(N,)``, 0-based (gathered like :meth:`poses`)."""
        return self._gather(self.classes).cpu().numpy()

    @torch.no_grad()
    def reseed_classes(self, epoch: int) -> list[dict]:
        """Re-seed each class holding under ``MIN_CLASS_FRACTION`` of the particles: the
        worst-fitting half of the largest class (by their last loss) moves to it with their
        poses there, its map becomes their reconstruction at the loss's resolution (a map
        apart from the largest class's, so the two split its particles instead of tying),
        its optimiser state starts afresh and, in the amortized stage, its heads become
        copies of the largest class's. Not after the last epoch (nothing would train the split
        it makes). Returns what moved."""
        k = self.n_classes
        events: list[dict] = []
        if epoch >= self.config.epochs:
            return events
        for _ in range(k - 1):
            sizes = self.class_sizes()
            small, large = int(np.argmin(sizes)), int(np.argmax(sizes))
            if sizes[small] >= MIN_CLASS_FRACTION * self.n_total or small == large:
                break
            losses = self._gather(self.fit_losses)
            in_large = self._gather(self.classes) == large
            worse = in_large & (losses >= losses[in_large].median())
            moving = worse
            if self.context.active:
                moving = worse[torch.from_numpy(self.shard).to(worse.device)]
            rows = moving.nonzero()[:, 0]
            source, target = rows * k + large, rows * k + small
            self.table.replace(target, self.table.rotations[source], self.table.shifts_a[source])
            self.classes[rows] = small
            volume = known_pose_map(
                self.data,
                self.table.rotations.view(-1, k, 3, 3)[:, small],
                self.table.shifts_a.view(-1, k, 2)[:, small],
                self.loss_resolution_a(epoch),
                context=self.context,
                members=moving,
                symmetry=self.volumes[small].operators,  # after the switch: the run's group
            )
            self.volumes[small].load_map(volume)
            for parameter in self.volumes[small].parameters():
                self.volume_optimizer.state.pop(parameter, None)
            if self.encoder is not None and self.encoder_optimizer is not None:
                heads = self.config.heads
                target = slice(small * heads, (small + 1) * heads)
                self.encoder.heads.copy_heads(slice(large * heads, (large + 1) * heads), target)
                for parameter in self.encoder.heads.parameters():  # their moments start afresh
                    for moment in self.encoder_optimizer.state.get(parameter, {}).values():
                        if moment.ndim > 0:
                            moment[target] = 0
            events.append(
                {
                    "class": small + 1,
                    "from": large + 1,
                    "particles": int(worse.sum()),
                    "epoch": epoch,
                }
            )
        return events

    # ------------------------------------------------------------------------------------
    # The switch
    # ------------------------------------------------------------------------------------

    def _changes(self) -> tuple[float | None, float | None]:
        """Fraction of images whose winning head changed since the last epoch, and the median
        change (degrees) of their best rotation."""
        if self.previous is None:
            return None, None
        winners, rotations = self.previous
        changed = self.context.sum_float(float((self.winners != winners).sum()))
        own = self._own_rows(torch.arange(len(self.classes), device=self.device))
        angles = geodesic_distance(self.table.rotations[own], rotations[own])
        angles = self.context.gather_rows(angles, self.n_total)
        return changed / self.n_total, float(torch.rad2deg(angles.median()))

    def _moved_since(self, before: torch.Tensor) -> tuple[float, float]:
        """Median change (degrees) of the particles' rotations in their class since
        ``before`` (the pose table's rotations then), and the fraction that moved by more
        than 5 degrees (an auto-decoding epoch's movement)."""
        own = self._own_rows(torch.arange(len(self.classes), device=self.device))
        angles = torch.rad2deg(geodesic_distance(self.table.rotations[own], before[own]))
        angles = self.context.gather_rows(angles, self.n_total)
        return float(angles.median()), float((angles > 5.0).double().mean())

    def _wants_switch(self, epoch: int, head_change, pose_change) -> bool:
        config = self.config
        if config.amortized_only or self.stage != AMORTIZED or epoch >= config.epochs:
            return False
        if config.switch != "auto":
            return epoch >= int(config.switch)
        if epoch >= config.latest_switch:
            return True
        if epoch < config.min_amortized_epochs or head_change is None:
            return False
        return (
            head_change <= config.switch_head_change
            and pose_change <= config.switch_pose_change_deg
        )

    def _wants_symmetry_check(self, epoch: int, stage: str) -> bool:
        """After auto-decoding epochs at the final resolution (none after the last epoch, none
        when a point group is imposed)."""
        if not self.config.symmetry_check or stage != AUTO_DECODING or epoch >= self.config.epochs:
            return False
        if self.volume.operators is not None:  # an imposed group already holds every mate
            return False
        return self.loss_resolution_a(epoch) <= self.loss_resolution_a(self.config.epochs) + 1e-9

    def switch(self, epoch: int, bar: tqdm | None = None) -> dict | None:
        """Initialise the pose table from the best heads, refine it by global search
        (``search_rounds``), and drop the encoder. Returns the search's record, if any.
        ``bar``: the run's progress bar, which shows the search's round and images.

        With several classes every image is searched in every class's map (a pose in each
        class), starting from the encoder's classes; each round then gives each particle the
        class whose map explained it best and rebuilds each map from its members
        (:meth:`_search_classes`)."""
        config = self.config
        use = config.search_rounds > 0 and config.search_candidates
        candidates = self.encoder_pass(epoch, keep_candidates=use)
        assert self.encoder is not None
        self.switch_snapshot = {
            "epoch": epoch,
            "config": config.to_dict(),
            "volume": {k: v.detach().clone() for k, v in self.volume.state_dict().items()},
            "encoder": {k: v.detach().clone() for k, v in self.encoder.state_dict().items()},
            "rotations": self._gather(self.own_rotations()).detach().clone(),
            "shifts_a": self._gather(self.own_shifts()).detach().clone(),
            "winners": self._gather(self.winners).detach().clone(),
        }
        if self.n_classes > 1:
            self.switch_snapshot["class_volumes"] = [
                {k: v.detach().clone() for k, v in volume.state_dict().items()}
                for volume in self.volumes[1:]
            ]
            self.switch_snapshot["classes"] = self._gather(self.classes).detach().clone()
        rotations, shifts, searched = self.table.rotations, self.table.shifts_a, None
        if config.search_rounds > 0 and self.n_classes == 1:
            rotations, shifts, searched = self._search(
                epoch, bar, self.volume, rotations, shifts, candidates
            )
        elif config.search_rounds > 0:
            rotations, shifts, searched = self._search_classes(epoch, bar, candidates)
        if self.group is not None:  # the C1 search's map shows the axes best
            framed, rotations, shifts = self.into_group_frame(epoch, rotations, shifts)
            searched = {**(searched or {}), "group_frame": framed}
        self.enter_auto_decoding(rotations, shifts, epoch)
        if config.amplitude_scale:
            searched = {**(searched or {}), "amplitude_scale": self.update_amplitude_scales(epoch)}
        return searched

    def _search_stages(self, epoch: int) -> list[float]:
        """The resolutions (Å) of the switch's search: ``search_coarse_resolution_a`` first if
        set (and coarser), then the loss's resolution at ``epoch``."""
        resolution_a = self.loss_resolution_a(epoch)
        coarse_a = self.config.search_coarse_resolution_a
        if coarse_a is None or coarse_a <= resolution_a:
            return [resolution_a]
        return [coarse_a, resolution_a]

    def _search_classes(
        self, epoch: int, bar: tqdm | None, candidates: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The switch's search in every class's map at once, reassigning the classes in every
        round (:func:`class_projection_matching`; see :meth:`switch`): coarse first if
        ``search_coarse_resolution_a`` asks, then at the loss's resolution. Returns the pose
        table's rows ``(n K, 3, 3)``, ``(n K, 2)`` and the record."""
        config = self.config
        assert self.encoder is not None
        k = self.n_classes
        rotations = self.table.rotations.view(-1, k, 3, 3)
        shifts = self.table.shifts_a.view(-1, k, 2)
        own = None if candidates is None else candidates.unflatten(1, (k, -1))
        searched: dict = {}
        for stage_resolution_a in self._search_stages(epoch):

            def show(klass: int, round_: int, done: int, n: int, at=stage_resolution_a) -> None:
                if bar is not None:
                    bar.set_description(
                        f"epoch {epoch}/{config.epochs} pose search in {k} classes at "
                        f"{at:.0f} Å, round {round_ + 1}/{config.search_rounds}, "
                        f"class {klass + 1}"
                    )
                    bar.set_postfix_str(f"{done}/{n} img", refresh=True)

            found = class_projection_matching(
                list(self.volumes),
                self.data,
                rotations,
                shifts,
                self.classes,
                stage_resolution_a,
                config.search_nside,
                config.search_rounds,
                config.search_converged,
                candidates=own,
                refine=config.search_refine,
                max_shift_a=self.encoder.max_shift_a if config.predict_shifts else 0.0,
                context=self.context,
                on_batch=show,
            )
            rotations, shifts, self.classes = found.rotations, found.shifts_a, found.classes
            if searched:  # the coarse stage, kept apart
                searched = {"coarse": searched}
            searched.update(
                {
                    "resolution_a": stage_resolution_a,
                    "changed": found.changed,
                    "class_changed": found.class_changed,
                    "settled": found.settled,
                    "seconds": found.seconds,
                    "class_sizes": self.class_sizes(),
                }
            )
        return rotations.reshape(-1, 3, 3), shifts.reshape(-1, 2), searched

    def _search(
        self,
        epoch: int,
        bar: tqdm | None,
        volume: HartleyVolume,
        rotations: torch.Tensor,
        shifts: torch.Tensor,
        candidates: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Global search (:func:`projection_matching`) in ``volume``, which it rebuilds:
        coarse first if ``search_coarse_resolution_a`` asks, then at the loss's resolution.
        Returns the rotations, shifts and the record."""
        config = self.config
        assert self.encoder is not None
        searched: dict = {}
        for stage_resolution_a in self._search_stages(epoch):

            def show(round_: int, done: int, n: int, at: float = stage_resolution_a) -> None:
                if bar is not None:
                    bar.set_description(
                        f"epoch {epoch}/{config.epochs} pose search at {at:.0f} Å, "
                        f"round {round_ + 1}/{config.search_rounds}"
                    )
                    bar.set_postfix_str(f"{done}/{n} img", refresh=True)

            found = projection_matching(
                volume,
                self.data,
                shifts,
                stage_resolution_a,
                config.search_nside,
                config.search_rounds,
                config.search_converged,
                rotations=rotations,
                candidates=candidates,
                refine=config.search_refine,
                max_shift_a=self.encoder.max_shift_a if config.predict_shifts else 0.0,
                amplitudes=config.amplitude_scale,
                context=self.context,
                on_batch=show,
            )
            rotations, shifts = found.rotations, found.shifts_a
            if searched:  # the coarse stage, kept apart
                searched = {"coarse": searched}
            searched.update(
                {
                    "resolution_a": stage_resolution_a,
                    "changed": found.changed,
                    "settled": found.settled,
                    "sources": found.sources,
                    "mean_error": found.mean_error,
                    "seconds": found.seconds,
                }
            )
        return rotations, shifts, searched

    @torch.no_grad()
    def into_group_frame(
        self, epoch: int, rotations: torch.Tensor, shifts_a: torch.Tensor
    ) -> tuple[dict | list[dict], torch.Tensor, torch.Tensor]:
        """Before imposing the run's group at the switch: find its axes on each class's map of
        the switch's C1 pose search (:func:`~cryohydra.metrics.symmetry.standard_orientation`),
        turn and centre the map onto the group's RELION axes and move the poses in that class
        along (``(n K, 3, 3)``, ``(n K, 2)`` Å: the pose table's rows); the maps impose the
        group from here. The record: one dict, or one per class with ``--classes``.

        Imposing the group from the first epoch lets the particles settle in frames that
        differ by an element of the group's normaliser (a quarter turn about z for D2: the map
        of beta-galactosidase came out D4-like, 44 degrees off); finding the axes on the
        amortized stage's map, before the search, found a wrong two-fold on HSP90 (score 0.76,
        78 degrees off at the end) where the map after the search is right
        (docs/symmetry.md)."""
        k = self.n_classes
        rotations = rotations.view(-1, k, 3, 3).clone()
        shifts_a = shifts_a.view(-1, k, 2).clone()
        records = []
        for klass, volume in enumerate(self.volumes):
            found = None
            if self.context.is_main:  # one rank aligns; every rank gets its result
                found = standard_orientation(
                    volume.to_map().cpu(),
                    self.data.pixel_size_a,
                    self.config.symmetry,
                    resolution_a=self.loss_resolution_a(epoch),
                )
            found = self.context.broadcast_object(found)
            moved, moved_shifts = poses_into_reference_frame(
                rotations[:, klass].cpu().double().numpy(),
                shifts_a[:, klass].cpu().double().numpy(),
                found,
            )
            rotations[:, klass] = torch.from_numpy(moved).to(rotations)
            shifts_a[:, klass] = torch.from_numpy(moved_shifts).to(shifts_a)
            volume.load_map(found.aligned_map.to(self.device))
            volume.impose(self.group)
            angle = geodesic_distance(found.rotation, torch.eye(3, dtype=torch.float64))
            records.append(
                {
                    "group": self.config.symmetry,
                    "score": found.correlation,
                    "turned_deg": float(torch.rad2deg(angle)),
                    "shift_a": [float(v) for v in found.shift_a],
                }
            )
        record = records[0] if k == 1 else records
        return record, rotations.reshape(-1, 3, 3), shifts_a.reshape(-1, 2)

    def enter_auto_decoding(self, rotations: torch.Tensor, shifts_a, epoch: int) -> None:
        """The pose table from these poses (``(n K, 3, 3)``, ``(n K, 2)`` Å: row ``i K + k``
        is particle ``i`` in class ``k``); the encoder dropped; a fresh volume optimiser (the
        volume was replaced, so the old moments are stale) at the after-switch rate."""
        config = self.config
        self.table = PoseTable.create(
            rotations, shifts_a, config.pose_lr_rad, config.pose_lr_shift_a
        )
        self.encoder = None
        self.encoder_optimizer = None
        self._train_encoder = None
        self.volume_optimizer = torch.optim.Adam(
            self.volumes.parameters(), lr=config.volume_lr_after_switch
        )
        self.stage = AUTO_DECODING
        self.switch_epoch = epoch
        for volume in self.volumes:
            volume.impose(self.group)

    def start_from_poses(self, rotations: np.ndarray, shifts_a: np.ndarray | None) -> None:
        """Skip the amortized stage (``--init-poses``): auto-decoding starts from the given
        poses ``(N, 3, 3)``, ``(N, 2)`` Å (in the order of the particles given to the run;
        shifts None: zero), the volume being the known-pose reconstruction from them at
        ``start_resolution_a``. Frequency marching then runs as after a switch at epoch 0."""
        if self.epoch != 0 or self.stage != AMORTIZED:
            raise RuntimeError("poses can only be given before the first epoch")
        if self.config.amortized_only:
            raise ValueError(f"--init-poses needs the semi-amortized mode, not {self.config.mode}")
        if self.n_classes > 1:
            raise ValueError("--init-poses gives one pose per particle: not with --classes")
        if shifts_a is None or not self.config.predict_shifts:
            shifts_a = np.zeros((len(rotations), 2))
        if self.context.active:
            rotations, shifts_a = rotations[self.shard], shifts_a[self.shard]
        rotations_t = torch.as_tensor(rotations, dtype=torch.float32, device=self.device)
        shifts_t = torch.as_tensor(shifts_a, dtype=torch.float32, device=self.device)
        volume = known_pose_map(
            self.data,
            rotations_t,
            shifts_t,
            self.loss_resolution_a(1),
            context=self.context,
            symmetry=self.group,
        )
        with torch.no_grad():
            self.volume.load_map(volume)
        self.enter_auto_decoding(rotations_t, shifts_t, 0)

    # ------------------------------------------------------------------------------------
    # Epochs
    # ------------------------------------------------------------------------------------

    def run_epoch(self, bar: tqdm) -> dict:
        """Train one epoch and return its log record."""
        epoch = self.epoch + 1
        stage = self.stage
        bar.set_description(f"epoch {epoch}/{self.config.epochs} {stage}")
        start = time.perf_counter()
        resolution_a = self.loss_resolution_a(epoch)
        if stage == AMORTIZED:
            loss = self.amortized_epoch(epoch, bar)
            head_change, pose_change = self._changes()
            self.previous = (self.winners.clone(), self.table.rotations.clone())
        else:
            before = self.table.rotations.clone()
            loss = self.auto_decoding_epoch(epoch, bar)
            head_change = None
            pose_change, moved_far = self._moved_since(before)
        reseeded = self.reseed_classes(epoch)
        switched = self._wants_switch(epoch, head_change, pose_change)
        searched = self.switch(epoch, bar) if switched else None
        bar.set_postfix_str("", refresh=False)
        if epoch == self.config.epochs and self.stage == AMORTIZED:
            self.encoder_pass(epoch)  # final poses from the trained encoder
        scaled = None
        if stage == AUTO_DECODING and self.config.amplitude_scale:
            scaled = self.update_amplitude_scales(epoch)
        checked = None
        if self._wants_symmetry_check(epoch, stage):
            checked = self.symmetry_check(epoch)
        seconds = time.perf_counter() - start
        self.epoch = epoch
        record = {
            "epoch": epoch,
            "stage": stage,
            "loss": loss,
            "loss_resolution_a": resolution_a,
            "seconds": seconds,
            "images_per_s": self.n_total / seconds,
            "head_change": head_change,
            "pose_change_deg": pose_change,
            "switched": switched,
        }
        if stage == AUTO_DECODING:
            record["moved_over_5deg"] = moved_far
        if searched is not None:
            record["pose_search"] = searched
        if checked is not None:
            record["symmetry_check"] = checked
        if scaled is not None:
            record["amplitude_scale"] = scaled
        if stage == AMORTIZED:
            assigned = self.winners[self.winners >= 0]
            usage = torch.bincount(assigned, minlength=self.config.n_candidates * self.n_classes)
            record["head_usage"] = self.context.sum(usage).tolist()
        if self.n_classes > 1:
            record["class_sizes"] = self.class_sizes()
            record["reseeded"] = reseeded
        if self.evaluate is not None:  # against the truth; timed apart from the epoch
            began = time.perf_counter()
            record.update(self.evaluate(self))
            record["evaluation_seconds"] = time.perf_counter() - began
        return record

    def fit(
        self,
        on_epoch: Callable[[AbInitio, dict], None] | None = None,
        progress: bool = True,
        trial: bool = False,
    ) -> None:
        """Train the remaining epochs; ``on_epoch(run, record)`` after each (log, checkpoint).
        ``trial``: stop after the first auto-decoding epoch (one start of several, to be
        compared by :attr:`ReconstructConfig.starts`)."""
        n = len(self.data)
        bar = tqdm(
            total=self.config.epochs * n,
            initial=self.epoch * n,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs} {self.stage}",
            unit="img",
            disable=not progress or not self.context.is_main,
            dynamic_ncols=True,
        )
        while self.epoch < self.config.epochs and not (trial and self.past_first_refinement):
            record = self.run_epoch(bar)
            if on_epoch is not None:
                on_epoch(self, record)
        bar.close()

    @property
    def past_first_refinement(self) -> bool:
        """At least one auto-decoding epoch is done."""
        return self.switch_epoch is not None and self.epoch > self.switch_epoch

    # ------------------------------------------------------------------------------------
    # Results and checkpoints
    # ------------------------------------------------------------------------------------

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """A per-particle tensor of this rank's shard -> all particles (every rank)."""
        return self.context.gather_rows(local, self.n_total)

    def local_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Rotations ``(n, 3, 3)`` and shifts ``(n, 2)`` Å of this rank's particles (in
        their class)."""
        return (
            self.own_rotations().detach().cpu().double().numpy(),
            self.own_shifts().detach().cpu().double().numpy(),
        )

    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Current rotations ``(N, 3, 3)`` and shifts ``(N, 2)`` Å of all particles in their
        class, float64 (in a torchrun run every rank must call this: it gathers the shards)."""
        return (
            self._gather(self.own_rotations()).detach().cpu().double().numpy(),
            self._gather(self.own_shifts()).detach().cpu().double().numpy(),
        )

    def winners_all(self) -> torch.Tensor:
        """The winning head of every particle (gathered like :meth:`poses`)."""
        return self._gather(self.winners)

    def seen_rows(self) -> list[list[int]]:
        """For each rank, the particles (indices into the whole set) it trained on."""
        mine = self.shard[self.seen.numpy()].tolist()
        if not self.context.active:
            return [mine]
        import torch.distributed as dist

        out: list = [None] * self.context.world_size
        dist.all_gather_object(out, mine)
        return out

    def _gather_particles(self, local: torch.Tensor) -> torch.Tensor:
        """:meth:`_gather` of a tensor with one row per particle or, as the pose table, ``K``
        (row ``i K + k``): gathered particle by particle."""
        per_particle = local.shape[0] // len(self.classes)
        return self._gather(local.unflatten(0, (-1, per_particle))).flatten(0, 1)

    def state_dict(self) -> dict:
        """Everything to continue, the pose table of all particles in particle order (so a run
        resumes with any number of ranks; every rank must call this)."""
        table = {
            name: self._gather_particles(v) if isinstance(v, torch.Tensor) else v
            for name, v in self.table.state_dict().items()
        }
        previous = None
        if self.previous is not None:
            previous = tuple(self._gather_particles(p) for p in self.previous)
        return {
            "config": self.config.to_dict(),
            "n_particles": self.n_total,
            "epoch": self.epoch,
            "stage": self.stage,
            "switch_epoch": self.switch_epoch,
            "volume": self.volume.state_dict(),
            "class_volumes": [volume.state_dict() for volume in self.volumes[1:]],
            "classes": self._gather(self.classes),
            "volume_optimizer": self.volume_optimizer.state_dict(),
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "encoder_optimizer": (
                None if self.encoder_optimizer is None else self.encoder_optimizer.state_dict()
            ),
            "table": table,
            "winners": self._gather(self.winners),
            "previous": previous,
            "amplitude_scale": torch.as_tensor(self.amplitude_scales()),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["n_particles"] != self.n_total:
            raise ValueError(
                f"the checkpoint is of {state['n_particles']} particles, the input has "
                f"{self.n_total}"
            )
        shard = torch.from_numpy(self.shard)

        def mine(tensor: torch.Tensor) -> torch.Tensor:
            """This rank's rows of a tensor with one row per particle, or ``K`` (the pose
            table's row ``i K + k``)."""
            if not self.context.active:
                return tensor
            per_particle = tensor.shape[0] // self.n_total
            grouped = tensor.unflatten(0, (-1, per_particle))
            return grouped[shard.to(tensor.device)].flatten(0, 1)

        self.epoch = state["epoch"]
        self.stage = state["stage"]
        self.switch_epoch = state["switch_epoch"]
        saved = [state["volume"], *state.get("class_volumes", [])]
        if len(saved) != self.n_classes:
            raise ValueError(f"the checkpoint has {len(saved)} classes, the run {self.n_classes}")
        imposed = self.stage == AUTO_DECODING or self.config.amortized_only
        for volume, volume_state in zip(self.volumes, saved, strict=True):
            volume.load_state_dict(volume_state)
            volume.impose(self.group if imposed else None)
        self.volume_optimizer.load_state_dict(state["volume_optimizer"])
        if state["encoder"] is None:
            self.encoder = None
            self.encoder_optimizer = None
        else:
            assert self.encoder is not None and self.encoder_optimizer is not None
            self.encoder.load_state_dict(state["encoder"])
            self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
        if self.encoder is None:
            self._train_encoder = None
        table = {
            name: mine(v) if isinstance(v, torch.Tensor) else v
            for name, v in state["table"].items()
        }
        self.table = PoseTable.from_state_dict(table, self.device)
        self.winners = mine(state["winners"]).to(self.device)
        if "classes" in state:
            self.classes = mine(state["classes"]).to(self.device)
        previous = state["previous"]
        self.previous = (
            None if previous is None else tuple(mine(p).to(self.device) for p in previous)
        )
        if self.config.amplitude_scale and state.get("amplitude_scale") is not None:
            self.data.set_amplitude_scale(mine(state["amplitude_scale"]).cpu().numpy())
