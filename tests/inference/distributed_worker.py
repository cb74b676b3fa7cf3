"""Launched by ``torchrun`` from test_distributed.py: auto-decoding from perturbed true poses.

Each rank builds the run from the environment (gloo), starts its shard's poses 15 degrees off
the truth, trains ``EPOCHS`` epochs and, on rank 0, writes the gathered poses, the state after
the first epoch (a checkpoint of all particles) and the rows each rank trained on; each rank
writes the image scale it read its shard with.

  torchrun --nproc-per-node 2 distributed_worker.py STAR OUT_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from cryohydra.geometry.rotations import exp_map
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.distributed import Context, process_group
from cryohydra.inference.train import AUTO_DECODING, AbInitio
from cryohydra.io.star import read_star
from cryohydra.models.pose_table import PoseTable

EPOCHS = 3
CONFIG = ReconstructConfig(
    epochs=EPOCHS, switch=1, n_heads=2, batch_size=32, seed=0, search_rounds=10
)


def perturbed_start(true_rotations: np.ndarray, degrees: float = 15.0) -> torch.Tensor:
    """The true rotations, each turned by ``degrees`` about a random axis (seeded)."""
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(len(true_rotations), 3, generator=g, dtype=torch.float64)
    w = axis / axis.norm(dim=1, keepdim=True) * np.deg2rad(degrees)
    return (exp_map(w) @ torch.from_numpy(true_rotations)).float()


def start_auto_decoding(run: AbInitio, true_rotations, true_shifts) -> None:
    """Put ``run`` (any rank) in the auto-decoding stage from the perturbed truth."""
    rows = run.shard if run.context.active else np.arange(run.n_total)
    start = perturbed_start(true_rotations)[rows]
    shifts = torch.from_numpy(true_shifts[rows]).float()
    run.table = PoseTable.create(start, shifts, CONFIG.pose_lr_rad, CONFIG.pose_lr_shift_a)
    run.encoder, run.encoder_optimizer, run._train_encoder = None, None, None
    run.stage, run.switch_epoch = AUTO_DECODING, 0


def main() -> None:
    star, out = Path(sys.argv[1]), Path(sys.argv[2])
    with process_group("cpu") as (context, device):
        _train(star, out, context, device)
    assert not torch.distributed.is_initialized()


def _train(star: Path, out: Path, context: Context, device: torch.device) -> None:
    particles = read_star(star)
    true_rotations, true_shifts = particles.require_poses()
    run = AbInitio(particles.with_poses(None, None), CONFIG, device, context=context)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale_rank{context.rank}.json").write_text(json.dumps(run.data.scale))
    start_auto_decoding(run, true_rotations, true_shifts)
    states = []
    run.fit(lambda current, record: states.append(current.state_dict()), progress=False)
    rotations, _ = run.poses()
    seen = run.seen_rows()
    if context.is_main:
        np.save(out / "rotations.npy", rotations)
        torch.save(states[0], out / "checkpoint_epoch1.pt")
        (out / "seen.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
