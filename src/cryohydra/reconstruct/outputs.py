"""Writing a reconstruction: the map, its half-maps and their FSC, under the run folder's
names (:mod:`cryohydra.io.run_folder`), for every command that makes one."""

from __future__ import annotations

import json
from pathlib import Path

from cryohydra.io.mrc import write_map
from cryohydra.io.run_folder import FSC_CSV_FILE, FSC_FILE, HALF_MAP_FILES, MAP_FILE
from cryohydra.metrics.fsc import FSCCurve, masked_fsc
from cryohydra.reconstruct.backproject import Reconstruction

__all__ = ["output_names", "write_reconstruction"]


def output_names(half_maps: bool = True, fsc: bool = True) -> list[str]:
    """The files :func:`write_reconstruction` writes with these options."""
    names = [MAP_FILE]
    if half_maps:
        names += list(HALF_MAP_FILES)
        if fsc:
            names += [FSC_CSV_FILE, FSC_FILE]
    return names


def write_reconstruction(
    result: Reconstruction,
    outdir: Path,
    half_maps: bool = True,
    fsc: bool = True,
    force: bool = False,
) -> FSCCurve | None:
    """Write ``map.mrc`` and (``half_maps``) ``half_map_a.mrc``, ``half_map_b.mrc``; with
    ``fsc`` also their masked FSC (``fsc.csv``, ``fsc.json``), which is returned.

    ``force`` replaces existing files (:func:`cryohydra.io.mrc.write_map`'s rule)."""
    pixel = result.pixel_size_a
    write_map(outdir / MAP_FILE, result.full.cpu().numpy(), pixel, force=force)
    if not half_maps:
        return None
    for name, volume in zip(HALF_MAP_FILES, (result.half_a, result.half_b), strict=True):
        write_map(outdir / name, volume.cpu().numpy(), pixel, force=force)
    if not fsc:
        return None
    curve = masked_fsc(result.half_a.cpu(), result.half_b.cpu(), pixel)
    curve.to_csv(outdir / FSC_CSV_FILE)
    (outdir / FSC_FILE).write_text(json.dumps(curve.to_dict(), indent=2) + "\n")
    return curve
