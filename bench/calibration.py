"""The calibration's error budget against the simulator's truth, over simulated subjects.

For each subject (the simulator's defaults: SNR 8, vials, receive field and PSF drawn per subject)
the calibration line is made several ways, and its *gain error* measured: the median over the brain
(intracranial > 0.5, true blurred TSC > 5 mM) of (S0 / F - b) / a over the true blurred TSC, minus
1, where S0 is the noise-free signal, F the field the calibration used and (a, b) its line. The
image noise of the brain voxels is left out on purpose: this is the error the line and the field put
on every tissue.

Variants (each row: mean and SD over subjects):
- true field: the vials' noise and the method (what the phantoms alone cost);
- noise-free, true field: the method's own bias (vial edges, PSF, discretisation);
- true field, PSF configured x0.8 / x1.2: robustness to a misjudged PSF;
- estimated field: the receive field estimated on the simulator's tissue maps (PSF-scaled through
  the true transform, as tests/test_receive_field.py does), the vials' noise included;
- noise-free, estimated field: that field's error alone;
- builtin segmentation (``--builtin``): the whole pipeline up to the tissue maps (as
  bench/accuracy.py; ~80 s more per subject).

Each variant is reported for the vial model (``processing.vial_model``, what ``calibrate`` uses) and
for the median of the eroded core (the previous method; the line through ``VialMeasurement.
median_signal``, which ``calibrate`` still reports; an estimated field is the current estimator's in
both). The tissue rows give the GTM TSC error on the truth's tissue maps: the model's
noise-floor-corrected map against the core median's raw map.

    .venv/bin/python bench/calibration.py [--subjects 8] [--work DIR] [--builtin]

Sessions already simulated in ``--work`` (``subject-SEED/session``) are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from accuracy import GROUPS, SEED_BASE, true_tsc, truth_map_in_t1_space, with_truth_segmentation
from tqdm import tqdm

from processing.calibration import Calibration, calibrate
from processing.dicom_series import load_series
from processing.nifti_io import read_volume
from processing.partial_volume import gtm_concentrations
from processing.pipeline import StepTimer, analyse_session, configured_psf_fwhm_mm, sodium_space_inputs
from processing.psf_resampling import resample_masks_to_sodium
from processing.receive_field import VialReference, estimate_receive_field
from processing.settings import ProcessingSettings, settings_from_config
from processing.transforms import RigidTransform
from processing.volume import Scaling, Volume
from simulator.session import SimulatedSession, SimulationOptions, simulate_session
from sodium_node.config import default_config_path, load_config
from sodium_node.config_models import Role
from sodium_node.process_command import files_by_role, session_series_from_roles

log = logging.getLogger("bench")

TISSUES = ("cgm", "dgm", "nawm")
TRUTH_T1_MAPS = {
    "cgm": ("cgm",),
    "dgm": ("dgm",),
    "nawm": ("nawm",),
    "lesion": ("lesion_t1_iso", "lesion_t1_hypo"),
    "csf": ("csf",),
}
PSF_FACTORS = (0.8, 1.2)
METHODS = ("model", "core median")


@dataclasses.dataclass(frozen=True)
class Subject:
    session: SimulatedSession
    sodium: Volume
    truth: dict[str, Volume]
    """Sodium-space ground truth: receive_field, signal_noise_free, tsc_psf_mM."""
    brain: np.ndarray


def _session(folder: Path, seed: int, index: int) -> SimulatedSession:
    truth_path = folder / "ground_truth" / "ground_truth.json"
    if truth_path.is_file():
        return SimulatedSession(
            folder, folder / "dicom", truth_path, {}, json.loads(truth_path.read_text(encoding="utf-8"))
        )
    return simulate_session(folder, SimulationOptions(seed=seed, group=GROUPS[index % len(GROUPS)]))


def _subject(session: SimulatedSession, rules: Any) -> Subject:
    by_role = files_by_role(session.dicom_folder, rules)
    sodium = load_series(list(by_role[Role.SODIUM])).echo(1)
    sodium_space = session.folder / "ground_truth" / "sodium_space"

    def read(name: str) -> Volume:
        return read_volume(sodium_space / f"{name}.nii.gz", space="sodium")

    truth = {name: read(name) for name in ("receive_field", "signal_noise_free", "tsc_psf_mM")}
    intracranial = sum(np.asarray(read(f"prob_{t}").data) for t in ("cgm", "dgm", "nawm", "csf"))
    brain = (np.asarray(intracranial) > 0.5) & (np.asarray(truth["tsc_psf_mM"].data) > 5.0)
    return Subject(session, sodium, truth, brain)


def truth_fractions(subject: Subject, psf_fwhm_mm: float) -> dict[str, Volume]:
    """The simulator's T1-space fractions, PSF-scaled into sodium space through the true transform."""
    folder = subject.session.folder / "ground_truth" / "t1_space"
    maps = {}
    for name, parts in TRUTH_T1_MAPS.items():
        total = truth_map_in_t1_space(folder, *parts)
        if total is not None and np.any(total.data > 0):
            maps[name] = total
    t1_to_sodium = RigidTransform(
        np.array(subject.session.ground_truth["t1_to_sodium_scanner_lps"]), "t1", "sodium"
    )
    return resample_masks_to_sodium(
        maps, sodium_grid=subject.sodium, t1_to_sodium=t1_to_sodium, psf_fwhm_mm=psf_fwhm_mm
    )


def line(calibration: Calibration, method: str) -> tuple[float, float]:
    """(a, b) of the model amplitudes, or of the core medians (the previous method)."""
    if method == "model":
        return calibration.slope_per_mM, calibration.intercept
    low, high = sorted(calibration.vials, key=lambda v: v.concentration_mM)
    slope = (high.median_signal - low.median_signal) / (high.concentration_mM - low.concentration_mM)
    return slope, low.median_signal - slope * low.concentration_mM


def gain_error(subject: Subject, slope: float, intercept: float, field: Volume | None) -> float:
    """See the module doc (a fraction, not %)."""
    noise_free = np.asarray(subject.truth["signal_noise_free"].data, dtype=np.float64)
    divisor = 1.0 if field is None else np.maximum(np.asarray(field.data, dtype=np.float64), 0.05)
    calibrated = (noise_free / divisor - intercept) / slope
    truth = np.asarray(subject.truth["tsc_psf_mM"].data, dtype=np.float64)
    return float(np.median(calibrated[subject.brain] / truth[subject.brain]) - 1.0)


def tissue_errors(
    subject: Subject,
    calibration: Calibration,
    method: str,
    fractions: dict[str, Volume],
    field: Volume | None,
) -> dict[str, float]:
    """GTM TSC minus truth: the calibration's own map (model), or the raw map through the core line."""
    if method == "model":
        tsc = calibration.tsc_mM
    else:
        slope, intercept = line(calibration, method)
        magnitude = np.asarray(subject.sodium.data, dtype=np.float64)
        divisor = 1.0 if field is None else np.maximum(np.asarray(field.data, dtype=np.float64), 0.05)
        tsc = subject.sodium.with_data(
            (magnitude / divisor - intercept) / slope, scaling=Scaling.DERIVED, unit="mM"
        )
    measured = gtm_concentrations(tsc, fractions)
    truth = true_tsc(subject.session.ground_truth)
    return {tissue: measured[tissue] - truth[tissue] for tissue in TISSUES}


def measure_subject(
    subject: Subject, settings: ProcessingSettings, *, builtin: bool, rules: Any, work: Path
) -> dict[str, Any]:
    # The simulated PSF (drawn per subject, 1.3-2.0 voxels), so that "PSF x0.8 / x1.2" misjudges it by
    # exactly that; the configured one can already be 0.8-1.25 of it.
    psf = float(subject.session.ground_truth["parameters"]["psf_fwhm_mm"])
    concentrations = settings.phantom_concentrations_mM
    true_field = subject.truth["receive_field"]
    noise_free = subject.truth["signal_noise_free"]

    def run(image: Volume, field: Volume | None, psf_factor: float = 1.0) -> Calibration:
        return calibrate(
            image, concentrations_mM=concentrations, receive_field=field, psf_fwhm_mm=psf_factor * psf
        )

    fractions = truth_fractions(subject, psf)
    with_true_field = run(subject.sodium, true_field)
    uncorrected = run(subject.sodium, None)
    estimate = estimate_receive_field(
        subject.sodium,
        fractions,
        [
            VialReference(roi, vial.concentration_mM)
            for roi, vial in zip(uncorrected.vial_rois, uncorrected.vials, strict=True)
        ],
        noise_sigma=uncorrected.noise_sigma,
    ).field
    with_estimate = run(subject.sodium, estimate)
    calibrations: dict[str, tuple[Calibration, Volume | None]] = {
        "true field": (with_true_field, true_field),
        "noise-free, true field": (run(noise_free, true_field), true_field),
        **{f"true field, PSF x{f}": (run(subject.sodium, true_field, f), true_field) for f in PSF_FACTORS},
        "estimated field": (with_estimate, estimate),
        "noise-free, estimated field": (run(noise_free, estimate), estimate),
        "no field": (uncorrected, None),
    }
    if builtin:
        calibrations.update(_builtin_variants(subject, settings, rules=rules, work=work))
    row: dict[str, Any] = {"seed": subject.session.ground_truth["seed"], "gain": {}, "tissues": {}}
    for variant, (calibration, field) in calibrations.items():
        for method in METHODS:
            row["gain"][f"{variant} | {method}"] = gain_error(subject, *line(calibration, method), field)
    for variant in ("true field", "estimated field"):
        calibration, field = calibrations[variant]
        for method in METHODS:
            row["tissues"][f"{variant} | {method}"] = tissue_errors(
                subject, calibration, method, fractions, field
            )
    parameters = subject.session.ground_truth["parameters"]
    row["noise_sigma_ratio"] = with_true_field.noise_sigma / parameters["sodium_noise_sigma"]
    row["fitted_psf_fwhm_mm"] = with_true_field.fitted_psf_fwhm_mm
    row["amplitude_errors"] = [
        v.amplitude / (parameters["sodium_signal_per_mM"] * v.concentration_mM) - 1
        for v in with_true_field.vials
    ]
    row["amplitude_standard_errors"] = [
        v.amplitude_standard_error / v.amplitude for v in with_true_field.vials
    ]
    return row


def _builtin_variants(
    subject: Subject, settings: ProcessingSettings, *, rules: Any, work: Path
) -> dict[str, tuple[Calibration, Volume | None]]:
    """The pipeline's own calibration with the field estimated behind the builtin segmentation (and
    behind the truth's maps through the registered transform, as bench/accuracy.py)."""
    series = session_series_from_roles(
        files_by_role(subject.session.dicom_folder, rules), where=str(subject.session.dicom_folder)
    )
    qc = work / "qc"
    qc.mkdir(parents=True, exist_ok=True)
    analysis = analyse_session(series, settings, qc_folder=qc, timer=StepTimer({}, tqdm(disable=True)))
    psf = configured_psf_fwhm_mm(subject.sodium, settings)
    variants: dict[str, tuple[Calibration, Volume | None]] = {}
    for name, chosen in (
        ("builtin segmentation", analysis),
        ("truth maps, registered", with_truth_segmentation(analysis, subject.session, settings)),
    ):
        inputs = sodium_space_inputs(chosen, settings, psf_fwhm_mm=psf, qc_folder=None)
        field = None if inputs.receive_field is None else inputs.receive_field.field
        variants[name] = (inputs.calibration, field)
    return variants


def report(rows: list[dict[str, Any]]) -> None:
    print(f"\nGain error (%) over {len(rows)} subjects: mean, SD, min, max")
    for key in rows[0]["gain"]:
        values = 100 * np.array([r["gain"][key] for r in rows])
        print(
            f"  {key:45s} {values.mean():+6.2f} {values.std(ddof=1) if len(values) > 1 else 0.0:6.2f} "
            f"{values.min():+6.2f} {values.max():+6.2f}"
        )
    print("\nGTM TSC error on the truth's tissue maps (mM): MAE / mean per tissue")
    for key in rows[0]["tissues"]:
        cells = []
        for tissue in TISSUES:
            errors = np.array([r["tissues"][key][tissue] for r in rows])
            cells.append(f"{tissue} {np.abs(errors).mean():.2f}/{errors.mean():+.2f}")
        print(f"  {key:45s} " + "  ".join(cells))
    amplitudes = 100 * np.array([r["amplitude_errors"] for r in rows])
    standard_errors = 100 * np.array([r["amplitude_standard_errors"] for r in rows])
    mean, sd = np.round(amplitudes.mean(axis=0), 2), np.round(amplitudes.std(axis=0, ddof=1), 2)
    print(
        f"\nVial model, true field: amplitude error (%) per vial mean {mean.tolist()}, SD {sd.tolist()}, "
        f"reported standard error {np.round(standard_errors.mean(axis=0), 2).tolist()}; "
        f"noise sigma / truth {np.mean([r['noise_sigma_ratio'] for r in rows]):.3f}; "
        f"PSF FWHM fitted {np.mean([r['fitted_psf_fwhm_mm'] for r in rows]):.2f} mm"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subjects", type=int, default=8, help="spread evenly over HC, CIS, RRMS, SPMS")
    parser.add_argument("--seed-base", type=int, default=SEED_BASE)
    parser.add_argument("--work", type=Path, help="keep, and reuse, sessions here (default: temporary)")
    parser.add_argument("--builtin", action="store_true", help="also run the pipeline's segmentation (slow)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    config = load_config(default_config_path())
    settings = settings_from_config(config.processing)
    rules = config.classification.rules
    work = args.work or Path(tempfile.mkdtemp(prefix="sodium-calibration-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with (work / "calibration.jsonl").open("w") as out:
        for index in range(args.subjects):
            seed = args.seed_base + index
            started = time.perf_counter()
            folder = work / f"subject-{seed}"
            subject = _subject(_session(folder / "session", seed, index), rules)
            row = measure_subject(subject, settings, builtin=args.builtin, rules=rules, work=folder)
            out.write(json.dumps(row) + "\n")
            out.flush()
            rows.append(row)
            log.info("subject %d: %.0f s", seed, time.perf_counter() - started)
    report(rows)
    print(f"\nrows: {work / 'calibration.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
