"""Ab-initio reconstruction: recover the poses and the 3D map from particles with CTF.

Semi-amortized pose inference: a multi-head encoder proposes M poses per image and trains only
the winning head (winner-takes-all); once the poses settle (--switch auto, or a fixed epoch)
each particle's pose is refined by its own gradient steps, alternating with volume updates.
Writes to OUTDIR the map and half-maps, the poses as a RELION 3.1 STAR file, the FSC, a
per-epoch log (log.jsonl) and a checkpoint after every epoch (continue with --resume).

Examples:
  cryohydra reconstruct particles.star -o abinitio
  cryohydra reconstruct particles.cs --datadir stacks/ -o abinitio --downsample 64 --half-sets
  cryohydra reconstruct particles.star -o abinitio --resume
  cryohydra reconstruct particles.star -o refined --init-poses orient/poses.star
  torchrun --nproc-per-node 4 -m cryohydra reconstruct particles.star -o abinitio --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryohydra.io.read import read_particles
from cryohydra.reconstruct.config import MODES, ReconstructConfig
from cryohydra.reconstruct.encoder import BACKBONES
from cryohydra.reconstruct.job import JobOptions, run_job

_DEFAULTS = ReconstructConfig()


def _switch(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        epoch = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an epoch, got {value!r}") from None
    if epoch < 1:
        raise argparse.ArgumentTypeError("the switch epoch must be at least 1")
    return epoch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("particles", help="particles with CTF: RELION .star or cryoSPARC .cs")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument("--datadir", default=None, help="folder holding the image stacks")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--downsample",
        type=int,
        default=None,
        metavar="BOX",
        help="train on images Fourier-cropped to this box (px)",
    )
    parser.add_argument(
        "--half-sets",
        action="store_true",
        help="two independent runs on random halves; gold-standard FSC",
    )
    parser.add_argument(
        "--invert-contrast",
        action="store_true",
        help="the stack has dark particles on a bright background",
    )
    parser.add_argument("--mode", choices=MODES, default=_DEFAULTS.mode)
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    parser.add_argument(
        "--switch",
        type=_switch,
        default=_DEFAULTS.switch,
        help="'auto' or the epoch after which auto-decoding starts",
    )
    parser.add_argument(
        "--switch-epoch", dest="switch", type=_switch, help="same as --switch EPOCH"
    )
    parser.add_argument("--heads", type=int, default=_DEFAULTS.n_heads, help="M, poses per image")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default=_DEFAULTS.backbone)
    parser.add_argument("--encoder-lr", type=float, default=_DEFAULTS.encoder_lr)
    parser.add_argument("--volume-lr", type=float, default=_DEFAULTS.volume_lr)
    parser.add_argument(
        "--volume-lr-after-switch", type=float, default=_DEFAULTS.volume_lr_after_switch
    )
    parser.add_argument(
        "--pose-lr",
        type=float,
        default=_DEFAULTS.pose_lr_rad,
        help="per-particle Adam rate of the rotation (radians)",
    )
    parser.add_argument(
        "--pose-lr-shift",
        type=float,
        default=_DEFAULTS.pose_lr_shift_a,
        help="per-particle Adam rate of the shift (Å)",
    )
    parser.add_argument("--pose-steps", type=int, default=_DEFAULTS.pose_steps)
    parser.add_argument(
        "--no-shifts", action="store_true", help="particles are centred: do not estimate shifts"
    )
    parser.add_argument(
        "--max-resolution",
        type=float,
        default=None,
        metavar="ANGSTROM",
        help="highest resolution used in the loss (default Nyquist)",
    )
    parser.add_argument(
        "--start-resolution",
        type=float,
        default=_DEFAULTS.start_resolution_a,
        metavar="ANGSTROM",
        help="resolution limit of the loss while poses are global (before the switch)",
    )
    parser.add_argument(
        "--march-epochs",
        type=int,
        default=_DEFAULTS.march_epochs,
        help="epochs after the switch over which the limit rises to --max-resolution",
    )
    parser.add_argument(
        "--encoder-box",
        type=int,
        default=_DEFAULTS.encoder_box,
        metavar="PX",
        help="the encoder sees images Fourier-cropped to this box (0: the working box)",
    )
    parser.add_argument(
        "--search-rounds",
        type=int,
        default=_DEFAULTS.search_rounds,
        help="rounds of global pose search at the switch (0: start from the best heads)",
    )
    parser.add_argument(
        "--search-coarse-resolution",
        type=float,
        default=_DEFAULTS.search_coarse_resolution_a or 0.0,
        metavar="A",
        help="the search first runs at this coarser resolution (Å), then at --start-resolution "
        "(0: at --start-resolution only)",
    )
    parser.add_argument(
        "--search-candidates",
        action="store_true",
        help="the search also tries each image's encoder candidates (see docs/reconstruct.md)",
    )
    parser.add_argument(
        "--search-refine",
        action="store_true",
        help="the search refines each pose locally every round (see docs/reconstruct.md)",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=_DEFAULTS.starts,
        metavar="N",
        help="independent amortized starts; the run continues the one whose loss is lowest "
        "after its first auto-decoding epoch (costs the amortized stage N times)",
    )
    parser.add_argument(
        "--no-symmetry-check",
        action="store_true",
        help="do not try each particle's pose under the map's self-superposition",
    )
    parser.add_argument(
        "--init-poses",
        default=None,
        metavar="STAR",
        help="poses of the same particles (e.g. from `cryohydra orient recover`): skip the "
        "amortized stage and start auto-decoding from them",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    parser.add_argument(
        "--reference-map", default=None, help="a known map: log the FSC against it (benchmarks)"
    )
    parser.add_argument("--symmetry", default="C1", help="point group for pose errors")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUTDIR")
    parser.add_argument(
        "--force",
        action="store_true",
        help="redo a finished or stopped run in OUTDIR from the start",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader processes reading batches ahead (default 0: read in turn; the "
        "result is the same)",
    )


def config_from_args(args: argparse.Namespace) -> ReconstructConfig:
    return ReconstructConfig(
        mode=args.mode,
        epochs=args.epochs,
        switch=args.switch,
        n_heads=args.heads,
        batch_size=args.batch_size,
        backbone=args.backbone,
        encoder_lr=args.encoder_lr,
        volume_lr=args.volume_lr,
        volume_lr_after_switch=args.volume_lr_after_switch,
        pose_lr_rad=args.pose_lr,
        pose_lr_shift_a=args.pose_lr_shift,
        pose_steps=args.pose_steps,
        predict_shifts=not args.no_shifts,
        working_box=args.downsample,
        max_resolution_a=args.max_resolution,
        start_resolution_a=args.start_resolution,
        march_epochs=args.march_epochs,
        encoder_box=args.encoder_box or None,
        search_rounds=args.search_rounds,
        search_coarse_resolution_a=args.search_coarse_resolution or None,
        search_candidates=args.search_candidates,
        search_refine=args.search_refine,
        symmetry_check=not args.no_symmetry_check,
        starts=args.starts,
        invert_contrast=args.invert_contrast,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    particles = read_particles(args.particles, datadir=args.datadir)
    options = JobOptions(
        outdir=Path(args.outdir),
        device=args.device,
        half_sets=args.half_sets,
        resume=args.resume,
        force=args.force,
        reference_map=None if args.reference_map is None else Path(args.reference_map),
        symmetry=args.symmetry,
        progress=not args.quiet,
        workers=args.workers,
        init_poses=None if args.init_poses is None else Path(args.init_poses),
    )
    summary = run_job(particles, config, options)
    if "rank" in summary:  # another rank of a torchrun run: rank 0 reports
        return 0
    outdir = options.outdir
    kind = "gold-standard" if args.half_sets else "half-map (same run, optimistic)"
    print(f"Map: {outdir / 'map.mrc'}  poses: {outdir / 'particles.star'}")
    print(
        f"FSC 0.143 {kind}: {summary['half_map_resolution_a_0.143']:.2f} Å; "
        f"report: {outdir / 'summary.json'}, log: {outdir / 'log.jsonl'}"
    )
    for warning in summary["warnings"]:
        print(f"WARNING: {warning['message']} Try: {warning['advice']}.")
    if not summary["warnings"]:
        print("Convergence checks: none failed (search settled, poses still, half-maps agree).")
    if "pose_error" in summary:
        errors = summary["pose_error"]
        print(
            f"Pose error vs the input's poses: median {errors['median_rotation_error_deg']:.2f}°, "
            f"mean {errors['mean_rotation_error_deg']:.2f}°"
        )
    return 0
