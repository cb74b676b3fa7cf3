"""The report's figures, each a pure function of arrays and log records that writes one PNG.

Every figure is drawn on its own Agg canvas (``matplotlib.figure.Figure``), never through
pyplot's global state, so figures can be made from any thread or process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cryohydra.report.sphere import draw_mollweide, healpix_counts

__all__ = [
    "new_figure",
    "plot_head_usage",
    "plot_map_views",
    "plot_pose_errors",
    "plot_training",
    "plot_viewing_directions",
    "save",
]


def new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def plot_map_views(volume: np.ndarray, pixel_size_a: float, path: str | Path) -> Path:
    """Central slices (top) and projections (bottom) of a ``[z, y, x]`` map along z, y and x."""
    v = np.asarray(volume, dtype=np.float64)
    centre = v.shape[0] // 2
    slices = (v[centre], v[:, centre], v[:, :, centre])
    projections = (v.sum(0), v.sum(1), v.sum(2))
    names = (("x", "y", "z"), ("x", "z", "y"), ("y", "z", "x"))  # (horizontal, vertical, along)
    extent = v.shape[0] * pixel_size_a
    figure = new_figure(9.5, 6.4)
    for row, (images, kind) in enumerate(((slices, "central slice"), (projections, "projection"))):
        for col, (image, (h, w, along)) in enumerate(zip(images, names, strict=True)):
            ax = figure.add_subplot(2, 3, 3 * row + col + 1)
            ax.imshow(image, cmap="gray", origin="lower", extent=(0, extent, 0, extent))
            ax.set_title(f"{kind} along {along}", fontsize=9)
            ax.set_xlabel(f"{h} (Å)", fontsize=8)
            ax.set_ylabel(f"{w} (Å)", fontsize=8)
            ax.tick_params(labelsize=7)
    return save(figure, path)


def _cumulative_minutes(records: Sequence[Mapping]) -> np.ndarray:
    return np.cumsum([r["seconds"] for r in records]) / 60.0


def _switches(ax, runs: Mapping[str, Sequence[Mapping]], against_time: bool) -> None:
    for records in runs.values():
        times = _cumulative_minutes(records)
        for i, record in enumerate(records):
            if record.get("switched"):
                x = times[i] if against_time else record["epoch"] + 0.5
                ax.axvline(x, color="0.5", ls=":", lw=1)


def plot_training(runs: Mapping[str, Sequence[Mapping]], path: str | Path) -> Path:
    """Loss and resolution against epoch (left) and against wall time (right) for each run
    (``name -> log records``); dotted lines: the switch to auto-decoding."""
    figure = new_figure(10, 6.4)
    axes = [figure.add_subplot(2, 2, i + 1) for i in range(4)]
    for name, records in runs.items():
        if not records:
            continue
        epochs = [r["epoch"] for r in records]
        minutes = _cumulative_minutes(records)
        loss = [r["loss"] for r in records]
        limit = [r["loss_resolution_a"] for r in records]
        model = [r.get("model_fsc_vs_reference_a_0.5") for r in records]
        for ax, x in ((axes[0], epochs), (axes[1], minutes)):
            ax.plot(x, loss, "o-", ms=3, label=f"{name}: loss")
        for ax, x in ((axes[2], epochs), (axes[3], minutes)):
            ax.plot(x, limit, "s--", ms=3, label=f"{name}: loss resolution limit")
            if any(m is not None for m in model):
                ax.plot(
                    x,
                    [np.nan if m is None else m for m in model],
                    "o-",
                    ms=3,
                    label=f"{name}: model FSC 0.5 vs truth",
                )
    for i, ax in enumerate(axes):
        against_time = i % 2 == 1
        _switches(ax, runs, against_time)
        ax.set_xlabel("wall time (min)" if against_time else "epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("loss (mean squared error)")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("resolution (Å)")
    for ax in axes[2:]:
        ax.invert_yaxis()
    figure.suptitle("training (dotted: switch to auto-decoding)", fontsize=10)
    return save(figure, path)


def plot_viewing_directions(directions: np.ndarray, path: str | Path, nside: int = 8) -> Path:
    """Distribution of viewing directions ``(N, 3)`` on the sphere: particles per HEALPix pixel
    of order ``nside``, Mollweide projection."""
    counts = healpix_counts(directions, nside)
    figure = new_figure(7.5, 4.4)
    ax = figure.add_subplot(1, 1, 1, projection="mollweide")
    mesh = draw_mollweide(ax, counts)
    figure.colorbar(mesh, ax=ax, orientation="horizontal", fraction=0.05, pad=0.06).set_label(
        f"particles per HEALPix pixel (nside {nside}, {len(counts)} pixels)", fontsize=8
    )
    ax.set_title(f"viewing directions of {len(directions):,} particles", fontsize=10)
    return save(figure, path)


def _shares_per_run(runs: Mapping[str, Sequence[Mapping]], key: str):
    """For the runs whose records log ``key`` (counts per head or class): a figure with one
    panel each, and ``(axes, name, records, epochs, shares)`` per run; None if no run logs it."""
    usable = {name: [r for r in records if r.get(key)] for name, records in runs.items()}
    usable = {name: records for name, records in usable.items() if records}
    if not usable:
        return None
    figure = new_figure(4.2 * len(usable) + 1, 3.8)
    panels = []
    for i, (name, records) in enumerate(usable.items()):
        counts = np.array([r[key] for r in records], dtype=np.float64)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax = figure.add_subplot(1, len(usable), i + 1)
        panels.append((ax, name, records, [r["epoch"] for r in records], share))
    return figure, panels


def plot_head_usage(runs: Mapping[str, Sequence[Mapping]], path: str | Path) -> bool:
    """Share of images each encoder head wins in each amortized epoch (one panel per run);
    False (nothing written) if no run has an amortized epoch."""
    found = _shares_per_run(runs, "head_usage")
    if found is None:
        return False
    figure, panels = found
    for ax, name, records, epochs, share in panels:
        bottom = np.zeros(len(records))
        for head in range(share.shape[1]):
            ax.bar(epochs, share[:, head], bottom=bottom, label=f"head {head}")
            bottom += share[:, head]
        ax.set_xlabel("epoch (amortized stage)")
        ax.set_ylabel("share of images won")
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    figure.suptitle("how often each head wins (winner-takes-all)", fontsize=10)
    save(figure, path)
    return True


def plot_class_sizes(runs: Mapping[str, Sequence[Mapping]], path: str | Path) -> bool:
    """Each class's share of the particles after each epoch (``--classes``; one panel per
    run); False (nothing written) if no run logged classes."""
    found = _shares_per_run(runs, "class_sizes")
    if found is None:
        return False
    figure, panels = found
    for ax, name, records, epochs, share in panels:
        for klass in range(share.shape[1]):
            ax.plot(epochs, share[:, klass], marker="o", label=f"class {klass + 1}")
        for record in records:
            for event in record.get("reseeded") or []:
                ax.axvline(record["epoch"], color="grey", linestyle=":", linewidth=1)
                ax.annotate(f"re-seeded {event['class']}", (record["epoch"], 0.95), fontsize=6)
        ax.set_xlabel("epoch")
        ax.set_ylabel("share of particles")
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    figure.suptitle("class sizes", fontsize=10)
    save(figure, path)
    return True


def plot_pose_errors(
    runs: Mapping[str, Sequence[Mapping]],
    final_errors_deg: np.ndarray | None,
    path: str | Path,
) -> bool:
    """Rotation error against epoch (median and mean, from the log) and the histogram of the
    final errors; False (nothing written) if no pose errors are known."""
    with_errors = {
        name: [r for r in records if "pose_error" in r] for name, records in runs.items()
    }
    with_errors = {name: records for name, records in with_errors.items() if records}
    if not with_errors and final_errors_deg is None:
        return False
    figure = new_figure(10, 3.9)
    left = figure.add_subplot(1, 2, 1)
    for name, records in with_errors.items():
        epochs = [r["epoch"] for r in records]
        left.plot(
            epochs,
            [r["pose_error"]["median_rotation_deg"] for r in records],
            "o-",
            ms=3,
            label=f"{name}: median",
        )
        left.plot(
            epochs,
            [r["pose_error"]["mean_rotation_deg"] for r in records],
            "s--",
            ms=3,
            label=f"{name}: mean",
        )
    _switches(left, with_errors, against_time=False)
    left.set_yscale("log")
    left.set_xlabel("epoch (dotted: switch)")
    left.set_ylabel("rotation error (degrees)")
    left.grid(True, alpha=0.3)
    if with_errors:
        left.legend(fontsize=7)
    right = figure.add_subplot(1, 2, 2)
    if final_errors_deg is not None:
        errors = np.asarray(final_errors_deg, dtype=np.float64)
        right.hist(errors, bins=np.linspace(0, 180, 91), color="tab:blue")
        right.set_yscale("log")
        right.set_title(
            f"final: median {np.median(errors):.2f}°, mean {errors.mean():.2f}°", fontsize=9
        )
    right.set_xlabel("rotation error (degrees)")
    right.set_ylabel("particles")
    right.grid(True, alpha=0.3)
    save(figure, path)
    return True
