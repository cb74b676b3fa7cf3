"""Training the Siamese distance network (``cryohydra orient train``).

Each step draws a batch of ``B`` images of one training set (pairs only make sense within one
protein), embeds them once and compares all ``B (B - 1) / 2`` pairs: the loss is the squared
difference between the predicted and the true orientation distance, with pairs reweighted so
that the distribution of true distances is flat (:func:`~.distances.flat_weights`). Distances of
a symmetric molecule are taken modulo its point group (views related by a symmetry are the
same image).

Sets simulated for training are stored clean, and every batch gets fresh noise at the set's SNR
(:meth:`TrainingSet.batch`): a stack with its noise fixed is learned by heart within a few
epochs (on 10,000 images at SNR 1/16 the training loss fell below the validation loss by
epoch 10 and the distance fit then failed), fresh noise makes every epoch new data.

Every epoch ends with a validation on held-out images of each set and a checkpoint
(``checkpoint.pt``, continue with ``resume=True``); the model of the best validation loss is
saved as ``model.pt`` with its training configuration and history (:func:`load_model`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cryohydra.geometry.rotations import geodesic_distance
from cryohydra.io.batches import ParticleBatches
from cryohydra.io.errors import InputFileError, check_writable
from cryohydra.io.particles import ParticleSet
from cryohydra.metrics.pose_error import symmetry_group
from cryohydra.models.distance import DistanceEncoder
from cryohydra.orient.distances import flat_weights, predicted_distances, upper_pairs
from cryohydra.physics.fourier import fourier_crop_2d

__all__ = [
    "MODEL_FORMAT",
    "OrientTrainConfig",
    "TrainingSet",
    "load_model",
    "symmetric_distances",
    "train_distance_network",
]

MODEL_FORMAT = "cryohydra-orient-distance-1"
_READ_CHUNK = 1000


@dataclass(frozen=True)
class OrientTrainConfig:
    """Settings of the distance network and its training.

    Attributes:
        box_size: the network's input side (px); images are Fourier-cropped to it.
        feature_dim: length of the feature vectors.
        backbone: CNN of :mod:`cryohydra.models.encoder` (``light`` or ``vgg16``).
        batch_size: images per step (all their pairs are compared).
        epochs: passes over the training images.
        lr: Adam learning rate.
        validation_fraction: images of each set held out for validation.
        distance_bins: bins of the flat reweighting of the true distances.
        seed: seeds the split, the initial weights and the batches.
    """

    box_size: int = 32
    feature_dim: int = 32
    backbone: str = "light"
    batch_size: int = 128
    epochs: int = 20
    lr: float = 1e-3
    validation_fraction: float = 0.1
    distance_bins: int = 18
    seed: int = 0

    def __post_init__(self) -> None:
        if self.box_size < 8 or self.box_size % 2:
            raise ValueError(f"box size must be even and >= 8, got {self.box_size}")
        if self.batch_size < 4 or self.epochs < 1 or self.feature_dim < 4:
            raise ValueError("batch size must be >= 4, epochs >= 1 and feature_dim >= 4")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in (0, 1)")


@dataclass
class TrainingSet:
    """Training images with their true rotations ``(N, 3, 3)`` and point group ``(G, 3, 3)``.

    ``images`` are either the images as they will be seen (``noise_std`` 0), already at the
    network's ``box_size``, or *clean* images at their stored box to which :meth:`batch` adds
    fresh white noise of ``noise_std`` (same units) before cropping them to ``box_size``: every
    epoch then sees new noise, and the network cannot learn the noise of a finite set by heart.
    ``info`` describes the set (saved with the model).
    """

    name: str
    images: torch.Tensor
    rotations: torch.Tensor
    group: torch.Tensor
    box_size: int
    noise_std: float = 0.0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, rows: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """The images ``rows`` as the network sees them (``(B, box, box)``, on the CPU)."""
        images = self.images[torch.as_tensor(rows)]
        if self.noise_std > 0:
            noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
            images = images + self.noise_std * noise
        if images.shape[-1] != self.box_size:
            images = fourier_crop_2d(images, self.box_size)
        return images

    @staticmethod
    def from_particles(
        name: str,
        particles: ParticleSet,
        box_size: int,
        symmetry: str | np.ndarray = "C1",
        invert_contrast: bool = False,
        snr: float | None = None,
        info: dict | None = None,
    ) -> TrainingSet:
        """Read a set with its true poses (e.g. made by ``cryohydra simulate``).

        ``snr``: the images are clean (simulated without noise) and each batch gets fresh
        noise for this SNR (``mean var(clean image) / var(noise)`` over the stored box, as in
        ``docs/CONVENTIONS.md``); None: the images are used as they are.
        """
        rotations, _ = particles.require_poses()
        augment = snr is not None and math.isfinite(snr)
        data = ParticleBatches(
            particles,
            working_box=None if augment else box_size,
            invert_contrast=invert_contrast,
        )
        n = len(particles)
        images = torch.cat(
            [data.read(np.arange(s, min(n, s + _READ_CHUNK))) for s in range(0, n, _READ_CHUNK)]
        )
        if not torch.isfinite(images).all():
            raise InputFileError(particles.source, "some images hold NaN or infinite values")
        noise_std = 0.0
        if augment:
            clean_variance = float(images.double().var(dim=(-2, -1), unbiased=False).mean())
            noise_std = math.sqrt(clean_variance / snr)
        group, group_name = symmetry_group(symmetry)
        details = {"source": str(particles.source), "n_particles": n, "symmetry": group_name}
        details["noise"] = f"fresh, SNR {snr:g}" if augment else "as stored"
        details.update(info or {})
        return TrainingSet(
            name,
            images,
            torch.from_numpy(rotations).float(),
            group.float(),
            box_size,
            noise_std,
            details,
        )


def symmetric_distances(rotations: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` orientation distances modulo a point group: ``min_g angle(R_i (R_j g)^T)``."""
    n = rotations.shape[0]
    mates = rotations[:, None] @ group[None].to(rotations)  # (N, G, 3, 3)
    first = rotations[:, None, None].expand(n, n, len(group), 3, 3)
    second = mates[None].expand(n, n, len(group), 3, 3)
    return geodesic_distance(first, second).amin(dim=-1)


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_val = max(2, int(round(fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _pair_loss(
    model: DistanceEncoder, images: torch.Tensor, true: torch.Tensor, bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean squared error over all pairs of a batch, and the absolute errors."""
    predicted = predicted_distances(model(images))
    i, j = upper_pairs(images.shape[0], images.device)
    target = true[i, j]
    difference = predicted[i, j] - target
    weights = flat_weights(target, bins)
    return (weights * difference**2).mean(), difference.detach().abs()


@torch.no_grad()
def _validate(
    model: DistanceEncoder, sets: list[TrainingSet], rows: list[np.ndarray], config, device
) -> dict:
    """Loss and median distance error on each set's held-out images (the same noise every
    epoch, so that epochs compare)."""
    model.eval()
    out = {}
    for data, val in zip(sets, rows, strict=True):
        val = val[:512]
        generator = torch.Generator().manual_seed(config.seed + 1)
        images = data.batch(val, generator).to(device)
        true = symmetric_distances(data.rotations[val], data.group).to(device)
        loss, errors = _pair_loss(model, images, true, config.distance_bins)
        out[data.name] = {
            "loss": float(loss),
            "median_distance_error_rad": float(errors.median()),
        }
    model.train()
    return out


def _save_model(path: Path, model, config, sets, history) -> None:
    payload = {
        "format": MODEL_FORMAT,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training_sets": [{"name": s.name, **s.info} for s in sets],
        "history": history,
    }
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """The trained network (evaluation mode) and the saved payload (configuration, training
    sets, history) from a ``model.pt`` written by :func:`train_distance_network`."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise InputFileError(path, f"not a readable model file: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputFileError(path, "not a distance network saved by `cryohydra orient train`")
    config = OrientTrainConfig(**payload["config"])
    model = DistanceEncoder(config.box_size, config.feature_dim, config.backbone)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


def train_distance_network(
    sets: list[TrainingSet],
    config: OrientTrainConfig,
    outdir: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = False,
    force: bool = False,
    log=print,
) -> dict:
    """Train on ``sets`` into ``outdir`` (``model.pt``, ``checkpoint.pt``, ``training.json``);
    returns the training record."""
    if not sets:
        raise ValueError("no training sets")
    for data in sets:
        if data.box_size != config.box_size or data.images.shape[-1] < config.box_size:
            raise ValueError(f"set {data.name}: images are not made for {config.box_size} px")
        if len(data.images) < 2 * config.batch_size:
            raise ValueError(
                f"set {data.name}: {len(data)} images, fewer than twice the batch size"
            )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {name: outdir / name for name in ("model.pt", "checkpoint.pt", "training.json")}
    if not resume:
        for path in paths.values():
            check_writable(path, force)
    device = torch.device(device)
    rng = np.random.default_rng(config.seed)
    splits = [_split(len(s.images), config.validation_fraction, rng) for s in sets]
    torch.manual_seed(config.seed)
    model = DistanceEncoder(config.box_size, config.feature_dim, config.backbone).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[dict] = []
    best = float("inf")
    start_epoch = 0
    if resume and paths["checkpoint.pt"].exists():
        state = torch.load(paths["checkpoint.pt"], map_location=device, weights_only=False)
        previous = {k: v for k, v in state["config"].items() if k != "epochs"}
        if previous != {k: v for k, v in asdict(config).items() if k != "epochs"}:
            raise ValueError(
                f"{paths['checkpoint.pt']}: was made with other settings (only --epochs may "
                "change on --resume)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
        log(f"resuming after epoch {start_epoch}")
    n_train = sum(len(train) for train, _ in splits)
    steps = max(1, n_train // config.batch_size)
    shares = np.array([len(train) for train, _ in splits], dtype=float) / n_train
    model.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        began = time.perf_counter()
        epoch_rng = np.random.default_rng([config.seed, epoch])
        noise = torch.Generator().manual_seed(int(epoch_rng.integers(2**62)))
        total = 0.0
        for _ in range(steps):
            k = int(epoch_rng.choice(len(sets), p=shares))
            train = splits[k][0]
            rows = np.sort(epoch_rng.choice(train, size=config.batch_size, replace=False))
            data = sets[k]
            true = symmetric_distances(data.rotations[rows], data.group).to(device)
            images = data.batch(rows, noise).to(device)
            loss, _ = _pair_loss(model, images, true, config.distance_bins)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        validation = _validate(model, sets, [val for _, val in splits], config, device)
        val_loss = float(np.mean([v["loss"] for v in validation.values()]))
        record = {
            "epoch": epoch,
            "train_loss": total / steps,
            "validation_loss": val_loss,
            "validation": validation,
            "seconds": time.perf_counter() - began,
        }
        history.append(record)
        medians = ", ".join(
            f"{name} {v['median_distance_error_rad']:.3f}" for name, v in validation.items()
        )
        log(
            f"epoch {epoch}/{config.epochs}: train {record['train_loss']:.4f}, validation "
            f"{val_loss:.4f} (median |error| rad: {medians}), {record['seconds']:.0f} s"
        )
        if val_loss < best:
            best = val_loss
            _save_model(paths["model.pt"], model, config, sets, history)
        checkpoint = {
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best": best,
            "epoch": epoch,
        }
        torch.save(checkpoint, paths["checkpoint.pt"].with_suffix(".tmp"))
        paths["checkpoint.pt"].with_suffix(".tmp").replace(paths["checkpoint.pt"])
    summary = {
        "config": asdict(config),
        "training_sets": [{"name": s.name, **s.info} for s in sets],
        "best_validation_loss": best,
        "history": history,
        "model": str(paths["model.pt"]),
    }
    paths["training.json"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary
