"""Registration chain: per-step time and T1 -> sodium error (mean/max over brain points) per seed.

    .venv/bin/python bench/registration.py [--seeds 10] [--first-seed 201]

Each seed simulates a session (not timed), loads the four series and runs the chain on this
machine's cores. No peer ratio is printed: the Debian peers that do rigid mutual-information
registration (ANTs, elastix, NiftyReg) are not among the project's tools, and a SimpleITK-vs-
SimpleITK ratio would measure nothing; the issue's budget (well under 30 s) is the yardstick.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from processing.dicom_series import load_series
from processing.registration import RegistrationSettings, register_chain
from processing.transforms import RigidTransform
from simulator.population import Group
from simulator.session import SimulationOptions, simulate_session

GROUPS = (Group.HC, Group.RRMS, Group.SPMS, Group.CIS)
BUDGET_S = 30.0


def brain_points_lps(labels_path: Path, step: int = 3) -> np.ndarray:
    image = nib.load(labels_path)
    labels = np.asarray(image.dataobj)[::step, ::step, ::step]
    ras = (np.argwhere(labels > 0) * step) @ image.affine[:3, :3].T + image.affine[:3, 3]
    return np.asarray(ras * np.array([-1.0, -1.0, 1.0]))


def run(seed: int, folder: Path) -> tuple[list[float], float, float, float, float]:
    options = SimulationOptions(seed=seed, group=GROUPS[seed % len(GROUPS)], enhanced=seed % 2 == 0)
    session = simulate_session(folder / f"seed-{seed}", options)
    start = time.perf_counter()
    volumes = {
        "sodium": load_series(session.series_files["sodium"]).volumes[0],
        "body_pd": load_series(session.series_files["pd_t2_body"]).echo(1),
        "head_pd": load_series(session.series_files["pd_t2_head"]).echo(1),
        "t1": load_series(session.series_files["t1_3d"]).volumes[0],
    }
    load_s = time.perf_counter() - start
    chain = register_chain(**volumes, settings=RegistrationSettings())
    points = brain_points_lps(session.folder / "ground_truth" / "t1_space" / "labels.nii.gz")
    truth = RigidTransform(np.array(session.ground_truth["t1_to_sodium_scanner_lps"]), "t1", "sodium")
    errors = np.linalg.norm(chain.t1_to_sodium.apply(points) - truth.apply(points), axis=1)
    return [s.seconds for s in chain.steps], chain.seconds, load_s, float(errors.mean()), float(errors.max())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=201)
    args = parser.parse_args()
    print("seed  sodium->body  head->body  head->T1   chain   load   mean err  max err")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            steps, total, load_s, mean_mm, max_mm = run(seed, Path(tmp))
            rows.append((total, mean_mm, max_mm))
            print(
                f"{seed:4d}  {steps[0]:9.1f} s  {steps[1]:7.1f} s  {steps[2]:6.1f} s  {total:5.1f} s"
                f"  {load_s:4.1f} s  {mean_mm:6.2f} mm  {max_mm:5.2f} mm"
            )
    totals, means, maxima = (np.array(column) for column in zip(*rows, strict=True))
    print(
        f"chain time median {np.median(totals):.1f} s, max {totals.max():.1f} s (budget {BUDGET_S:.0f} s); "
        f"error mean over seeds {means.mean():.2f} mm, worst mean {means.max():.2f} mm, "
        f"worst max {maxima.max():.2f} mm"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
