"""An ab-initio job on disk: output folder, per-epoch log and checkpoints, resume, half-sets and
the final map.

The folder's layout is :mod:`cryohydra.io.run_folder`'s.

The final map is a CTF-weighted Fourier backprojection with the estimated poses at the stored
box size (:mod:`cryohydra.reconstruct.backproject`), the same reconstruction as the known-pose
ceiling, so the two are compared like for like. Without ``--half-sets`` its half-maps share
poses from one run and their FSC is optimistic; with ``--half-sets`` each half is an
independent run, half B's poses are moved into half A's frame after aligning the two learned
volumes, and the FSC at 0.143 is the gold standard.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from cryohydra.geometry.symmetry import canonical_mates, point_group
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.diagnostics import convergence_warnings
from cryohydra.inference.distributed import Context, process_group
from cryohydra.inference.frames import poses_into_reference_frame
from cryohydra.inference.train import AMORTIZED, AbInitio
from cryohydra.io.batches import ParticleBatches
from cryohydra.io.errors import InputFileError
from cryohydra.io.history import write_epoch_poses
from cryohydra.io.mrc import write_map
from cryohydra.io.particles import ParticleSet, random_half_split
from cryohydra.io.read import read_particles
from cryohydra.io.run_folder import (
    CHECKPOINT_FILE,
    CLASS_COLUMN,
    DISTRIBUTED_FILE,
    FSC_PLOT_FILE,
    FSC_REFERENCE_FILE,
    HALF_RUNS,
    HISTORY_DIR,
    LOG_FILE,
    MODEL_VOLUME_FILE,
    PARTICLES_FILE,
    POSE_ERROR_PLOT_FILE,
    STARTS_DIR,
    STARTS_FILE,
    SUMMARY_FILE,
    SWITCH_FILE,
    atomic_save,
    claim,
    class_dir_name,
    read_log,
)
from cryohydra.io.star import write_star
from cryohydra.metrics.classification import roc_auc
from cryohydra.metrics.fsc import plot_fsc
from cryohydra.metrics.map_alignment import align_maps
from cryohydra.metrics.pose_error import Symmetry, plot_pose_error_histogram, pose_errors
from cryohydra.metrics.reference import ReferenceMap
from cryohydra.metrics.symmetry import detect_symmetry
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from cryohydra.reconstruct.outputs import write_reconstruction
from cryohydra.report import write_report

__all__ = ["JobOptions", "run_job"]

# Columns written to particles.star: each particle's score (the correlation of its image with
# the projection at its pose) and whether the final map uses it; the simulator's junk label.
SCORE_COLUMN, KEPT_COLUMN, JUNK_COLUMN = "cryohydraScore", "cryohydraKept", "cryohydraJunk"
RANK_COLUMN = "cryohydraRank"  # what --keep-best ranks by (keep_ranking)
WHITENING = "each optics group to one noise variance"
CONTRAST_COLUMN = "cryohydraContrast"  # a simulated set's true contrast (simulate --contrast-sd)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOptions:
    """How to run: where, on what, and what to do with an existing folder."""

    outdir: Path
    device: str = "cpu"
    half_sets: bool = False
    resume: bool = False
    force: bool = False
    reference_map: Path | None = None
    symmetry: Symmetry = "C1"  # a point-group symbol or rotations (G, 3, 3), for pose errors
    detect_symmetry: bool = True  # score point groups on the final map (a few seconds)
    progress: bool = True
    report: bool = True  # write OUTDIR/report.html at the end
    workers: int = 0  # DataLoader processes reading batches ahead (the result is the same)
    init_poses: Path | None = None  # a STAR/.cs of the same particles: start auto-decoding there
    keep_best: float | None = None  # the final map from this fraction of the best-ranked


def _evaluator(particles: ParticleSet, reference: ReferenceMap | None, symmetry: Symmetry):
    """Per-epoch metrics against the truth when the input carries it."""
    if not particles.has_poses and reference is None:
        return None

    def evaluate(run: AbInitio) -> dict:
        """With several classes: the largest class's particles and map."""
        out: dict = {}
        largest = run.largest_class()
        if particles.has_poses:
            rotations, shifts = run.poses()
            true_rot, true_shift = particles.require_poses()
            if run.n_classes > 1:
                chosen = run.class_assignments() == largest
                rotations, shifts = rotations[chosen], shifts[chosen]
                true_rot, true_shift = true_rot[chosen], true_shift[chosen]
            # An ab-initio map's origin is free, like its orientation: shift errors are taken
            # after fitting the map's global translation.
            errors = pose_errors(
                rotations, true_rot, shifts, true_shift, symmetry=symmetry, fit_global_offset=True
            )
            out["pose_error"] = {
                "median_rotation_deg": errors.median_rotation_error_deg,
                "mean_rotation_deg": errors.mean_rotation_error_deg,
                "median_viewing_direction_deg": errors.median_viewing_direction_error_deg,
                "mean_shift_a": errors.mean_shift_error_a,
                "median_shift_a": errors.median_shift_error_a,
                "mirrored": errors.mirrored,
            }
        if reference is not None:
            volume = run.volumes[largest].to_map().cpu()
            result = reference.fsc_of(volume, run.data.pixel_size_a)
            out["model_fsc_vs_reference_a_0.5"] = result["fsc_vs_reference_a_0.5"]
        return out

    return evaluate


def read_init_poses(path: Path, particles: ParticleSet) -> tuple[np.ndarray, np.ndarray]:
    """Poses ``(N, 3, 3)``, ``(N, 2)`` Å of ``--init-poses``: a file (e.g. written by
    ``cryohydra orient recover``) listing the same images as ``particles``, in the same order."""
    given = read_particles(path)
    rotations, shifts = given.require_poses()
    if len(given) != len(particles):
        raise InputFileError(
            path, f"holds {len(given)} particles, the input {particles.source} {len(particles)}"
        )
    names = [Path(str(p)).name for p in given.image_paths]
    ours = [Path(str(p)).name for p in particles.image_paths]
    same = (np.array(names) == np.array(ours)) & (given.image_indices == particles.image_indices)
    if not same.all():
        first = int(np.nonzero(~same)[0][0])
        raise InputFileError(
            path,
            f"row {first + 1} is image {given.image_indices[first] + 1}@{names[first]}, but the "
            f"input's is {particles.image_indices[first] + 1}@{ours[first]}: not the same "
            "particles in the same order",
        )
    return rotations, shifts


def _train(
    particles: ParticleSet,
    config: ReconstructConfig,
    run_dir: Path,
    options: JobOptions,
    reference: ReferenceMap | None,
    context: Context,
    device: torch.device,
    init_poses: tuple[np.ndarray, np.ndarray] | None = None,
    trial: bool = False,
) -> AbInitio:
    """Train (or resume) one run in ``run_dir``; returns the trained run. In a torchrun run
    every rank trains its shard; rank 0 alone writes the files. ``init_poses``: start the
    auto-decoding stage from these poses of ``particles`` (not on resume). ``trial``: stop
    after the first auto-decoding epoch (one of several starts)."""
    main = context.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    context.barrier()
    run = AbInitio(
        particles,
        config,
        device,
        _evaluator(particles, reference, options.symmetry),
        context,
        options.workers,
    )
    checkpoint = run_dir / CHECKPOINT_FILE
    log_path = run_dir / LOG_FILE
    records: list[str] = []
    if options.resume and checkpoint.exists():
        run.load_state_dict(torch.load(checkpoint, map_location=device))
        if log_path.exists():
            for line in log_path.read_text().splitlines():
                if line.strip() and json.loads(line)["epoch"] <= run.epoch:
                    records.append(line)
        log.info("resuming %s after epoch %d (%s)", run_dir, run.epoch, run.stage)
    elif init_poses is not None:
        run.start_from_poses(*init_poses)
    if main:
        log_path.write_text("".join(line + "\n" for line in records))

    def on_epoch(current: AbInitio, record: dict) -> None:
        rotations, shifts = current.poses()  # gathered from every rank
        winners = current.winners_all()
        classes = current.class_assignments() if current.n_classes > 1 else None
        state = current.state_dict()
        if not main:
            return
        if current.switch_snapshot is not None:
            atomic_save(current.switch_snapshot, run_dir / SWITCH_FILE)
            current.switch_snapshot = None
        write_epoch_poses(
            run_dir,
            record["epoch"],
            record["stage"],
            torch.from_numpy(rotations),
            torch.from_numpy(shifts),
            winners if record["stage"] == AMORTIZED else None,
            classes,
        )
        frames = (record.get("pose_search") or {}).get("group_frame")
        for klass, frame in enumerate([frames] if isinstance(frames, dict) else frames or []):
            log.info(
                "imposing %s from epoch %d: its axes found on the map%s (score %.3f), map and "
                "poses turned by %.1f degrees onto RELION's axes",
                frame["group"],
                record["epoch"] + 1,
                "" if isinstance(frames, dict) else f" of class {klass + 1}",
                frame["score"],
                frame["turned_deg"],
            )
        with log_path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        atomic_save(state, checkpoint)

    run.fit(on_epoch, progress=options.progress, trial=trial)
    if trial:
        return run
    seen = run.seen_rows()
    largest = run.largest_class()
    if main:
        for klass, volume in enumerate(run.volumes):
            folders = [run_dir / class_dir_name(klass + 1)] if run.n_classes > 1 else []
            if klass == largest:
                folders.append(run_dir)
            for folder in folders:
                folder.mkdir(exist_ok=True)
                write_map(
                    folder / MODEL_VOLUME_FILE,
                    volume.to_map().cpu().numpy(),
                    run.data.pixel_size_a,
                    force=True,
                )
        if context.active:
            (run_dir / DISTRIBUTED_FILE).write_text(
                json.dumps({"world_size": context.world_size, "rows_per_rank": seen}) + "\n"
            )
    return run


def _train_best_start(
    particles: ParticleSet,
    config: ReconstructConfig,
    run_dir: Path,
    options: JobOptions,
    reference: ReferenceMap | None,
    context: Context,
    device: torch.device,
    init_poses: tuple[np.ndarray, np.ndarray] | None = None,
) -> AbInitio:
    """:func:`_train` with ``config.starts`` starts: each start (seed ``config.seed + k``) is
    trained in ``run_dir/starts/start_k`` to the end of its first auto-decoding epoch; the one
    with the lowest loss there is copied into ``run_dir`` and trained to the end. The choice is
    written to ``run_dir/starts.json``; a resumed run resumes the starts, or the chosen one."""
    if config.starts == 1 or init_poses is not None:
        return _train(particles, config, run_dir, options, reference, context, device, init_poses)
    choice_file = run_dir / STARTS_FILE
    if options.resume and choice_file.exists() and (run_dir / CHECKPOINT_FILE).exists():
        chosen = json.loads(choice_file.read_text())["chosen_seed"]
        log.info("resuming the chosen start (seed %d) in %s", chosen, run_dir)
        return _train(
            particles, replace(config, seed=chosen), run_dir, options, reference, context, device
        )
    starts = []
    for k in range(config.starts):
        start_config = replace(config, seed=config.seed + k, starts=1)
        start_dir = run_dir / STARTS_DIR / f"start_{k}"
        trial = _train(
            particles, start_config, start_dir, options, reference, context, device, trial=True
        )
        last = read_log(start_dir / LOG_FILE)[-1] if context.is_main else {}
        starts.append(
            {
                "start": k,
                "seed": start_config.seed,
                "epoch": trial.epoch,
                "switch_epoch": trial.switch_epoch,
                "loss": last.get("loss"),
                # with true poses in the input (benchmarks): how good each start was
                "median_rotation_error_deg": last.get("pose_error", {}).get("median_rotation_deg"),
            }
        )
        del trial
    best = context.broadcast_object(
        min(range(len(starts)), key=lambda k: starts[k]["loss"]) if context.is_main else None
    )
    chosen_dir = run_dir / STARTS_DIR / f"start_{best}"
    if context.is_main:
        for name in (CHECKPOINT_FILE, LOG_FILE, SWITCH_FILE):
            if (chosen_dir / name).exists():
                shutil.copy2(chosen_dir / name, run_dir / name)
        shutil.copytree(chosen_dir / HISTORY_DIR, run_dir / HISTORY_DIR, dirs_exist_ok=True)
        choice = {"chosen_start": best, "chosen_seed": starts[best]["seed"], "starts": starts}
        choice_file.write_text(json.dumps(choice, indent=2) + "\n")
        for k in range(len(starts)):  # the starts' logs and poses stay; their states go
            (run_dir / STARTS_DIR / f"start_{k}" / "checkpoint.pt").unlink(missing_ok=True)
        log.info(
            "starts: losses %s after their first auto-decoding epoch; continuing start %d",
            ", ".join(f"{s['loss']:.1f}" for s in starts),
            best,
        )
    context.barrier()
    return _train(
        particles,
        replace(config, seed=starts[best]["seed"]),
        run_dir,
        replace(options, resume=True),
        reference,
        context,
        device,
    )


def run_job(particles: ParticleSet, config: ReconstructConfig, options: JobOptions) -> dict:
    """Run ``cryohydra reconstruct`` end to end; returns the summary written to summary.json.

    Under ``torchrun`` every rank calls this: training is shared
    (:mod:`~cryohydra.inference.distributed`), and rank 0 alone claims the folder, writes
    the files and makes the final map; the other ranks return ``{"rank": r}``.
    """
    started = time.perf_counter()
    with process_group(options.device) as (context, device):
        return _run_job(particles, config, options, context, device, started)


def _run_job(
    particles: ParticleSet,
    config: ReconstructConfig,
    options: JobOptions,
    context: Context,
    device: torch.device,
    started: float,
) -> dict:
    outdir = Path(options.outdir)
    if config.symmetry != "C1" and isinstance(options.symmetry, str) and options.symmetry == "C1":
        options = replace(options, symmetry=config.symmetry)  # pose errors modulo the group
    description = {
        "input": str(Path(particles.source).resolve()),
        "n_particles": len(particles),
        "particles": particles.fingerprint(),
        "config": config.to_dict(),
        "half_sets": options.half_sets,
        "symmetry": (
            options.symmetry
            if isinstance(options.symmetry, str)
            else np.asarray(options.symmetry).tolist()
        ),
        "init_poses": None if options.init_poses is None else str(options.init_poses.resolve()),
        # How --whiten weighs the optics groups (a run whitened otherwise, each group to its
        # own variance before 2026-12-07, does not resume under it).
        "whitening": WHITENING if config.whiten else None,
        "symmetry_name": options.symmetry
        if isinstance(options.symmetry, str)
        else (f"{len(options.symmetry)} given operators"),
    }
    failure, input_warnings = None, []
    if context.is_main:
        try:
            scan_started = time.perf_counter()
            particles.scan_images()  # a NaN, infinite or constant image: refused before any work
            AbInitio.check(particles, config)  # settings these particles cannot have
            if config.classes > 1 and (options.half_sets or options.init_poses is not None):
                raise ValueError(
                    f"--classes {config.classes} does not work with --half-sets or --init-poses "
                    "yet (docs/classes.md)"
                )
            log.info(
                "read the %d images: none holds NaN or infinity or is constant (%.1f s)",
                len(particles),
                time.perf_counter() - scan_started,
            )
            claim(
                outdir,
                description,
                options.resume,
                options.force,
                config_defaults=ReconstructConfig().to_dict(),
            )
            input_warnings = _input_warnings(
                ParticleBatches(
                    particles, config.working_box, invert_contrast=config.invert_contrast
                ),
                config,
            )
        except (InputFileError, ValueError) as error:  # every rank raises it, none waits
            failure = error
    failure = context.broadcast_object(failure)
    if failure is not None:
        raise failure
    if particles.ctf is None:
        log.warning("%s has no CTF parameters: reconstructing without CTF", particles.source)
    reference = None if options.reference_map is None else ReferenceMap(options.reference_map)
    init = None if options.init_poses is None else read_init_poses(options.init_poses, particles)
    truth = particles.require_poses() if particles.has_poses else None
    bare = particles.with_poses(None, None)

    if options.half_sets:
        halves = random_half_split(len(particles), config.seed)
        runs = [
            _train_best_start(
                particles.subset(h),
                config,
                outdir / name,
                options,
                reference,
                context,
                device,
                None if init is None else (init[0][h], init[1][h]),
            )
            for h, name in zip(halves, HALF_RUNS, strict=True)
        ]
        poses = [r.poses() for r in runs]  # every rank gathers
        half_scores = [r.particle_scores() for r in runs]
        half_amplitudes = [r.amplitude_scales() for r in runs]
        if not context.is_main:
            return {"rank": context.rank}
        scores = np.empty(len(particles))
        scores[halves[0]], scores[halves[1]] = half_scores
        amplitudes = np.empty(len(particles))
        amplitudes[halves[0]], amplitudes[halves[1]] = half_amplitudes
        rotations = np.empty((len(particles), 3, 3))
        shifts = np.empty((len(particles), 2))
        rotations[halves[0]], shifts[halves[0]] = poses[0]
        alignment = align_maps(
            runs[1].volume.to_map().cpu(), runs[0].volume.to_map().cpu(), runs[0].data.pixel_size_a
        )
        rotations[halves[1]], shifts[halves[1]] = poses_into_reference_frame(*poses[1], alignment)
        training = [_run_summary(r) for r in runs]
        half_split: tuple[np.ndarray, np.ndarray] | None = halves
        classes = np.zeros(len(particles), dtype=np.int64)
    else:
        run = _train_best_start(
            particles, config, outdir, options, reference, context, device, init
        )
        rotations, shifts = run.poses()
        scores = run.particle_scores()
        amplitudes = run.amplitude_scales()
        classes = run.class_assignments()
        if not context.is_main:
            return {"rank": context.rank}
        training = [_run_summary(run)]
        half_split = None
    trained = time.perf_counter() - started
    run_dirs = [outdir / h for h in HALF_RUNS] if options.half_sets else [outdir]
    for entry, run_dir in zip(training, run_dirs, strict=True):
        if (run_dir / STARTS_FILE).exists():
            entry["starts"] = json.loads((run_dir / STARTS_FILE).read_text())

    if config.symmetry != "C1":  # each pose as its mate in the group's asymmetric unit
        group = point_group(config.symmetry)
        rotations = canonical_mates(torch.from_numpy(rotations), group).numpy()
    # Where the run estimated amplitudes, --keep-best ranks by them and the score together.
    estimated_amplitudes = config.amplitude_scale and all(
        entry["switch_epoch"] is not None for entry in training
    )
    ranking = keep_ranking(scores, amplitudes if estimated_amplitudes else None)
    kept = _kept(ranking, options.keep_best, scores)
    estimated = bare.with_poses(rotations, shifts if config.predict_shifts else None)
    if estimated.ctf is not None:  # the amplitudes the run used (estimated or the input's)
        estimated = estimated.with_amplitude_scale(amplitudes)
    estimated = replace(
        estimated,
        extra_columns={
            **estimated.extra_columns,
            SCORE_COLUMN: scores,
            RANK_COLUMN: ranking,
            KEPT_COLUMN: np.isin(np.arange(len(scores)), kept).astype(np.int64),
            **({CLASS_COLUMN: classes + 1} if config.classes > 1 else {}),
        },
    )
    write_star(outdir / PARTICLES_FILE, estimated, force=True)

    def reconstruct(rows: np.ndarray):
        return reconstruct_known_poses(
            estimated.subset(rows),
            seed=config.seed,
            invert_contrast=config.invert_contrast,
            device=device,
            progress=options.progress,
            halves=None if half_split is None else _positions_in(rows, half_split),
            symmetry=config.symmetry,
            whiten=config.whiten,
        )

    class_summary = None
    if config.classes > 1:  # each class's maps in its folder; the top level: the largest's
        largest = int(np.argmax(np.bincount(classes, minlength=config.classes)))
        class_summary = _class_outputs(
            classes, kept, config.classes, reconstruct, outdir, reference, rotations, truth, options
        )
        top = kept[classes[kept] == largest]
        log.info(
            "%d classes of %s particles; the top-level maps are class %d's",
            config.classes,
            "/".join(str(c["particles"]) for c in class_summary),
            largest + 1,
        )
    else:
        top = kept
    result = reconstruct(top)
    pixel = result.pixel_size_a
    curve = write_reconstruction(result, outdir, force=True)
    assert curve is not None
    curves = {"half-maps (masked)": curve}
    summary: dict = {
        "input": str(particles.source),
        "n_particles": len(particles),
        "mode": config.mode,
        "half_sets": options.half_sets,
        "training": training,
        "training_seconds": trained,
        "half_map_resolution_a_0.143": curve.resolution_a(0.143),
        "gold_standard": options.half_sets,
        "pixel_size_a": pixel,
        "nyquist_a": 2 * pixel,
        "particle_scores": _score_summary(
            scores, amplitudes if estimated_amplitudes else None, ranking, kept, particles
        ),
    }
    if config.amplitude_scale:
        summary["amplitude_scale"] = _amplitude_summary(amplitudes, particles)
    if class_summary is not None:
        summary["classes"] = class_summary
        summary["top_level_class"] = largest + 1
    if reference is not None:
        versus = reference.fsc_of(result.full.cpu(), pixel)
        curves["map vs reference"] = versus["curve"]
        (outdir / FSC_REFERENCE_FILE).write_text(
            json.dumps(versus["curve"].to_dict(), indent=2) + "\n"
        )
        summary["resolution_vs_reference_a_0.5"] = versus["fsc_vs_reference_a_0.5"]
    if truth is not None:
        chosen = classes == largest if config.classes > 1 else slice(None)
        errors = pose_errors(
            rotations[chosen],
            truth[0][chosen],
            shifts[chosen],
            truth[1][chosen],
            symmetry=options.symmetry,
            fit_global_offset=True,
        )
        plot_pose_error_histogram(errors, outdir / POSE_ERROR_PLOT_FILE)
        summary["pose_error"] = errors.to_dict()
    if options.detect_symmetry:
        summary["symmetry_detection"] = _detect_symmetry(result.full.cpu(), pixel, summary)
    plot_fsc(curves, outdir / FSC_PLOT_FILE, title="FSC")
    logs = [read_log(d / LOG_FILE) for d in run_dirs]
    warnings = convergence_warnings(logs, summary["half_map_resolution_a_0.143"], 2 * pixel)
    summary["warnings"] = [w.to_dict() for w in warnings]
    # The input's warnings come first: they explain the convergence checks'.
    summary["warnings"][:0] = input_warnings
    for warning in warnings:
        log.warning("%s: %s", outdir, warning)
    summary["total_seconds"] = time.perf_counter() - started
    (outdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if options.report:
        write_report(outdir)
    return summary


def _class_outputs(
    classes: np.ndarray,
    kept: np.ndarray,
    n_classes: int,
    reconstruct,
    outdir: Path,
    reference: ReferenceMap | None,
    rotations: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray] | None,
    options: JobOptions,
) -> list[dict]:
    """Each class's map, half-maps and FSC in ``class_<k>/`` (``reconstruct(rows)`` makes
    them from its kept particles); returns each class's size and resolutions (and, with true
    poses in the input, the pose error of its particles, in its own frame)."""
    out = []
    for klass in range(n_classes):
        members = np.nonzero(classes == klass)[0]
        rows = kept[classes[kept] == klass]
        entry: dict = {"class": klass + 1, "particles": len(members), "in_map": len(rows)}
        out.append(entry)
        if len(rows) < 2:
            log.warning("class %d holds %d particles: no map", klass + 1, len(rows))
            continue
        result = reconstruct(rows)
        folder = outdir / class_dir_name(klass + 1)
        folder.mkdir(exist_ok=True)
        curve = write_reconstruction(result, folder, force=True)
        assert curve is not None
        entry["half_map_resolution_a_0.143"] = curve.resolution_a(0.143)
        if reference is not None:
            versus = reference.fsc_of(result.full.cpu(), result.pixel_size_a)
            entry["resolution_vs_reference_a_0.5"] = versus["fsc_vs_reference_a_0.5"]
        if truth is not None and len(members) > 1:
            errors = pose_errors(rotations[members], truth[0][members], symmetry=options.symmetry)
            entry["median_rotation_error_deg"] = errors.median_rotation_error_deg
            entry["mean_rotation_error_deg"] = errors.mean_rotation_error_deg
    return out


def _input_warnings(data: ParticleBatches, config: ReconstructConfig) -> list[dict]:
    """What the images, as read, say about the settings: dark particles without
    ``--invert-contrast`` (or bright ones with it), coloured noise without ``--whiten``. Each
    is logged and returned in the summary's form."""
    found = []
    contrast = data.contrast_warning()
    if contrast is not None:
        found.append(
            {"code": "contrast", "message": contrast, "advice": "--invert-contrast as it says"}
        )
    colour = None if config.whiten else data.colour_warning()
    if colour is not None:
        advice = (
            "--whiten, with --amplitude-scale (on the realistic HSP90 sets of docs/noise.md the "
            "pair met the bar at 64 and 128 px, the plain loss only at 128 px)"
        )
        found.append({"code": "coloured_noise", "message": colour, "advice": advice})
    for warning in found:
        log.warning("%s Try: %s.", warning["message"], warning["advice"])
    return found


def _detect_symmetry(volume: torch.Tensor, pixel_size_a: float, summary: dict) -> dict:
    """The point group the final map shows (judged at its half-map resolution, or coarser),
    logged with what to do about it."""
    judged_at = summary["half_map_resolution_a_0.143"]
    detection = detect_symmetry(volume, pixel_size_a, resolution_a=judged_at)
    log.info("%s", detection.summary())
    if detection.symbol != "C1":
        log.info(
            "the map looks %s-symmetric: check it, then try --symmetry %s",
            detection.symbol,
            detection.symbol,
        )
    return detection.to_dict()


def keep_ranking(scores: np.ndarray, amplitudes: np.ndarray | None) -> np.ndarray:
    """What ``--keep-best`` ranks the particles by, ``(N,)`` in [0, 1] (higher is better).

    Without estimated ``amplitudes``: the score's percentile. With them: the lower of the
    score's and the amplitude's percentiles, so that a particle ranks only as high as the worse
    of how well its image matches the projection at its pose (the score: molecules left in a
    wrong pose score low) and how much of the molecule it holds (the amplitude: empty ice and
    carbon edges fit with a small one). On the realistic set (docs/noise.md) the score alone
    told junk apart with ROC AUC 0.83 (bar 0.9), and the best 80 % by amplitude alone kept
    more molecules in wrong poses, with a map that swung about the bar with the half-split;
    the worse of the two ranks met both bars. A NaN ranks lowest; equal values share their
    mean rank."""
    ranking = _percentiles(scores)
    return ranking if amplitudes is None else np.minimum(ranking, _percentiles(amplitudes))


def _percentiles(values: np.ndarray) -> np.ndarray:
    """Each value's rank among ``values`` as a fraction: 0 the lowest, 1 the highest (NaN the
    lowest; ties their mean rank)."""
    ranks = rankdata(_nan_lowest(values), method="average") - 1
    return ranks / max(len(values) - 1, 1)


def _nan_lowest(values: np.ndarray) -> np.ndarray:
    """``values`` as float64 with every NaN made -inf, so that it sorts lowest."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def _kept(ranking: np.ndarray, keep_best: float | None, scores: np.ndarray) -> np.ndarray:
    """The particles the final map is made of: all, or the ``keep_best`` fraction ranked
    highest, ties broken by the score (sorted indices)."""
    if keep_best is None:
        return np.arange(len(ranking))
    count = max(2, int(round(keep_best * len(ranking))))
    order = np.lexsort((-_nan_lowest(scores), -ranking))
    return np.sort(order[:count])


def _positions_in(kept: np.ndarray, halves: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Each half-set as positions in ``kept`` (the particles of the final map)."""
    return tuple(np.nonzero(np.isin(kept, half))[0] for half in halves)


def _score_summary(
    scores: np.ndarray,
    amplitudes: np.ndarray | None,
    ranking: np.ndarray,
    kept: np.ndarray,
    particles: ParticleSet,
) -> dict:
    """The scores' spread, what ``--keep-best`` ranked by and kept, and (for a simulated set
    that labels its junk) how well the score, the estimated ``amplitudes`` if given, and the
    ``ranking`` tell the molecule from the junk."""
    out: dict = {
        "median": float(np.median(scores)),
        "ranked_by": "score" if amplitudes is None else "score and amplitude",
        "kept": len(kept),
        "lowest_kept": float(scores[kept].min()),
    }
    labels = particles.extra_columns.get(JUNK_COLUMN)
    if labels is not None:
        junk = np.asarray(labels).astype(int) == 1
        if 0 < junk.sum() < len(junk):
            out["junk_roc_auc"] = roc_auc(scores, ~junk)
            out["ranking_junk_roc_auc"] = roc_auc(ranking, ~junk)
            out["junk_in_kept"] = float(junk[kept].mean())
            if amplitudes is not None:
                out["amplitude_junk_roc_auc"] = roc_auc(amplitudes, ~junk)
    return out


def _amplitude_summary(amplitudes: np.ndarray, particles: ParticleSet) -> dict:
    """The estimated amplitudes' spread and, for a simulated set that records each particle's
    true contrast, their correlation with it over the molecule's particles (not the junk)."""
    out: dict = {
        "sd": float(amplitudes.std()),
        "min": float(amplitudes.min()),
        "max": float(amplitudes.max()),
    }
    truth = particles.extra_columns.get(CONTRAST_COLUMN)
    if truth is not None:
        labels = particles.extra_columns.get(JUNK_COLUMN)
        real = np.ones(len(amplitudes), bool) if labels is None else np.asarray(labels) != 1
        truth = np.asarray(truth, dtype=np.float64)
        if real.sum() > 2 and truth[real].std() > 0:
            out["correlation_with_truth"] = float(np.corrcoef(amplitudes[real], truth[real])[0, 1])
    return out


def _run_summary(run: AbInitio) -> dict:
    return {
        "epochs": run.epoch,
        "switch_epoch": run.switch_epoch,
        "working_box": run.data.working_box,
        "working_pixel_size_a": run.data.pixel_size_a,
    }
