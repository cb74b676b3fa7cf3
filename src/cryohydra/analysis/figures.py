"""The analyses of semi-amortized inference (``cryohydra analyze``), each one PNG.

- :func:`plot_posteriors`: the pose posterior of chosen particles on the sphere (the model's
  loss over a HEALPix grid of viewing directions, the best over in-plane angles), each head's
  candidate marked, with a gnomonic close-up (a finer local grid) around the true or best mode.
- :func:`plot_head_specialisation`: with true poses, each head's mean rotation error per
  HEALPix cell of true viewing direction, one map per head.
- :func:`plot_trajectories`: the path of chosen particles' viewing directions across epochs
  (encoder poses in the amortized stage or ``--mode amortized``, then auto-decoding), drawn
  over their posterior maps.

All poses are compared in the frame of the amortized model: the true poses are brought into
it by the global alignment (rotation and hand, modulo the symmetry) of the encoder's best
candidates to the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryohydra.analysis.model import AmortizedModel
from cryohydra.geometry.rotations import euler_relion_to_matrix, viewing_direction
from cryohydra.metrics.pose_error import (
    align_rotations,
    rotation_errors_under_alignment,
    true_mates_in_estimate_frame,
)
from cryohydra.report.figures import new_figure, save
from cryohydra.report.sphere import (
    directions_to_lonlat,
    draw_mollweide,
    gnomonic_coordinates,
    healpix_mean,
    tangent_basis,
)

__all__ = [
    "Candidates",
    "all_candidates",
    "plot_head_specialisation",
    "plot_posteriors",
    "plot_trajectories",
    "posterior_maps",
]


@dataclass
class Candidates:
    """Every image's candidate poses from the amortized model, the winner, and (with true
    poses) the true poses' mates in the model's frame."""

    rotations: np.ndarray  # (N, C, 3, 3)
    shifts_a: np.ndarray  # (N, C, 2)
    winner: np.ndarray  # (N,)
    true_mates: np.ndarray | None  # (N, G, 3, 3)
    alignment: tuple[np.ndarray, bool] | None

    @property
    def best(self) -> np.ndarray:
        return self.rotations[np.arange(len(self.winner)), self.winner]


def all_candidates(model: AmortizedModel, batch_size: int = 256) -> Candidates:
    """Run the amortized model's encoder over every particle."""
    n = len(model.particles)
    rotations, shifts, winners = [], [], []
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(n, start + batch_size))
        r, s = model.head_poses(rows)
        rotations.append(r.cpu().double().numpy())
        shifts.append(s.cpu().double().numpy())
        winners.append(model.best_head(rows))
    out = Candidates(
        np.concatenate(rotations), np.concatenate(shifts), np.concatenate(winners), None, None
    )
    if model.particles.has_poses:
        truth, _ = model.particles.require_poses()
        q, mirrored = align_rotations(out.best, truth, model.symmetry)
        mates = true_mates_in_estimate_frame(truth, q, mirrored, model.symmetry)
        out.true_mates = mates.numpy()
        out.alignment = (q.numpy(), mirrored)
    return out


def posterior_maps(
    model: AmortizedModel, candidates: Candidates, rows: list[int], nside: int
) -> list[np.ndarray]:
    """Loss minus its minimum per HEALPix pixel of viewing direction, for each image."""
    maps = []
    for row in rows:
        shift = torch.from_numpy(candidates.shifts_a[row, candidates.winner[row]]).float()
        losses = model.sphere_posterior(row, shift, nside)
        maps.append(losses - losses.min())
    return maps


def _local_rotations(centre: np.ndarray, width_deg: float, samples: int, n_psi: int):
    """Rotations ``(samples^2 * n_psi, 3, 3)`` on a gnomonic grid of viewing directions about
    ``centre`` times ``n_psi`` in-plane angles, and the grid's directions ``(samples^2, 3)``."""
    c, east, north = tangent_basis(centre)
    half = math.tan(math.radians(width_deg / 2))
    u = np.linspace(-half, half, samples)
    uu, vv = np.meshgrid(u, u)
    d = c + uu[..., None] * east + vv[..., None] * north
    d = (d / np.linalg.norm(d, axis=-1, keepdims=True)).reshape(-1, 3)
    tilt = np.arccos(np.clip(d[:, 2], -1, 1))
    rot = np.arctan2(d[:, 1], d[:, 0])
    psi = np.arange(n_psi) * 2 * np.pi / n_psi
    angles = np.stack(
        [np.repeat(rot, n_psi), np.repeat(tilt, n_psi), np.tile(psi, len(d))], axis=-1
    )
    return euler_relion_to_matrix(torch.from_numpy(angles)), d


def _mark(ax, directions: np.ndarray, *args, **kwargs) -> None:
    lon, lat = directions_to_lonlat(np.atleast_2d(directions))
    ax.plot(lon, lat, *args, **kwargs)


def _mark_heads_and_truth(ax, candidates: Candidates, row: int, project) -> None:
    heads = viewing_direction(torch.from_numpy(candidates.rotations[row])).numpy()
    for head, direction in enumerate(heads):
        x, y = project(direction)
        won = head == candidates.winner[row]
        ax.plot(
            x, y, "o", ms=9 if won else 6, mfc="none", mec="white" if won else "orange", mew=1.5
        )
        ax.annotate(
            str(head), (x, y), color="white", fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    if candidates.true_mates is not None:
        for mate in viewing_direction(torch.from_numpy(candidates.true_mates[row])).numpy():
            x, y = project(mate)
            ax.plot(x, y, "*", color="red", ms=11, mec="black", mew=0.5)


def _mollweide_xy(direction: np.ndarray):
    lon, lat = directions_to_lonlat(direction[None])
    return float(lon[0]), float(lat[0])


def plot_posteriors(
    model: AmortizedModel,
    candidates: Candidates,
    rows: list[int],
    maps: list[np.ndarray],
    path: str | Path,
    closeup_deg: float = 40.0,
    closeup_samples: int = 41,
    closeup_psi: int = 72,
) -> Path:
    """One row per particle: the posterior on the sphere with the heads (circles; white: the
    winner) and the true pose and its symmetry mates (red stars); a gnomonic close-up."""
    figure = new_figure(11, 3.6 * len(rows))
    for i, (row, posterior) in enumerate(zip(rows, maps, strict=True)):
        ax = figure.add_subplot(len(rows), 2, 2 * i + 1, projection="mollweide")
        mesh = draw_mollweide(ax, posterior, cmap="viridis_r")
        figure.colorbar(mesh, ax=ax, fraction=0.03).set_label("loss - min", fontsize=7)
        _mark_heads_and_truth(ax, candidates, row, _mollweide_xy)
        ax.set_title(f"particle {row}: loss over viewing directions (best in-plane)", fontsize=8)
        if candidates.true_mates is not None:
            heads = viewing_direction(torch.from_numpy(candidates.true_mates[row])).numpy()
            centre = heads[0]
            label = "true pose"
        else:
            centre = viewing_direction(torch.from_numpy(candidates.best[row])).numpy()
            label = "best head"
        rotations, _ = _local_rotations(centre, closeup_deg, closeup_samples, closeup_psi)
        shift = torch.from_numpy(candidates.shifts_a[row, candidates.winner[row]]).float()
        local = model.losses(row, rotations, shift).cpu().numpy()
        local = local.reshape(closeup_samples, closeup_samples, closeup_psi).min(axis=-1)
        local -= local.min()
        half = math.degrees(math.tan(math.radians(closeup_deg / 2)))
        ax2 = figure.add_subplot(len(rows), 2, 2 * i + 2)
        image = ax2.imshow(
            local, origin="lower", cmap="viridis_r", extent=(-half, half, -half, half)
        )
        figure.colorbar(image, ax=ax2, fraction=0.04).set_label("loss - min", fontsize=7)

        def project(direction, centre=centre, half=half):
            xy = gnomonic_coordinates(direction[None], centre)[0]
            inside = np.all(np.abs(xy) <= half)
            return (xy[0], xy[1]) if inside else (np.nan, np.nan)

        _mark_heads_and_truth(ax2, candidates, row, project)
        ax2.set_xlim(-half, half)
        ax2.set_ylim(-half, half)
        ax2.set_xlabel("gnomonic x (deg)", fontsize=8)
        ax2.set_ylabel("gnomonic y (deg)", fontsize=8)
        ax2.set_title(f"close-up about the {label} ({closeup_psi} in-plane angles)", fontsize=8)
    figure.suptitle(
        f"pose posterior of the amortized model (epoch {model.epoch}, "
        f"{model.resolution_a:.1f} Å); circles: heads (white: winner), stars: truth",
        fontsize=9,
    )
    return save(figure, path)


def plot_head_specialisation(
    candidates: Candidates, truth: np.ndarray, path: str | Path, symmetry, nside: int = 4
) -> Path:
    """Each head's mean rotation error (degrees, modulo the symmetry) per HEALPix cell of the
    particles' true viewing direction, and the share of images it wins."""
    assert candidates.alignment is not None
    q, mirrored = candidates.alignment
    directions = viewing_direction(torch.from_numpy(truth)).numpy()
    n_heads = candidates.rotations.shape[1]
    columns = min(4, n_heads)
    rows = math.ceil(n_heads / columns)
    figure = new_figure(3.6 * columns, 2.4 * rows + 0.6)
    mesh = None
    for head in range(n_heads):
        errors = rotation_errors_under_alignment(
            candidates.rotations[:, head], truth, q, mirrored, symmetry
        )
        ax = figure.add_subplot(rows, columns, head + 1, projection="mollweide")
        mesh = draw_mollweide(
            ax, healpix_mean(directions, errors, nside), cmap="magma_r", vmin=0, vmax=180
        )
        ax.set_yticklabels([])
        won = candidates.winner == head
        where = f", {np.median(errors[won]):.1f}° where it wins" if won.any() else ""
        ax.set_title(f"head {head}: wins {100 * won.mean():.0f} %{where}", fontsize=8)
    if mesh is not None:
        figure.colorbar(
            mesh, ax=figure.axes, orientation="horizontal", fraction=0.04, pad=0.04
        ).set_label("mean rotation error (degrees)", fontsize=8)
    figure.suptitle("head specialisation: error per true viewing direction", fontsize=9)
    figure.savefig(path)
    return Path(path)


def _path_segments(directions: np.ndarray):
    """Longitude/latitude pieces of a path, cut where it wraps around the map's edge."""
    lon, lat = directions_to_lonlat(directions)
    cuts = np.nonzero(np.abs(np.diff(lon)) > np.pi)[0] + 1
    return zip(np.split(lon, cuts), np.split(lat, cuts), strict=True)


def plot_trajectories(
    model: AmortizedModel,
    candidates: Candidates,
    rows: list[int],
    maps: list[np.ndarray],
    path: str | Path,
) -> Path:
    """The viewing direction of each chosen particle after every epoch (from the run's
    history), over its posterior map; red stars: the truth."""
    history = model.history
    figure = new_figure(5.6 * min(2, len(rows)), 3.4 * math.ceil(len(rows) / 2))
    columns = min(2, len(rows))
    for i, (row, posterior) in enumerate(zip(rows, maps, strict=True)):
        ax = figure.add_subplot(
            math.ceil(len(rows) / columns), columns, i + 1, projection="mollweide"
        )
        draw_mollweide(ax, posterior, cmap="viridis_r")
        if history:
            epochs = np.array([h.epoch for h in history])
            rotations = np.stack([h.rotations[row] for h in history])
            directions = viewing_direction(torch.from_numpy(rotations)).numpy()
            for lon, lat in _path_segments(directions):
                ax.plot(lon, lat, "-", color="white", lw=1)
            lon, lat = directions_to_lonlat(directions)
            points = ax.scatter(
                lon,
                lat,
                c=epochs,
                cmap="autumn",
                s=16,
                zorder=3,
                edgecolors="black",
                linewidths=0.3,
            )
            auto = [h.epoch for h in history if h.stage != "amortized"]
            if auto:
                ax.set_xlabel(f"auto-decoding from epoch {auto[0]}", fontsize=7)
        if candidates.true_mates is not None:
            for mate in viewing_direction(torch.from_numpy(candidates.true_mates[row])).numpy():
                _mark(ax, mate, "*", color="red", ms=11, mec="black", mew=0.5)
        ax.set_title(f"particle {row}", fontsize=8)
    if history:
        figure.colorbar(points, ax=figure.axes, fraction=0.03).set_label("epoch", fontsize=8)
    figure.suptitle("pose trajectories across epochs over the amortized posterior", fontsize=9)
    figure.savefig(path)
    return Path(path)
