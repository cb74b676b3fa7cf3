"""Convention check: cryoJAX's noise-free images against cryohydra's, image by image.

For each case cryohydra simulates a small noise-free set (``cryohydra.simulate``, SNR inf,
6UO9 at 64 px and 3.5 Å/px by default); ``peers/cryojax_simulate.py`` then runs in cryoJAX's
own environment on the same ``ground_truth.mrc`` and ``particles.star``, once with the
translations its docstring documents and once per wrong hypothesis (rotation transposed, map
mirrored, shift negated, CTF negated, astigmatism angle passed unchanged). Each pair of images
is compared on the common frequency band (the disc ``|k| <= L/2 - 1`` px that cryohydra's
projector fills; cryoJAX fills the square): the normalised cross-correlation (Pearson) and the
least-squares scale ``s`` of ``cryojax ~ s * cryohydra``. The full-band correlation is kept
too. A row per case goes to ``results/cryojax_conventions.json``.

Cases: ``none`` (no CTF, centred), ``shifts`` (no CTF), ``ctf`` (EMPIAR-10028 CTF table,
centred), ``both`` (table and shifts), ``astig`` (4000 Å astigmatism, to tell the
astigmatism-angle conventions apart, which the table's few hundred Å barely do) and
``both_canvas2`` (as ``both``, with the CTF applied on a canvas of two boxes in both programs).
Everything else uses a CTF canvas of one box (``--ctf-canvas 1``; cryoJAX ``padded_shape`` =
the box), where both wrap the CTF-spread signal around the box the same way.

  OMP_NUM_THREADS=1 python benchmarks/bench_cryojax_conventions.py --particles 24
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import mrcfile
import numpy as np
import torch

from common import RESULTS, append_row, commit
from cryohydra.data import default_structure
from cryohydra.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "cryojax_conventions"
PEER = ROOT / "peers" / "cryojax_simulate.py"
CRYOJAX_PYTHON = ROOT / "work" / "peers" / "cryojax" / "bin" / "python"
CTF_TABLE = ROOT.parent / "tests" / "data" / "metadata" / "empiar10028_ctf.npy"
PATH = RESULTS / "cryojax_conventions.json"
SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}

# case: (shifts, CTF source, CTF canvas); CTF source None, "table" or an astigmatism in Å.
CASES = {
    "none": (False, None, 1),
    "shifts": (True, None, 1),
    "ctf": (False, "table", 1),
    "both": (True, "table", 1),
    "astig": (False, 4000.0, 1),
    "both_canvas2": (True, "table", 2),
}
# hypothesis: the cryojax_simulate.py flags that make it.
HYPOTHESES = {
    "translated": [],
    "rotation_transposed": ["--rotation", "transposed"],
    "map_mirrored": ["--mirror-map"],
    "shift_negated": ["--shift-sign", "1"],
    "ctf_negated": ["--ctf-sign", "1"],
    "astigmatism_angle_direct": ["--astigmatism-angle", "direct"],
}


def hypotheses_for(case: str) -> list[str]:
    shifts, ctf, canvas = CASES[case]
    if canvas != 1:
        return ["translated"]
    names = ["translated", "rotation_transposed", "map_mirrored"]
    if shifts:
        names.append("shift_negated")
    if ctf is not None:
        names += ["ctf_negated", "astigmatism_angle_direct"]
    return names


def case_config(case: str, structure: str, particles: int, pixel_a: float, shift_a: float):
    shifts, ctf, canvas = CASES[case]
    return SimulationConfig(
        structure=structure,
        box_size=64,
        pixel_size_a=pixel_a,
        n_particles=particles,
        snr=math.inf,
        shift_std_a=shift_a if shifts else 0.0,
        ctf=ctf is not None,
        ctf_table=str(CTF_TABLE) if ctf == "table" else None,
        astigmatism_a=ctf if isinstance(ctf, float) else 300.0,
        ctf_canvas=canvas,
        seed=0,
    )


def ctf_label(settings: SimulationConfig) -> str:
    if not settings.ctf:
        return "none"
    if settings.ctf_table:
        return "EMPIAR-10028 table"
    return (
        f"defocus {settings.defocus_min_a:g}-{settings.defocus_max_a:g} A, "
        f"astigmatism up to {settings.astigmatism_a:g} A"
    )


def band(box: int) -> np.ndarray:
    """cryohydra's projector disc: centred frequencies with ``|k| <= L/2 - 1`` px."""
    k = np.arange(box) - box // 2
    return (k[:, None] ** 2 + k[None, :] ** 2) <= (box // 2 - 1) ** 2 + 1e-6


def low_pass(images: np.ndarray) -> np.ndarray:
    spectrum = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(-2, -1))), axes=(-2, -1))
    spectrum *= band(images.shape[-1])
    shifted = np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1)))
    return np.fft.fftshift(shifted, axes=(-2, -1)).real


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Per-image Pearson correlation (common band and full band) and scale theirs/ours."""
    a = low_pass(ours.astype(np.float64)).reshape(len(ours), -1)
    b = low_pass(theirs.astype(np.float64)).reshape(len(theirs), -1)
    full_a = ours.astype(np.float64).reshape(len(ours), -1)
    full_b = theirs.astype(np.float64).reshape(len(theirs), -1)

    def pearson(x, y):
        x = x - x.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))

    ncc = pearson(a, b)
    scale = (a * b).sum(1) / (a * a).sum(1)
    residual = np.linalg.norm(b - scale[:, None] * a, axis=1) / np.linalg.norm(b, axis=1)
    return {
        "ncc_mean": float(ncc.mean()),
        "ncc_min": float(ncc.min()),
        "ncc_median": float(np.median(ncc)),
        "ncc_full_band_mean": float(pearson(full_a, full_b).mean()),
        "scale_median": float(np.median(scale)),
        "scale_min": float(scale.min()),
        "scale_max": float(scale.max()),
        "relative_residual_median": float(np.median(residual)),
    }


def mass_ratios(folder: Path, ours: np.ndarray, theirs: np.ndarray, pixel_a: float) -> dict:
    """Without a CTF an image's sum (its DC term) is the map's sum, for any pose and shift:
    cryohydra's ``sum(image) / sum(map)`` and cryoJAX's ``sum(image) / (pixel * sum(map))``
    (cryoJAX integrates in Å), median, min and max over the images."""
    total = float(mrcfile.read(folder / "ground_truth.mrc").astype(np.float64).sum())
    out = {}
    for name, images, factor in (("cryohydra", ours, 1.0), ("cryojax", theirs, pixel_a)):
        ratio = images.astype(np.float64).sum(axis=(1, 2)) / (factor * total)
        out[name] = {
            "median": float(np.median(ratio)),
            "min": float(ratio.min()),
            "max": float(ratio.max()),
        }
    return out


def run_cryojax(folder: Path, hypothesis: str, ctf: bool, canvas: int, python: Path) -> dict:
    out = folder / f"cryojax_{hypothesis}.mrcs"
    command = [
        str(python),
        str(PEER),
        str(folder / "ground_truth.mrc"),
        str(folder / "particles.star"),
        str(out),
        "--pad-image",
        str(canvas),
        *HYPOTHESES[hypothesis],
    ]
    if not ctf:
        command.append("--no-ctf")
    subprocess.run(command, check=True, env={**os.environ, **SINGLE_THREAD})
    record = json.loads(Path(str(out) + ".json").read_text())
    record["images"] = mrcfile.read(out)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=24)
    parser.add_argument("--structure", default=str(default_structure()))
    parser.add_argument("--pixel-size", type=float, default=3.5)
    parser.add_argument("--shift-std", type=float, default=7.0, help="Å (2 px at 3.5 Å/px)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--cryojax-python", type=Path, default=CRYOJAX_PYTHON)
    args = parser.parse_args()
    torch.set_num_threads(1)
    code = commit()
    for case in args.cases:
        settings = case_config(
            case, args.structure, args.particles, args.pixel_size, args.shift_std
        )
        folder = WORK / case
        started = time.perf_counter()
        simulate(settings, folder, force=True, progress=False)
        ours = mrcfile.read(folder / "particles.mrcs")
        simulated = time.perf_counter() - started
        results, versions, seconds = {}, {}, {}
        for hypothesis in hypotheses_for(case):
            record = run_cryojax(
                folder, hypothesis, settings.ctf, settings.ctf_canvas, args.cryojax_python
            )
            results[hypothesis] = compare(ours, record["images"])
            if hypothesis == "translated":
                translated = record["images"]
            versions, seconds[hypothesis] = record["versions"], record["seconds"]
            settings_cj = {k: record[k] for k in ("interp", "pad_volume", "pad_image")}
            print(f"{case:13s} {hypothesis:26s} {json.dumps(results[hypothesis])}", flush=True)
        best = max(results, key=lambda name: results[name]["ncc_mean"])
        mass = mass_ratios(folder, ours, translated, args.pixel_size) if not settings.ctf else None
        row = {
            "case": case,
            "commit": code,
            "versions": {
                "cryohydra": version("cryohydra"),
                "torch": torch.__version__,
                **versions,
            },
            "structure": Path(args.structure).name,
            "particles": args.particles,
            "box": settings.box_size,
            "pixel_size_a": args.pixel_size,
            "shift_std_a": settings.shift_std_a,
            "ctf": ctf_label(settings),
            "ctf_canvas": settings.ctf_canvas,
            "cryojax_settings": settings_cj,
            "comparison_band": "|k| <= L/2 - 1 px",
            "hypotheses": results,
            "best": best,
            "mass_ratio": mass,
            "cryohydra_seconds": round(simulated, 2),
            "cryojax_seconds": seconds,
        }
        append_row(PATH, row)
        print(f"{case}: best {best}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
