"""Learned-distance orientation recovery: train a distance network, recover orientations.

`orient train` simulates projections of the given structures (atomic models or maps) at the
given SNRs through the simulator, or reads sets that carry their true poses, and trains a
Siamese network to predict the angle between two images' orientations. Writes OUTDIR/model.pt
(with its training configuration), checkpoint.pt (continue with --resume) and training.json.

`orient recover` embeds every image once, fits one orientation per image to the predicted
distances, finds the detector-side rotation and the hand from the images, and writes
OUTDIR/poses.star (RELION 3.1, the input's CTF, zero shifts), the map from those poses and
recover.json (with pose errors when the input holds true poses). Refine the result with
`cryohydra reconstruct --init-poses OUTDIR/poses.star`.

Examples:
  cryohydra orient train -o net --structure 6uo9.pdb --structure 7pbl.pdb:3.0 --snr 0.1 --snr 1
  cryohydra orient recover net/model.pt particles.star -o orient
  cryohydra reconstruct particles.star -o refined --init-poses orient/poses.star
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryohydra.cli.common import (
    HelpFormatter,
    device,
    existing_dir,
    existing_file,
    non_negative,
    positive,
    symmetry,
)
from cryohydra.io.read import read_particles
from cryohydra.models.encoder import BACKBONES
from cryohydra.orient.detector import DetectorConfig
from cryohydra.orient.jobs import (
    StructureSpec,
    load_training_sets,
    recover_job,
    simulate_training_sets,
)
from cryohydra.orient.recover import RecoverConfig
from cryohydra.orient.training import OrientTrainConfig, train_distance_network
from cryohydra.simulate import ORIENTATIONS, SimulationConfig

_TRAIN = OrientTrainConfig()
_RECOVER = RecoverConfig()
_DETECTOR = DetectorConfig()


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    source = parser.add_argument_group("training data")
    source.add_argument(
        "--structure",
        action="append",
        default=[],
        metavar="PATH[:PIXEL]",
        help="atomic model or map to simulate from (repeat for several proteins); a model "
        "without a pixel size is simulated at the one that makes it fill 84%% of the box",
    )
    source.add_argument(
        "--particles",
        action="append",
        default=[],
        metavar="STAR",
        help="a set with its true poses to train on (repeatable)",
    )
    sim = parser.add_argument_group("simulation (for --structure)")
    sim.add_argument(
        "--snr",
        type=positive(float),
        action="append",
        help="SNR of a training set ('inf': no noise); repeatable (default 0.1)",
    )
    sim.add_argument("-n", "--n-particles", type=positive(int), default=5000, help="images per set")
    sim.add_argument(
        "--sim-box", type=positive(int), default=64, help="box of the simulated images (px)"
    )
    sim.add_argument(
        "--orientations",
        choices=ORIENTATIONS,
        default="uniform",
        help="orientations of the training images",
    )
    sim.add_argument("--no-ctf", action="store_true", help="simulate without a CTF")
    sim.add_argument(
        "--ctf-table", type=existing_file, default=None, help="CTF rows to draw from (.npy)"
    )
    sim.add_argument(
        "--shift-std", type=non_negative(float), default=0.0, help="std of the shifts, Å"
    )
    sim.add_argument("--sim-seed", type=int, default=0, help="seed of the simulation")
    net = parser.add_argument_group("network and training")
    net.add_argument(
        "--box", type=positive(int), default=_TRAIN.box_size, help="network input (px)"
    )
    net.add_argument(
        "--feature-dim",
        type=positive(int),
        default=_TRAIN.feature_dim,
        help="length of each image's embedding",
    )
    net.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        default=_TRAIN.backbone,
        help="the embedding's convolutional network",
    )
    net.add_argument(
        "--batch-size", type=positive(int), default=_TRAIN.batch_size, help="pairs per step"
    )
    net.add_argument(
        "--epochs", type=positive(int), default=_TRAIN.epochs, help="passes over the data"
    )
    net.add_argument("--lr", type=positive(float), default=_TRAIN.lr, help="Adam rate")
    net.add_argument(
        "--symmetry", type=symmetry, default="C1", help="point group of the structures"
    )
    net.add_argument("--seed", type=int, default=_TRAIN.seed, help="seed of the training")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    parser.add_argument("--force", action="store_true", help="overwrite a previous model")


def _recover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model.pt written by `cryohydra orient train`")
    parser.add_argument("particles", help="particles: RELION .star or cryoSPARC .cs")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument(
        "--datadir", type=existing_dir, default=None, help="folder holding the image stacks"
    )
    parser.add_argument("--invert-contrast", action="store_true", help="dark particles")
    parser.add_argument(
        "--pairs-per-step",
        type=positive(int),
        default=_RECOVER.pairs_per_step,
        help="image pairs whose distances each fitting step matches",
    )
    parser.add_argument(
        "--max-steps",
        type=positive(int),
        default=_RECOVER.max_steps,
        help="most Adam steps of the orientation fit",
    )
    parser.add_argument(
        "--lr", type=positive(float), default=_RECOVER.lr, help="Adam rate of the fit"
    )
    parser.add_argument(
        "--restarts",
        type=positive(int),
        default=_RECOVER.restarts,
        help="fits from different starts; the best is kept",
    )
    parser.add_argument(
        "--detector-images",
        type=positive(int),
        default=_DETECTOR.n_images,
        help="images scored in the detector-rotation search",
    )
    parser.add_argument(
        "--detector-resolution",
        type=positive(float),
        default=None,
        metavar="ANGSTROM",
        help="highest resolution of the detector search (default 4x Nyquist of 32 px)",
    )
    parser.add_argument(
        "--reference-map",
        type=existing_file,
        default=None,
        help="known map: FSC against it",
    )
    parser.add_argument(
        "--symmetry", type=symmetry, default="C1", help="point group for pose errors"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    steps = parser.add_subparsers(dest="orient_command", required=True, metavar="STEP")
    train = steps.add_parser(
        "train",
        help="simulate training sets and train the network",
        description="Train the distance network on simulated sets or sets with true poses; "
        "writes OUTDIR/model.pt, checkpoint.pt and training.json.",
        formatter_class=HelpFormatter,
    )
    _train_arguments(train)
    train.set_defaults(run=run_train)
    recover = steps.add_parser(
        "recover",
        help="orientations of a particle set",
        description="Embed every image, fit one orientation per image to the network's "
        "distances, find the detector-side rotation and the hand, and write OUTDIR/poses.star, "
        "the map from those poses and recover.json.",
        formatter_class=HelpFormatter,
    )
    _recover_arguments(recover)
    recover.set_defaults(run=run_recover)


def run_train(args: argparse.Namespace) -> int:
    if not args.structure and not args.particles:
        raise ValueError("give at least one --structure or --particles")
    outdir = Path(args.outdir)
    config = OrientTrainConfig(
        box_size=args.box,
        feature_dim=args.feature_dim,
        backbone=args.backbone,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
    )
    base = SimulationConfig(
        structure="",
        box_size=args.sim_box,
        n_particles=args.n_particles,
        orientations=args.orientations,
        ctf=not args.no_ctf,
        ctf_table=args.ctf_table,
        shift_std_a=args.shift_std,
        seed=args.sim_seed,
    )
    structures = [StructureSpec.parse(text) for text in args.structure]
    entries = simulate_training_sets(structures, args.snr or [0.1], base, outdir / "data")
    entries += [(Path(star).stem, Path(star), {"simulated": False}) for star in args.particles]
    sets = load_training_sets(entries, config.box_size, args.symmetry)
    summary = train_distance_network(
        sets, config, outdir, device=args.device, resume=args.resume, force=args.force
    )
    print(
        f"Model: {summary['model']} (best validation loss {summary['best_validation_loss']:.4f}); "
        f"log: {outdir / 'training.json'}"
    )
    return 0


def run_recover(args: argparse.Namespace) -> int:
    particles = read_particles(args.particles, datadir=args.datadir)
    summary = recover_job(
        Path(args.model),
        particles,
        Path(args.outdir),
        recover=RecoverConfig(
            pairs_per_step=args.pairs_per_step,
            max_steps=args.max_steps,
            lr=args.lr,
            restarts=args.restarts,
            seed=args.seed,
        ),
        detector=DetectorConfig(
            n_images=args.detector_images, resolution_a=args.detector_resolution, seed=args.seed
        ),
        invert_contrast=args.invert_contrast,
        reference_map=None if args.reference_map is None else Path(args.reference_map),
        symmetry=args.symmetry,
        device=args.device,
        force=args.force,
    )
    outputs = summary["outputs"]
    print(f"Poses: {outputs['poses.star']}  map: {outputs['map.mrc']}")
    if "pose_error" in summary:
        one, two = summary["pose_error"]["one_sided"], summary["pose_error"]["two_sided"]
        print(
            "Orientation error vs the input's poses: median "
            f"{one['median_rotation_error_deg']:.1f}° "
            f"(two-sided alignment: {two['median_rotation_error_deg']:.1f}°)"
        )
    if "fsc_vs_reference_a_0.5" in summary:
        print(f"FSC 0.5 vs the reference map: {summary['fsc_vs_reference_a_0.5']:.2f} Å")
    return 0
