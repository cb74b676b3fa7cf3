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

from cryohydra.cli.common import (
    config_from_args,
    device,
    existing_dir,
    existing_file,
    fraction,
    non_negative,
    positive,
    positive_or_none,
    read_input,
    symmetry,
)
from cryohydra.inference.config import MODES, ReconstructConfig
from cryohydra.io.run_folder import HALF_RUNS, LOG_FILE, read_log
from cryohydra.jobs.abinitio import JobOptions, run_job
from cryohydra.models.encoder import BACKBONES

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


def _interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C kept: the last epoch whose checkpoint is in OUTDIR, and how to go on."""
    outdir = Path(args.outdir)
    epochs = [
        records[-1]["epoch"]
        for run_dir in (outdir, *(outdir / h for h in HALF_RUNS))
        if (records := read_log(run_dir / LOG_FILE))
    ]
    if not epochs:
        return "no epoch had finished; nothing to resume"
    return (
        f"stopped after epoch {min(epochs)}; continue with the same command and --resume "
        f"(cryohydra reconstruct ... -o {outdir} --resume)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(interrupted=_interrupted)
    data = parser.add_argument_group("input and output")
    data.add_argument("particles", help="particles with CTF: RELION .star or cryoSPARC .cs")
    data.add_argument("-o", "--outdir", required=True, help="output folder")
    data.add_argument(
        "--datadir", type=existing_dir, default=None, help="folder holding the image stacks"
    )
    data.add_argument(
        "--downsample",
        dest="working_box",
        type=positive(int),
        default=None,
        metavar="BOX",
        help="train on images Fourier-cropped to this box (px)",
    )
    data.add_argument(
        "--invert-contrast",
        action="store_true",
        help="the stack has dark particles on a bright background",
    )
    data.add_argument(
        "--bf16-encoder",
        dest="encoder_bf16",
        action="store_true",
        help="run the encoder's CNN and heads in bfloat16 (GPU tensor cores); the rest stays "
        "float32",
    )
    data.add_argument(
        "--whiten",
        action="store_true",
        help="whiten images and projections by the noise spectrum of the images' background "
        "(for coloured noise, as in real stacks)",
    )
    data.add_argument(
        "--amplitude-scale",
        action="store_true",
        help="estimate each particle's amplitude (rlnCtfScalefactor) against the map, for "
        "stacks whose contrast varies from particle to particle (needs a CTF)",
    )
    data.add_argument(
        "--mask-diameter-a",
        type=positive(float),
        default=None,
        help="a soft spherical mask of this diameter (Å) on the learned volume, a little "
        "larger than the particle (RELION's particle diameter); default: none",
    )
    data.add_argument(
        "--no-ctf",
        action="store_true",
        help="the images have no CTF (simulated without one); needed for an input without "
        "CTF columns, and ignores the CTF of one that has them",
    )
    data.add_argument(
        "--half-sets",
        action="store_true",
        help="two independent runs on random halves; gold-standard FSC",
    )

    model = parser.add_argument_group("model and training")
    model.add_argument(
        "--mode",
        choices=list(MODES),
        default=_DEFAULTS.mode,
        help="semi-amortized (ours); amortized and cryoai for comparison",
    )
    model.add_argument(
        "--epochs", type=positive(int), default=_DEFAULTS.epochs, help="passes over the data"
    )
    model.add_argument(
        "--heads",
        dest="n_heads",
        type=positive(int),
        default=_DEFAULTS.n_heads,
        metavar="M",
        help="M, poses per image",
    )
    model.add_argument(
        "--batch-size", type=positive(int), default=_DEFAULTS.batch_size, help="images per step"
    )
    model.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        default=_DEFAULTS.backbone,
        help="the encoder's convolutional network",
    )
    model.add_argument(
        "--encoder-box",
        type=positive_or_none(int),
        default=_DEFAULTS.encoder_box,
        metavar="PX",
        help="the encoder sees images Fourier-cropped to this box (0: the working box)",
    )
    model.add_argument(
        "--encoder-lr",
        type=positive(float),
        default=_DEFAULTS.encoder_lr,
        help="Adam rate of the encoder",
    )
    model.add_argument(
        "--volume-lr",
        type=positive(float),
        default=_DEFAULTS.volume_lr,
        help="Adam rate of the volume before the switch",
    )
    model.add_argument(
        "--volume-lr-after-switch",
        type=positive(float),
        default=_DEFAULTS.volume_lr_after_switch,
        help="Adam rate of the volume during auto-decoding",
    )
    model.add_argument(
        "--no-shifts",
        dest="predict_shifts",
        action="store_false",
        help="particles are centred: do not estimate shifts",
    )
    model.add_argument(
        "--starts",
        type=positive(int),
        default=_DEFAULTS.starts,
        metavar="N",
        help="independent amortized starts; the run continues the one whose loss is lowest "
        "after its first auto-decoding epoch (costs the amortized stage N times)",
    )
    model.add_argument(
        "--classes",
        type=positive(int),
        default=_DEFAULTS.classes,
        metavar="K",
        help="learn K maps side by side and sort the particles between them (class_1/ ... "
        "class_K/, rlnClassNumber in the STAR; costs about K times one class)",
    )
    model.add_argument(
        "--seed", type=int, default=_DEFAULTS.seed, help="random seed (also of the half split)"
    )

    schedule = parser.add_argument_group("switch, auto-decoding and resolution")
    schedule.add_argument(
        "--switch",
        type=_switch,
        default=_DEFAULTS.switch,
        help="'auto' or the epoch after which auto-decoding starts",
    )
    schedule.add_argument(
        "--switch-epoch", dest="switch", type=_switch, help="same as --switch EPOCH"
    )
    schedule.add_argument(
        "--pose-lr",
        dest="pose_lr_rad",
        type=positive(float),
        default=_DEFAULTS.pose_lr_rad,
        help="per-particle Adam rate of the rotation (radians)",
    )
    schedule.add_argument(
        "--pose-lr-shift",
        dest="pose_lr_shift_a",
        type=positive(float),
        default=_DEFAULTS.pose_lr_shift_a,
        help="per-particle Adam rate of the shift (Å)",
    )
    schedule.add_argument(
        "--pose-steps",
        type=positive(int),
        default=_DEFAULTS.pose_steps,
        help="gradient steps on each particle's pose per visit",
    )
    schedule.add_argument(
        "--max-resolution",
        dest="max_resolution_a",
        type=positive(float),
        default=None,
        metavar="ANGSTROM",
        help="highest resolution used in the loss (default Nyquist)",
    )
    schedule.add_argument(
        "--start-resolution",
        dest="start_resolution_a",
        type=positive(float),
        default=_DEFAULTS.start_resolution_a,
        metavar="ANGSTROM",
        help="resolution limit of the loss while poses are global (before the switch)",
    )
    schedule.add_argument(
        "--march-epochs",
        type=non_negative(int),
        default=_DEFAULTS.march_epochs,
        help="epochs after the switch over which the limit rises to --max-resolution",
    )
    schedule.add_argument(
        "--init-poses",
        type=existing_file,
        default=None,
        metavar="STAR",
        help="poses of the same particles (e.g. from `cryohydra orient recover`): skip the "
        "amortized stage and start auto-decoding from them",
    )

    schedule.add_argument(
        "--keep-best",
        type=fraction,
        default=None,
        metavar="FRACTION",
        help="make the final map from this fraction of the particles ranked best "
        "(cryohydraRank in particles.star): by how well each matches its projection "
        "(cryohydraScore; junk scores low) and, with --amplitude-scale once the run has "
        "estimated them, by its amplitude too (the worse of the two ranks)",
    )

    search = parser.add_argument_group("global pose search at the switch")
    search.add_argument(
        "--search-rounds",
        type=non_negative(int),
        default=_DEFAULTS.search_rounds,
        help="rounds of global pose search at the switch (0: start from the best heads)",
    )
    search.add_argument(
        "--search-coarse-resolution",
        dest="search_coarse_resolution_a",
        type=positive_or_none(float),
        default=_DEFAULTS.search_coarse_resolution_a,
        metavar="A",
        help="the search first runs at this coarser resolution (Å), then at --start-resolution "
        "(0: at --start-resolution only)",
    )
    search.add_argument(
        "--search-candidates",
        action="store_true",
        help="the search also tries each image's encoder candidates (see docs/reconstruct.md)",
    )
    search.add_argument(
        "--search-refine",
        action="store_true",
        help="the search refines each pose locally every round (see docs/reconstruct.md)",
    )
    search.add_argument(
        "--no-symmetry-check",
        dest="symmetry_check",
        action="store_false",
        help="do not try each particle's pose under the map's self-superposition",
    )

    evaluation = parser.add_argument_group("evaluation against a known answer (benchmarks)")
    evaluation.add_argument(
        "--reference-map",
        type=existing_file,
        default=None,
        help="a known map: log the FSC against it",
    )
    evaluation.add_argument(
        "--symmetry",
        type=symmetry,
        default="C1",
        help="point group to impose (C<n>, D<n>, T, O, I, I1-I4; RELION's axes) from the "
        "switch on, found on the map of the switch's C1 search (docs/symmetry.md); pose errors "
        "are scored modulo it",
    )

    running = parser.add_argument_group("running")
    running.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    running.add_argument("--resume", action="store_true", help="continue the run in OUTDIR")
    running.add_argument(
        "--force",
        action="store_true",
        help="redo a finished or stopped run in OUTDIR from the start",
    )
    running.add_argument("--quiet", action="store_true", help="no progress bar")
    running.add_argument(
        "--workers",
        type=non_negative(int),
        default=0,
        help="DataLoader processes reading batches ahead (0: read in turn; the result is the same)",
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(ReconstructConfig, args)
    particles = read_input(args.particles, args.datadir, args.no_ctf)
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
        keep_best=args.keep_best,
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
