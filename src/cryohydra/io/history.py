"""What a run leaves for later analysis: every epoch's poses, and the model at the switch.

``RUN_DIR/history/epoch_NNN.npz`` holds, after epoch ``NNN``, each particle's current pose as a
unit quaternion (roma's ``xyzw`` order, float32, 16 bytes a particle) and shift (Å, float32),
the winning head during the amortized stage (-1 afterwards) and the stage; with ``--classes``
also each particle's class (0-based; its pose is the one in that class's frame). That is 24
bytes a particle and epoch, 4.8 MB for 10,000 particles over 20 epochs: small next to the
images.

``RUN_DIR/switch_state.pt`` holds the encoder and the volume as they were when the encoder was
dropped (before the global search replaced the volume), so the amortized stage's pose posterior
and its heads can be studied after the run. A run that never switches (``--mode amortized``)
keeps its encoder in ``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import roma
import torch

__all__ = ["HISTORY_DIR", "SWITCH_FILE", "EpochPoses", "read_history", "write_epoch_poses"]

HISTORY_DIR = "history"
SWITCH_FILE = "switch_state.pt"


@dataclass(frozen=True)
class EpochPoses:
    """The poses after one epoch."""

    epoch: int
    stage: str
    rotations: np.ndarray  # (N, 3, 3) float64
    shifts_a: np.ndarray  # (N, 2) float64
    winners: np.ndarray  # (N,) int, -1 where no head won (auto-decoding)
    classes: np.ndarray | None = None  # (N,) int, 0-based, with --classes (None: one class)


def _path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / HISTORY_DIR / f"epoch_{epoch:03d}.npz"


def write_epoch_poses(
    run_dir: Path,
    epoch: int,
    stage: str,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    winners: torch.Tensor | None,
    classes: np.ndarray | None = None,
) -> Path:
    """Write the poses after ``epoch`` (written whole to a temporary name, then renamed);
    ``classes``: each particle's class, for a run of several."""
    path = _path(run_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    quaternions = roma.rotmat_to_unitquat(rotations.detach().cpu().to(torch.float64))
    n = rotations.shape[0]
    heads = np.full(n, -1, np.int16) if winners is None else winners.cpu().numpy().astype(np.int16)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        tmp,
        quaternions=quaternions.numpy().astype(np.float32),
        shifts_a=shifts_a.detach().cpu().numpy().astype(np.float32),
        winners=heads,
        stage=np.array(stage),
        **({} if classes is None else {"classes": np.asarray(classes).astype(np.int16)}),
    )
    tmp.replace(path)
    return path


def read_history(run_dir: Path) -> list[EpochPoses]:
    """All the epochs' poses of a run, in epoch order (empty if it kept none)."""
    out = []
    for path in sorted((Path(run_dir) / HISTORY_DIR).glob("epoch_*.npz")):
        with np.load(path) as data:
            quaternions = torch.from_numpy(data["quaternions"].astype(np.float64))
            rotations = roma.unitquat_to_rotmat(roma.quat_normalize(quaternions)).numpy()
            out.append(
                EpochPoses(
                    epoch=int(path.stem.split("_")[1]),
                    stage=str(data["stage"]),
                    rotations=rotations,
                    shifts_a=data["shifts_a"].astype(np.float64),
                    winners=data["winners"].astype(np.int64),
                    classes=data["classes"].astype(np.int64) if "classes" in data else None,
                )
            )
    return out
