"""The ``orient`` row of the comparison: train the learned-distance network on clean
simulations of the dataset's atomic model (fresh noise at the dataset's SNR in every batch),
then recover the orientations of the dataset's particles and make the map from them.

The network is trained on the same protein: the most favourable setting for this method (an
unknown protein would need a network that transfers, which ``bench_orient.py`` shows it does
not yet). Distances are taken modulo the model's point group.

  python benchmarks/compare_orient.py hsp90 particles.star OUT --train 5000 --snr 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryohydra.io.read import read_particles  # noqa: E402
from cryohydra.orient.detector import DetectorConfig  # noqa: E402
from cryohydra.orient.jobs import recover_job  # noqa: E402
from cryohydra.orient.recover import RecoverConfig  # noqa: E402
from cryohydra.orient.training import (  # noqa: E402
    OrientTrainConfig,
    TrainingSet,
    train_distance_network,
)
from cryohydra.simulate import simulate  # noqa: E402
from datasets import MODELS, SYMMETRY, config  # noqa: E402

NET_BOX = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("particles")
    parser.add_argument("outdir")
    parser.add_argument("--train", type=int, default=5000, help="training images")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--box", type=int, default=64, help="box of the simulated images")
    args = parser.parse_args()
    outdir = Path(args.outdir)
    symmetry = SYMMETRY[args.model]()
    timings = {}
    began = time.perf_counter()
    clean = replace(config(args.model, False, args.train, args.box), snr=float("inf"), seed=18)
    simulate(
        clean,
        outdir / "training_set",
        force=True,
        progress=False,
    )
    training = TrainingSet.from_particles(
        args.model,
        read_particles(outdir / "training_set" / "particles.star"),
        NET_BOX,
        symmetry,
        snr=args.snr,
    )
    timings["simulate_seconds"] = time.perf_counter() - began
    train_distance_network(
        [training],
        OrientTrainConfig(box_size=NET_BOX, epochs=args.epochs),
        outdir / "network",
        force=True,
    )
    timings["train_seconds"] = time.perf_counter() - began - timings["simulate_seconds"]
    recovered = time.perf_counter()
    recover_job(
        outdir / "network" / "model.pt",
        read_particles(args.particles),
        outdir,
        recover=RecoverConfig(),
        detector=DetectorConfig(),
        force=True,
    )
    timings["recover_seconds"] = time.perf_counter() - recovered
    (outdir / "orient.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
