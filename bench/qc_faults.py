"""QC limits measured on deliberate faults: each check's figure of merit on a clean simulated session
and on the same session with one fault put in, printed as the table of docs/processing.md.

    .venv/bin/python bench/qc_faults.py [--seed 11] [--group rrms] [--only registration,calibration,...]

The session is simulated with the study acquisition (the vials, PSF and field the default
configuration describes), processed up to the tissue measurement once; each fault then changes one
input (the transform found, the sodium image, the tissue maps, the field of view) and recomputes the
checks it concerns, not the whole pipeline. No timing is printed: this bench measures QC metrics.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from processing.calibration import calibrate
from processing.measurements import TissueMeasurement
from processing.pipeline import (
    SessionAnalysis,
    StepTimer,
    analyse_session,
    configured_psf_fwhm_mm,
    psf_fwhm_mm,
    sodium_space_inputs,
)
from processing.quality import quality_checks
from processing.registration_qc import image_centre_lps, optimality, perturbed, rigid_motion
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings
from processing.tissue_tsc import measure_tissues
from processing.volume import Scaling, Volume
from simulator.physics import ReceiveFieldShape, add_rician_noise, smooth_receive_field
from simulator.population import Group
from simulator.session import simulate_session, study_acquisition
from sodium_node.errors import SodiumNodeError

SECTIONS = ("clean", "registration", "calibration", "blur", "segmentation", "field", "fov")
TRANSLATIONS_MM = (2.0, 5.0, 10.0, 20.0, 40.0)
ROTATIONS_DEG = (2.0, 5.0, 10.0, 20.0)


def row(fault: str, metric: str, value: float, verdict: str = "") -> None:
    print(f"| {fault} | {metric} | {value:.4g} | {verdict} |", flush=True)


def series_of(files: dict[str, list[Path]]) -> SessionSeries:
    return SessionSeries(
        sodium=tuple(files["sodium"]),
        body_coil_pdt2=tuple(files["pd_t2_body"]),
        head_coil_pdt2=tuple(files["pd_t2_head"]),
        t1_3d=tuple(files["t1_3d"]),
        lesion_seg=tuple(files.get("lesion_seg", ())),
    )


def step_volumes(analysis: SessionAnalysis) -> dict[str, tuple[Volume, Volume]]:
    loaded = analysis.loaded
    sodium, body = loaded["sodium"].echo(1), loaded["body_coil_pdt2"].echo(1)
    head, t1 = loaded["head_coil_pdt2"].echo(1), loaded["t1_3d"].echo(1)
    return {
        "sodium_to_body_pd": (sodium, body),
        "head_pd_to_body_pd": (head, body),
        "head_pd_to_t1": (head, t1),
    }


def registration_faults(analysis: SessionAnalysis, settings: ProcessingSettings) -> None:
    volumes = step_volumes(analysis)
    for step in analysis.chain.steps:
        fixed, moving = volumes[step.name]
        centre = image_centre_lps(fixed)
        clean = optimality(fixed, moving, step.transform, settings.registration)
        row(f"{step.name}: found", "MI nats / best neighbour gain", clean.mutual_information)
        row(f"{step.name}: found", "best neighbour gain", clean.best_neighbour_gain, clean.best_neighbour)
        faults = [
            (
                f"{d:g} mm along {axis}",
                rigid_motion(rotation_deg=(0, 0, 0), translation_mm=shift, centre=centre),
            )
            for d in TRANSLATIONS_MM
            for axis, shift in (("x", (d, 0, 0)), ("z", (0, 0, d)), ("xyz", tuple(np.full(3, d / 3**0.5))))
        ] + [
            (
                f"{a:g} deg about {axis}",
                rigid_motion(rotation_deg=angles, translation_mm=(0, 0, 0), centre=centre),
            )
            for a in ROTATIONS_DEG
            for axis, angles in (("x", (a, 0, 0)), ("z", (0, 0, a)))
        ]
        for name, fault in faults:
            result = optimality(fixed, moving, perturbed(step.transform, fault), settings.registration)
            row(
                f"{step.name}: {name}",
                f"MI {result.mutual_information:.3f}; best neighbour gain",
                result.best_neighbour_gain,
                result.best_neighbour,
            )


def remeasure(
    analysis: SessionAnalysis,
    settings: ProcessingSettings,
    *,
    sodium: Volume | None = None,
    concentrations_mM: tuple[float, float] | None = None,
) -> None:
    """Calibrate ``sodium`` again, measure the tissues with the session's masks, print every check."""
    original = analysis.loaded["sodium"].echo(1)
    sodium = original if sodium is None else sodium
    calibration = calibrate(
        sodium,
        concentrations_mM=concentrations_mM or settings.phantom_concentrations_mM,
        erosion_voxels=settings.phantom_erosion_voxels,
        psf_fwhm_mm=configured_psf_fwhm_mm(sodium, settings),
        series_name="fault",
    )
    changed = replace(analysis, calibration=calibration, loaded=_with_sodium(analysis, sodium))
    if concentrations_mM is not None:
        settings = replace(settings, phantom_concentrations_mM=concentrations_mM)
    print_checks(changed, settings)


def _with_sodium(analysis: SessionAnalysis, sodium: Volume) -> dict[str, object]:
    loaded = dict(analysis.loaded)
    series = loaded["sodium"]
    loaded["sodium"] = replace(series, volumes=(sodium, *series.volumes[1:]))  # type: ignore[type-var]
    return loaded  # type: ignore[return-value]


def print_checks(analysis: SessionAnalysis, settings: ProcessingSettings, label: str = "") -> None:
    fwhm = psf_fwhm_mm(analysis, settings)
    inputs = sodium_space_inputs(analysis, settings, psf_fwhm_mm=fwhm, qc_folder=None)
    tissues: tuple[TissueMeasurement, ...] = measure_tissues(
        inputs.calibration.tsc_mM,
        inputs.fractions,
        method=settings.pvc_method,
        csf_tsc_mM=settings.csf_tsc_mM,
    )
    if inputs.receive_field is not None:
        selection = inputs.receive_field.selection
        print(
            f"    field: degree {selection.degree} (supported {selection.supported_degree}), cv gain "
            f"{ {k: round(v, 3) for k, v in selection.cv_gain.items()} }, "
            f"gain change {selection.gain_change:+.3f}, spread {inputs.receive_field.spread:.3f}"
        )
    for check in quality_checks(analysis, inputs, tissues, settings, out_dir=Path(tempfile.gettempdir())):
        print(
            f"    {label}{check.step}: {check.metric_name} = {check.metric_value:.4g} "
            f"-> {check.verdict.value}"
        )
    print("    tissues: " + ", ".join(f"{t.tissue.value} {t.mean_mM:.2f}" for t in tissues), flush=True)


def noisy(sodium: Volume, *, sigma: float, seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    data = add_rician_noise(rng, np.asarray(sodium.data, np.float32), sigma=sigma)
    return sodium.with_data(data, scaling=sodium.scaling, unit=sodium.unit)


def blurred(sodium: Volume, *, fwhm_mm: float, keep: np.ndarray | None) -> Volume:
    sigma_voxels = fwhm_mm / 2.3548 / np.asarray(sodium.voxel_size_mm)
    data = np.asarray(sodium.data, np.float64)
    smooth = ndimage.gaussian_filter(data, sigma_voxels)
    if keep is not None:
        smooth = np.where(keep, data, smooth)
    return sodium.with_data(smooth, scaling=sodium.scaling, unit=sodium.unit)


def run(section: str, analysis: SessionAnalysis, settings: ProcessingSettings, seed: int) -> None:
    sodium = analysis.loaded["sodium"].echo(1)
    calibration = analysis.calibration
    sigma = calibration.noise_sigma
    vials = np.zeros(sodium.shape, bool)
    for vial in calibration.vial_rois:
        vials |= ndimage.binary_dilation(vial, iterations=6)
    attempts: dict[str, Callable[[], None]] = {}
    if section == "clean":
        attempts["clean"] = lambda: print_checks(analysis, settings)
    if section == "registration":
        attempts["registration"] = lambda: registration_faults(analysis, settings)
    if section == "calibration":
        attempts["swapped vials"] = lambda: remeasure(analysis, settings, concentrations_mM=(80.0, 40.0))
        for factor in (1.5, 2.0, 2.5, 3.0):
            attempts[f"noise x{factor:g} (sigma {factor * sigma:.3g})"] = lambda f=factor: remeasure(
                analysis, settings, sodium=noisy(sodium, sigma=sigma * (f * f - 1) ** 0.5, seed=seed)
            )
        low_vial = ndimage.binary_dilation(calibration.vial_rois[0], iterations=6)
        background = noisy(
            sodium.with_data(np.zeros(sodium.shape), scaling=sodium.scaling, unit=""), sigma=sigma, seed=seed
        )
        attempts["missing 40 mM vial"] = lambda: remeasure(
            analysis,
            settings,
            sodium=sodium.with_data(
                np.where(low_vial, background.data, sodium.data), scaling=sodium.scaling, unit=sodium.unit
            ),
        )
        high_vial = ndimage.binary_dilation(calibration.vial_rois[1], iterations=6)
        for scale in (0.95, 0.9, 0.8):
            attempts[f"80 mM vial's signal x{scale:g} (a vial not the study's, a local field)"] = (
                lambda f=scale: remeasure(
                    analysis,
                    settings,
                    sodium=sodium.with_data(
                        np.where(high_vial, f * np.asarray(sodium.data), sodium.data),
                        scaling=sodium.scaling,
                        unit=sodium.unit,
                    ),
                )
            )
        for fwhm in (4.0, 8.0):
            attempts[f"whole image blurred {fwhm:g} mm"] = lambda f=fwhm: remeasure(
                analysis, settings, sodium=blurred(sodium, fwhm_mm=f, keep=None)
            )
    if section == "blur":
        for fwhm in (4.0, 6.0, 8.0, 12.0):
            attempts[f"head blurred {fwhm:g} mm (motion)"] = lambda f=fwhm: remeasure(
                analysis, settings, sodium=blurred(sodium, fwhm_mm=f, keep=vials)
            )
    if section == "field":
        points = _points_lps(sodium)
        for shape, amplitude in (
            (ReceiveFieldShape.COIL, 0.2),
            (ReceiveFieldShape.COIL, 0.4),
            (ReceiveFieldShape.GAUSSIANS, 0.2),
            (ReceiveFieldShape.GAUSSIANS, 0.4),
        ):
            field = smooth_receive_field(
                np.random.default_rng(seed), points, amplitude=amplitude, shape=shape
            )
            attempts[f"field {shape.value} +-{amplitude:.0%} on top"] = lambda f=field: remeasure(
                analysis,
                settings,
                sodium=sodium.with_data(
                    np.asarray(sodium.data) * f, scaling=sodium.scaling, unit=sodium.unit
                ),
            )
    if section == "segmentation":
        maps = analysis.maps
        attempts["CSF missing (CSF as grey matter)"] = lambda: _segmentation_fault(
            analysis, settings, csf_to_grey=1.0
        )
        attempts["half the CSF missing"] = lambda: _segmentation_fault(analysis, settings, csf_to_grey=0.5)
        del maps
    if section == "fov":
        for shift in (20.0, 40.0):
            attempts[f"T1 -> sodium transform off by {shift:g} mm in z"] = lambda s=shift: _fov_fault(
                analysis, settings, s
            )
        for cut_mm in (45.0, 55.0):
            attempts[f"sodium FOV cut {cut_mm:g} mm short at the vertex"] = lambda c=cut_mm: _cut_fov(
                analysis, settings, c
            )
    for name, attempt in attempts.items():
        print(f"## {name}", flush=True)
        try:
            attempt()
        except SodiumNodeError as error:
            print(f"    refused: {type(error).__name__}: {str(error)[:300]}", flush=True)


def _points_lps(volume: Volume) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    return np.asarray(index @ volume.affine_lps[:3, :3].T + volume.affine_lps[:3, 3], dtype=np.float32)


def _segmentation_fault(
    analysis: SessionAnalysis, settings: ProcessingSettings, *, csf_to_grey: float
) -> None:
    from processing.segmentation.tissue_maps import brain_volumes, compartments

    maps = analysis.maps
    csf = np.asarray(maps.csf.data)
    grey = maps.grey.with_data(
        np.asarray(maps.grey.data) + csf_to_grey * csf, scaling=Scaling.DERIVED, unit="fraction"
    )
    faulty = replace(
        maps,
        grey=grey,
        csf=maps.csf.with_data((1 - csf_to_grey) * csf, scaling=Scaling.DERIVED, unit="fraction"),
    )
    volumes = brain_volumes(faulty, t2_lesions=None, t1_lesions=None, t1_series="fault")
    model = compartments(faulty, t2_lesions=None, lesion_dilation_mm=0.0)
    print_checks(replace(analysis, maps=faulty, volumes=volumes, model=model), settings)


def _fov_fault(analysis: SessionAnalysis, settings: ProcessingSettings, shift_mm: float) -> None:
    chain = analysis.chain
    move = np.eye(4)
    move[2, 3] = shift_mm
    t1_to_sodium = replace(chain.t1_to_sodium, matrix_lps=move @ chain.t1_to_sodium.matrix_lps)
    print_checks(replace(analysis, chain=replace(chain, t1_to_sodium=t1_to_sodium)), settings)


def _cut_fov(analysis: SessionAnalysis, settings: ProcessingSettings, cut_mm: float) -> None:
    """The sodium image without its top slices (the vertex outside the field of view), masks aligned."""
    sodium = analysis.loaded["sodium"].echo(1)
    superior = int(np.argmax(np.abs(sodium.affine_lps[2, :3])))
    slices = round(cut_mm / sodium.voxel_size_mm[superior])
    keep = [slice(None)] * 3
    top_is_high = sodium.affine_lps[2, superior] > 0
    keep[superior] = slice(0, sodium.shape[superior] - slices) if top_is_high else slice(slices, None)
    affine = np.array(sodium.affine_ras)
    if not top_is_high:
        affine[:3, 3] += affine[:3, superior] * slices
    cut = replace(sodium, data=np.ascontiguousarray(sodium.data[tuple(keep)]), affine_ras=affine)
    remeasure(analysis, settings, sodium=cut)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--group", default="RRMS", choices=[g.value for g in Group])
    parser.add_argument("--only", default=",".join(SECTIONS))
    args = parser.parse_args()
    settings = ProcessingSettings()
    with tempfile.TemporaryDirectory(prefix="qc-faults-") as work:
        folder = Path(work) / "session"
        session = simulate_session(
            folder, study_acquisition(args.seed, Group(args.group), new_study_for_sodium=True)
        )
        qc = Path(work) / "qc"
        qc.mkdir()
        with tqdm(total=4, disable=True) as bar:
            analysis = analyse_session(
                series_of(session.series_files), settings, qc_folder=qc, timer=StepTimer({}, bar)
            )
        for section in args.only.split(","):
            print(f"# {section} (seed {args.seed}, {args.group})", flush=True)
            run(section, analysis, settings, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
