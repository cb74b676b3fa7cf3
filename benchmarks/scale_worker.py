"""One measurement of ``bench_scale.py``: a few hundred training batches on a large stack.

Run as a plain process or under ``torchrun``. Builds the run (``AbInitio``) on the whole
stack, trains ``--batches`` batches of the amortized stage (15 Å, encoder on 32 px crops: the
defaults) and ``--auto-batches`` batches of auto-decoding at Nyquist (from identity poses),
and prints one JSON line per rank: images/s of each stage, and the peak resident memory of
the process (and of its DataLoader workers) in MiB.

  python benchmarks/scale_worker.py STAR --batches 300 --auto-batches 50
  torchrun --standalone --nproc-per-node 2 benchmarks/scale_worker.py STAR ...
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from common import CountingBar
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.distributed import Context, process_group
from cryohydra.inference.train import AbInitio
from cryohydra.io.star import read_star


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("star")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--auto-batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with process_group(args.device) as (context, device):
        _measure(args, context, device)


def _measure(args: argparse.Namespace, context: Context, device: torch.device) -> None:
    start = time.perf_counter()
    particles = read_star(args.star).with_poses(None, None)
    config = ReconstructConfig(batch_size=args.batch_size, epochs=2, switch=1)
    run = AbInitio(particles, config, device, context=context, workers=args.workers)
    setup_s = time.perf_counter() - start
    out = {
        "rank": context.rank,
        "world_size": context.world_size,
        "n_particles": run.n_total,
        "box": run.data.working_box,
        "setup_s": setup_s,
        "workers": args.workers,
    }
    stages = {"amortized": args.batches, "auto-decoding": args.auto_batches}
    for stage, batches in stages.items():
        if batches <= 0:
            continue
        if stage == "auto-decoding":
            n = len(run.data)
            run.enter_auto_decoding(
                torch.eye(3, device=device).expand(n, 3, 3), torch.zeros(n, 2, device=device), 1
            )
            run.epoch = 1
        count = CountingBar()
        epoch = 1 if stage == "amortized" else 2
        chosen = run.epoch_batches(epoch)[:batches]
        context.barrier()
        begin = time.perf_counter()
        if stage == "amortized":
            run.amortized_epoch(epoch, count, chosen)
        else:
            run.auto_decoding_epoch(epoch, count, chosen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - begin
        images = context.sum_float(float(count.n))
        out[stage] = {
            "batches": batches,
            "images": images,
            "seconds": seconds,
            "images_per_s": images / seconds,
        }
    out["peak_rss_mib"] = _peak_mib(resource.RUSAGE_SELF)
    out["peak_rss_children_mib"] = _peak_mib(resource.RUSAGE_CHILDREN)
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("SCALE " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
