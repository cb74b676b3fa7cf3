"""``OUTDIR/report.html``: what a run of ``cryohydra reconstruct`` did, as one page to open.

The page is self-contained (every figure a PNG embedded as a data URI, no script, no network)
and its PNGs are also written beside it (``report_*.png``). It is made from what the run folder
holds, so it can be made at the end of a run, again at any time, or while a run is going
(from its log and latest per-epoch poses, with the model volume of its latest checkpoint):

- the run's settings and a data summary;
- central slices and projections of the map along z, y and x;
- FSC curves (half-maps; against the reference map when one was given) with 0.5 and 0.143;
- loss and resolution against epoch and wall time, the switch to auto-decoding marked;
- the viewing directions on the sphere (HEALPix, Mollweide);
- how often each encoder head wins;
- with true poses in the input: rotation error against epoch and its final histogram;
- with ``--classes``: the class sizes against epoch, and each class's map and FSC;
- the figures of ``cryohydra analyze`` (``analysis_*.png``) when present.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import numpy as np
import torch

from cryohydra.geometry.rotations import viewing_direction
from cryohydra.io.history import read_history
from cryohydra.io.mrc import read_map
from cryohydra.io.read import read_particles
from cryohydra.io.run_folder import (
    CHECKPOINT_FILE,
    CLASS_COLUMN,
    FSC_FILE,
    MAP_FILE,
    MODEL_VOLUME_FILE,
    PARTICLES_FILE,
    REPORT_FILE,
    RunFolder,
)
from cryohydra.metrics.fsc import FSCCurve, plot_fsc
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.models.volume import HartleyVolume
from cryohydra.report import figures

__all__ = ["write_report"]

log = logging.getLogger(__name__)


def _read_input(folder: RunFolder):
    """The input's metadata (None if it can no longer be read: the report goes on)."""
    try:
        return folder.read_input()
    except Exception as error:  # noqa: BLE001 - the report goes on without the input
        log.warning("report: cannot read the input %s: %s", folder.description.get("input"), error)
        return None


def _map_and_pixel(folder: RunFolder, particles) -> tuple[np.ndarray, float, str] | None:
    """The final map, else the latest model volume (a checkpoint's, during a run)."""
    final = folder.outdir / MAP_FILE
    if final.exists():
        volume, voxel = read_map(final)
        return np.asarray(volume), float(voxel), "final map (backprojection)"
    model = folder.first_run_dir / MODEL_VOLUME_FILE
    if model.exists():
        volume, voxel = read_map(model)
        return np.asarray(volume), float(voxel), "model volume"
    checkpoint = folder.first_run_dir / CHECKPOINT_FILE
    pixel = folder.working_pixel_size_a(particles)
    if checkpoint.exists() and pixel is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        volume = HartleyVolume.from_state_dict(state["volume"])
        epoch = state["epoch"]
        return volume.to_map().numpy(), pixel, f"model volume after epoch {epoch}"
    return None


def _curves(folder: RunFolder) -> dict[str, FSCCurve]:
    return {label: FSCCurve.from_dict(data) for label, data in folder.fsc_records().items()}


def _symmetry(description: dict):
    value = description.get("symmetry", "C1")
    return np.asarray(value) if isinstance(value, list) else value


def _top_class(folder: RunFolder) -> tuple[int, np.ndarray] | None:
    """A ``--classes`` run's top-level class (1-based; the largest) and which particles it
    holds, from the output STAR or, during the run, the latest epoch's classes (None for one
    class)."""
    star = folder.outdir / PARTICLES_FILE
    if star.exists():
        classes = read_particles(star).extra_columns.get(CLASS_COLUMN)
        if classes is None:
            return None
        classes = np.asarray(classes).astype(np.int64)
    else:
        history = read_history(folder.first_run_dir)
        if not history or history[-1].classes is None:
            return None
        classes = history[-1].classes + 1
    top = int(np.bincount(classes).argmax())
    return top, classes == top


def _final_errors(folder: RunFolder, particles, poses, chosen) -> np.ndarray | None:
    if poses is None or particles is None or not particles.has_poses:
        return None
    rotations = poses[0]
    true_rotations, _ = particles.require_poses()
    if chosen is not None and len(chosen) == len(true_rotations):
        true_rotations = true_rotations[chosen]
    if len(true_rotations) != len(rotations):  # a half-set run in progress: first half only
        return None
    errors = pose_errors(rotations, true_rotations, symmetry=_symmetry(folder.description))
    return errors.rotation_error_deg


def _figures(folder: RunFolder) -> list[tuple[str, Path, str]]:
    """Make the report's PNGs; returns ``(title, path, caption)`` for each one made."""
    out: list[tuple[str, Path, str]] = []
    outdir = folder.outdir
    particles = _read_input(folder)
    found = _map_and_pixel(folder, particles)
    if found is not None:
        volume, pixel, label = found
        path = figures.plot_map_views(volume, pixel, outdir / "report_map.png")
        out.append(("Map", path, f"{label}, {volume.shape[0]} px at {pixel:.3g} Å/px"))
    curves = _curves(folder)
    if curves:
        path = outdir / "report_fsc.png"
        plot_fsc(curves, path, title="Fourier shell correlation")
        text = ", ".join(
            f"{name}: {c.resolution_a(0.143 if 'half' in name else 0.5):.2f} Å at "
            f"{0.143 if 'half' in name else 0.5}"
            for name, c in curves.items()
        )
        out.append(("FSC", path, text))
    runs = {name: records for name, records in folder.logs.items() if records}
    if runs:
        path = figures.plot_training(runs, outdir / "report_training.png")
        out.append(("Training", path, "loss and resolution against epoch and wall time"))
    poses = folder.latest_poses()
    top = _top_class(folder)
    chosen = None
    if poses is not None and top is not None and len(top[1]) == len(poses[0]):
        chosen = top[1]  # a class's poses are in its own frame: the top-level class's
        poses = (poses[0][chosen], poses[1][chosen], f"{poses[2]}, class {top[0]}")
    if poses is not None:
        directions = viewing_direction(torch.from_numpy(poses[0])).numpy()
        path = figures.plot_viewing_directions(directions, outdir / "report_directions.png")
        out.append(("Viewing directions", path, poses[2]))
    if figures.plot_head_usage(runs, outdir / "report_heads.png"):
        out.append(("Encoder heads", outdir / "report_heads.png", "winner-takes-all"))
    final = _final_errors(folder, particles, poses, chosen)
    if figures.plot_pose_errors(runs, final, outdir / "report_pose_error.png"):
        out.append(
            (
                "Pose error",
                outdir / "report_pose_error.png",
                "against the true poses, after "
                f"global alignment, symmetry {folder.description.get('symmetry_name', 'C1')}",
            )
        )
    out.extend(_class_figures(folder, runs))
    for path in sorted(outdir.glob("analysis_*.png")):
        title = path.stem.removeprefix("analysis_").replace("_", " ")
        out.append((f"Analysis: {title}", path, "cryohydra analyze"))
    return out


def _class_figures(folder: RunFolder, runs: dict) -> list[tuple[str, Path, str]]:
    """A ``--classes`` run's figures: class sizes against epoch, each class's map, and the
    classes' half-map FSC curves."""
    out: list[tuple[str, Path, str]] = []
    outdir = folder.outdir
    if figures.plot_class_sizes(runs, outdir / "report_classes.png"):
        out.append(("Classes", outdir / "report_classes.png", "share of particles per class"))
    entries = {c["class"]: c for c in (folder.summary or {}).get("classes", [])}
    curves = {}
    for klass, path in folder.class_folders():
        entry = entries.get(klass, {})
        if (path / MAP_FILE).exists():
            volume, voxel = read_map(path / MAP_FILE)
            figure = figures.plot_map_views(
                np.asarray(volume), float(voxel), outdir / f"report_class_{klass}_map.png"
            )
            caption = f"{entry.get('particles', '?')} particles"
            if entry.get("half_map_resolution_a_0.143") is not None:
                caption += f", half-maps {entry['half_map_resolution_a_0.143']:.2f} Å at 0.143"
            out.append((f"Class {klass}", figure, caption))
        if (path / FSC_FILE).exists():
            curves[f"class {klass}"] = FSCCurve.from_dict(json.loads((path / FSC_FILE).read_text()))
    if curves:
        path = outdir / "report_classes_fsc.png"
        plot_fsc(curves, path, title="each class's half-maps")
        out.append(("Classes: FSC", path, "half-maps (masked) of each class"))
    return out


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _summary_rows(folder: RunFolder) -> list[tuple[str, object]]:
    d = folder.description
    rows: list[tuple[str, object]] = [
        ("input", d.get("input")),
        ("particles", f"{d.get('n_particles', '?'):,}"),
        ("half-sets (gold standard)", d.get("half_sets", False)),
    ]
    summary = folder.summary
    epochs = folder.config.get("epochs")
    done = max((len(r) for r in folder.logs.values()), default=0)
    rows.append(("state", "finished" if summary else f"running: {done} of {epochs} epochs"))
    for records in folder.logs.values():
        switched = [r["epoch"] for r in records if r.get("switched")]
        if switched:
            rows.append(("switch to auto-decoding after epoch", switched[0]))
            break
    if summary:
        rows.append(("half-map FSC 0.143 (Å)", f"{summary['half_map_resolution_a_0.143']:.2f}"))
        if "resolution_vs_reference_a_0.5" in summary:
            rows.append(
                ("FSC 0.5 vs reference (Å)", f"{summary['resolution_vs_reference_a_0.5']:.2f}")
            )
        errors = summary.get("pose_error")
        if errors:
            rows.append(("median rotation error (°)", f"{errors['median_rotation_error_deg']:.2f}"))
        detection = summary.get("symmetry_detection")
        if detection:
            scores = {s["symbol"]: s["score"] for s in detection["scores"]}
            top = max(scores.items(), key=lambda item: item[1], default=("C1", 0.0))
            found = detection["symbol"]
            text = (
                f"{found} (score {scores[found]:.3f}); try --symmetry {found}"
                if found != "C1"
                else f"C1 (best candidate {top[0]} {top[1]:.3f} < {detection['threshold']})"
            )
            rows.append(("point group of the map", text))
        classes = summary.get("classes")
        if classes:
            rows.append(
                (
                    "classes (particles; the top-level maps are the largest's)",
                    ", ".join(f"{c['class']}: {c['particles']:,}" for c in classes),
                )
            )
        rows.append(("training time (min)", f"{summary['training_seconds'] / 60:.1f}"))
        rows.append(("Nyquist (Å)", f"{summary['nyquist_a']:.2f}"))
    return rows


def _warnings_html(folder: RunFolder) -> str:
    """The convergence warnings of a finished run, first thing on the page."""
    summary = folder.summary
    if not summary or "warnings" not in summary:
        return ""
    if not summary["warnings"]:
        return (
            '<p class="ok">Convergence checks: none failed (the search at the switch settled, '
            "the poses stopped moving, the half-maps agree).</p>"
        )
    items = "".join(
        f"<li>{html.escape(w['message'])} <em>Try:</em> {html.escape(w['advice'])}.</li>"
        for w in summary["warnings"]
    )
    return f'<div class="warning"><h2>This run may not have converged</h2><ul>{items}</ul></div>'


_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
.warning { border: 2px solid #c00; background: #fff0f0; padding: 0.5em 1em; }
.ok { color: #060; }
"""


def write_report(outdir: str | Path) -> Path:
    """Write ``OUTDIR/report.html`` (and its PNGs) for a finished or running reconstruction."""
    folder = RunFolder.read(outdir)
    made = _figures(folder)
    sections = []
    for i, (title, path, caption) in enumerate(made):
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        sections.append(
            f'<figure id="figure-{i}"><h2>{html.escape(title)}</h2>'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(Path(path).name)})"
            "</figcaption></figure>"
        )
    settings = _table(sorted(folder.config.items()))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cryohydra reconstruct: {html.escape(folder.outdir.name)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>cryohydra reconstruct: {html.escape(str(folder.outdir))}</h1>"
        f"{_warnings_html(folder)}"
        f"<h2>Summary</h2>{_table(_summary_rows(folder))}"
        f"{''.join(sections)}"
        f"<h2>Settings</h2>{settings}"
        "</body></html>\n"
    )
    path = folder.outdir / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path
