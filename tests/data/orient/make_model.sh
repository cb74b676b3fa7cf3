#!/bin/sh
# Rebuilds tests/data/orient/6uo9_32px_noiseless.pt, the distance network that
# tests/orient/test_orient.py::test_recover_with_a_trained_network uses (about 6 minutes on
# 2 CPU cores; run it again when the network's architecture or model.pt's format changes).
# 10,000 noiseless images of the bundled 6UO9 at 32 px and 7 A/px with the simulator's default
# CTF (defocus 1.0-2.5 um), seed 43; network input 32 px, 20 epochs, seed 0.
set -e
cd "$(dirname "$0")/../../.."
work=$(mktemp -d)
python - "$work" <<'PY'
import math, sys
from cryohydra.data import default_structure
from cryohydra.simulate import SimulationConfig, simulate
simulate(SimulationConfig(structure=str(default_structure()), box_size=32, pixel_size_a=7.0,
                          n_particles=10000, snr=math.inf, seed=43),
         sys.argv[1] + "/train", progress=False)
PY
python -m cryohydra orient train -o "$work/net" --particles "$work/train/particles.star" \
    --box 32 --epochs 20 --batch-size 32 --seed 0
cp "$work/net/model.pt" tests/data/orient/6uo9_32px_noiseless.pt
rm -r "$work"
