"""Orientations from predicted distances (``cryohydra orient recover``, first part).

Each image is embedded once (:func:`embed`); then one unit quaternion per image is optimised
(Adam) so that the angles between the quaternions' rotations match the distances predicted
for random batches of pairs, ``2 arccos |<q_i, q_j>|`` against ``2 arccos |cos(f_i, f_j)|``
(:func:`recover_orientations`). A fixed set of pairs is held out to stop early once the loss
no longer falls.

The result is right only up to the symmetries of the distances: ``R -> A R B`` and the
inversion ``R -> R^T`` (:mod:`~cryohydra.orient.distances`). ``B`` is a rotation of the
molecule and does not matter; ``A`` and the inversion are found from the images by
:mod:`~cryohydra.orient.detector`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import roma
import torch

from cryohydra.io.batches import ParticleBatches
from cryohydra.models.distance import DistanceEncoder
from cryohydra.orient.distances import paired_predicted_distances, quaternion_distances

__all__ = [
    "RecoverConfig",
    "Recovery",
    "embed",
    "feature_distances",
    "recover_orientations",
    "spectral_start",
]

DistanceFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def embed(model: DistanceEncoder, data: ParticleBatches, batch_size: int = 512) -> torch.Tensor:
    """Unit features ``(N, D)`` of every image of ``data`` (read at the network's box)."""
    if data.working_box != model.box_size:
        raise ValueError(
            f"the network takes {model.box_size} px images, the data are read at "
            f"{data.working_box} px"
        )
    model.eval()
    device = next(model.parameters()).device
    n = len(data)
    chunks = []
    for start in range(0, n, batch_size):
        images = data.read(np.arange(start, min(n, start + batch_size))).to(device)
        if not torch.isfinite(images).all():
            raise ValueError(
                f"{data.particles.source}: images {start}..{start + len(images) - 1} hold NaN "
                "or infinite values"
            )
        chunks.append(model(images))
    return torch.cat(chunks)


def feature_distances(features: torch.Tensor) -> DistanceFunction:
    """The predicted distance of pairs ``(i, j)`` (index tensors) from cached features."""

    def distance(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return paired_predicted_distances(features[i], features[j])

    return distance


@dataclass(frozen=True)
class RecoverConfig:
    """Settings of the quaternion fit.

    Attributes:
        pairs_per_step: pairs drawn for each Adam step.
        max_steps: upper bound on the steps.
        lr: Adam learning rate of the quaternions (unnormalised 4-vectors).
        check_every: steps between evaluations on the held-out pairs.
        patience: stop after this many evaluations without a relative improvement of
            ``min_improvement``, or once the held-out loss is below ``tolerance`` (rad^2).
        validation_pairs: size of the held-out pair set.
        restarts: independent starts (the first spectral, see :func:`spectral_start`, unless
            ``spectral_anchors`` is 0; the others random); the lowest held-out loss is kept.
        spectral_anchors: images on which the spectral start is computed (0: random start).
        seed: seeds the starts and the pairs.
    """

    pairs_per_step: int = 8192
    max_steps: int = 20000
    lr: float = 0.02
    check_every: int = 100
    patience: int = 5
    min_improvement: float = 1e-3
    tolerance: float = 1e-10
    validation_pairs: int = 50000
    restarts: int = 1
    spectral_anchors: int = 4000
    seed: int = 0


@dataclass
class Recovery:
    """Rotations ``(N, 3, 3)`` found, the held-out loss (rad^2) of each check, the steps and
    seconds taken."""

    rotations: torch.Tensor
    losses: list[float]
    steps: int
    seconds: float

    @property
    def final_loss(self) -> float:
        return min(self.losses)


def _random_pairs(n: int, count: int, generator: torch.Generator, device):
    i = torch.randint(n, (count,), generator=generator).to(device)
    j = (i + 1 + torch.randint(n - 1, (count,), generator=generator).to(device)) % n
    return i, j


def _distance_block(distance: DistanceFunction, rows: torch.Tensor, columns: torch.Tensor):
    """``(len(rows), len(columns))`` distances, about a million pairs at a time."""
    out = []
    step = max(1, 2**20 // len(columns))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        i = block[:, None].expand(-1, len(columns)).reshape(-1)
        j = columns[None].expand(len(block), -1).reshape(-1)
        out.append(distance(i, j).reshape(len(block), len(columns)))
    return torch.cat(out)


def _top_eigenvectors(matrix: torch.Tensor, k: int, generator, iterations: int = 50):
    """The ``k`` leading eigenpairs of a symmetric matrix by subspace iteration."""
    basis = torch.randn(matrix.shape[0], 2 * k, generator=generator, dtype=matrix.dtype)
    for _ in range(iterations):
        basis, _ = torch.linalg.qr(matrix @ basis)
    values, vectors = torch.linalg.eigh(basis.T @ matrix @ basis)
    order = values.argsort(descending=True)[:k]
    return values[order], basis @ vectors[:, order]


def _rounding_transform(embedding: torch.Tensor, generator, restarts: int = 40, iterations=100):
    """The orthogonal ``O`` ``(9, 9)`` making the rows of ``embedding @ O`` (``(N, 9)``) closest
    to flattened rotations: alternate the nearest rotation of each row with the Procrustes
    solution for ``O``, from random starts (one start can stall in a local optimum)."""
    best = None
    for _ in range(restarts):
        q, _ = torch.linalg.qr(torch.randn(9, 9, generator=generator, dtype=embedding.dtype))
        for _ in range(iterations):
            rotations = roma.special_procrustes((embedding @ q).reshape(-1, 3, 3))
            u, _, vt = torch.linalg.svd(embedding.T @ rotations.reshape(-1, 9))
            previous, q = q, u @ vt
            if torch.allclose(q, previous, atol=1e-7):
                break
        rotations = roma.special_procrustes((embedding @ q).reshape(-1, 3, 3))
        residual = float(((embedding @ q - rotations.reshape(-1, 9)) ** 2).sum())
        if best is None or residual < best[0]:
            best = (residual, q)
    return best[1]


def spectral_start(
    n: int, distance: DistanceFunction, anchors: int, generator: torch.Generator
) -> torch.Tensor:
    """Starting rotations ``(N, 3, 3)`` from the distances in closed form.

    ``tr(R_i^T R_j) = 1 + 2 cos d_ij`` is the Gram matrix of the flattened rotations, of rank
    9: its leading eigenvectors give the flattened rotations up to an orthogonal transform of
    R^9 (which contains ``R -> A R B`` and ``R -> R^T``), fixed by rounding the anchors' rows
    to rotations. The matrix is formed on ``anchors`` random images; the others are placed
    from their distances to the anchors (Nystrom extension).
    """
    order = torch.randperm(n, generator=generator)
    anchor = order[: min(n, anchors)]
    gram = 1 + 2 * torch.cos(_distance_block(distance, anchor, anchor).double())
    values, vectors = _top_eigenvectors(gram, 9, generator)
    values = values.clamp(min=1e-6)
    embedding = torch.empty(n, 9, dtype=torch.float64)
    embedding[anchor] = vectors * values.sqrt()
    rest = order[len(anchor) :]
    if len(rest):
        cross = 1 + 2 * torch.cos(_distance_block(distance, rest, anchor).double())
        embedding[rest] = cross @ vectors / values.sqrt()
    rounding = _rounding_transform(embedding[anchor], generator)
    return roma.special_procrustes((embedding @ rounding).reshape(-1, 3, 3))


def _fit_once(n, distance, config, generator, device, start=None) -> Recovery:
    began = time.perf_counter()
    if start is None:
        quaternions = torch.randn(n, 4, generator=generator)
    else:
        quaternions = roma.rotmat_to_unitquat(start.double()).float()
    quaternions = quaternions.to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([quaternions], lr=config.lr)
    val_i, val_j = _random_pairs(n, config.validation_pairs, generator, device)
    with torch.no_grad():
        val_target = distance(val_i, val_j)

    def held_out_loss() -> float:
        with torch.no_grad():
            q = torch.nn.functional.normalize(quaternions, dim=-1)
            return float(((quaternion_distances(q[val_i], q[val_j]) - val_target) ** 2).mean())

    losses = [held_out_loss()]
    best, best_q, stale, step = losses[0], quaternions.detach().clone(), 0, 0
    for step in range(1, config.max_steps + 1):
        i, j = _random_pairs(n, config.pairs_per_step, generator, device)
        with torch.no_grad():
            target = distance(i, j)
        q = torch.nn.functional.normalize(quaternions, dim=-1)
        loss = ((quaternion_distances(q[i], q[j]) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.check_every == 0:
            losses.append(held_out_loss())
            if losses[-1] < best * (1 - config.min_improvement):
                stale = 0
            else:
                stale += 1
            if losses[-1] < best:
                best, best_q = losses[-1], quaternions.detach().clone()
            if stale >= config.patience or best < config.tolerance:
                break
    rotations = roma.unitquat_to_rotmat(torch.nn.functional.normalize(best_q, dim=-1))
    return Recovery(rotations.double().cpu(), losses, step, time.perf_counter() - began)


def recover_orientations(
    n: int,
    distance: DistanceFunction,
    config: RecoverConfig | None = None,
    device: str | torch.device = "cpu",
) -> Recovery:
    """Rotations ``(N, 3, 3)`` whose pairwise angles match ``distance(i, j)`` (radians), up
    to ``R -> A R B`` and ``R -> R^T``. ``distance`` maps index tensors ``(P,)`` to ``(P,)``
    (:func:`feature_distances` for a trained network)."""
    config = config or RecoverConfig()
    if n < 3:
        raise ValueError("at least three images are needed")
    generator = torch.Generator().manual_seed(config.seed)
    starts: list[torch.Tensor | None] = [None] * config.restarts
    if config.spectral_anchors > 0:
        starts[0] = spectral_start(n, distance, config.spectral_anchors, generator)
    fits = [_fit_once(n, distance, config, generator, device, start) for start in starts]
    best = min(fits, key=lambda fit: fit.final_loss)
    best.seconds = sum(fit.seconds for fit in fits)
    return best
