#!/bin/bash
# Do two versions of the code give the same results? Runs a small simulate -> backproject ->
# reconstruct (4 epochs: amortized, the search at the switch, auto-decoding; with and without
# CTF) with the package in SRC, writing into OUT. Run it for two source trees (e.g. a
# `git worktree` of the old commit) and compare the outputs with
# benchmarks/compare_outputs.py OLD_OUT NEW_OUT.
#   usage: benchmarks/identical_outputs.sh SRC OUT
set -euo pipefail
SRC=$(realpath "$1"); OUT=$2
HERE=$(dirname "$(realpath "$0")")
PY=${PY:-$HERE/../.venv/bin/python}
MODEL=$HERE/../src/cryohydra/data/6uo9.pdb.gz
export PYTHONPATH=$SRC OMP_NUM_THREADS=1
rm -rf "$OUT"; mkdir -p "$OUT"
for c in ctf noctf; do
  extra=""; [ $c = noctf ] && extra="--no-ctf"
  $PY -m cryohydra simulate "$MODEL" -o "$OUT/sim_$c" -n 600 --box 32 --pixel-size 7.0 --snr 1 \
    --shift-std 3 --seed 1 --quiet $extra
  $PY -m cryohydra backproject "$OUT/sim_$c/particles.star" -o "$OUT/bp_$c" --half-maps --quiet
  $PY -m cryohydra reconstruct "$OUT/sim_$c/particles.star" -o "$OUT/rec_$c" --epochs 4 \
    --switch 2 --batch-size 100 --search-rounds 2 --seed 3 --quiet \
    --reference-map "$OUT/sim_$c/ground_truth.mrc"
done
