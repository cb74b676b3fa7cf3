"""Evaluation metrics: FSC and resolution, errors of poses, rigid alignment of maps.

Pure functions following ``docs/CONVENTIONS.md``: maps are ``(z, y, x)`` float32 with the
origin at index ``L // 2``; rotations ``(N, 3, 3)`` take molecule to microscope coordinates.
"""

from cryohydra.metrics.fsc import (
    FSCCurve,
    ResolutionEstimate,
    fsc,
    plot_fsc,
    radial_shell_index,
    soft_spherical_mask,
)
from cryohydra.metrics.map_alignment import (
    MapAlignment,
    align_maps,
    apply_alignment,
    flip_handedness,
    rotate_map,
    self_alignment,
    shift_map,
    so3_grid,
)
from cryohydra.metrics.pose_error import (
    PoseErrors,
    align_rotations,
    plot_pose_error_histogram,
    point_group,
    pose_errors,
)

__all__ = [
    "FSCCurve",
    "MapAlignment",
    "PoseErrors",
    "ResolutionEstimate",
    "align_maps",
    "self_alignment",
    "align_rotations",
    "apply_alignment",
    "flip_handedness",
    "fsc",
    "plot_fsc",
    "plot_pose_error_histogram",
    "point_group",
    "pose_errors",
    "radial_shell_index",
    "rotate_map",
    "shift_map",
    "so3_grid",
    "soft_spherical_mask",
]
