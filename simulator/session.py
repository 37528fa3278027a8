"""One full simulated session, written as the scanner would send it, plus its ground truth."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from tqdm import tqdm

from simulator.acquire import AcquiredVolume, acquire_proton_series, plan_grid, store_echoes
from simulator.anatomy import Anatomy, simulate_anatomy
from simulator.dicom_classic import write_classic_series
from simulator.dicom_common import derived_uid
from simulator.dicom_enhanced import write_enhanced_series
from simulator.eyes import draw_eye_tsc
from simulator.geometry import VolumeGrid
from simulator.ground_truth import (
    GROUND_TRUTH_SCHEMA_VERSION,
    LABELS,
    T1SpaceTruth,
    grid_record,
    write_json,
    write_nifti,
    write_t1_space_truth,
)
from simulator.lesion_seg import write_lesion_seg
from simulator.phantoms import default_vials
from simulator.physics import ReceiveFieldShape
from simulator.population import Group, draw_tissue_tsc
from simulator.pose import HeadPose, draw_pose
from simulator.protocol import PROTOCOL, SODIUM_3D, T1_3D, ExamKind, SeriesProtocol
from simulator.series import Exam, Patient, ScannedSeries
from simulator.sodium import SodiumAcquisition, acquire_sodium
from simulator.tissues import BRAIN_TISSUES, EYE_TISSUES, INTRACRANIAL_TISSUES, LESION_TISSUES, Tissue
from simulator.vial_placement import PlacedVial, draw_vials
from sodium_node.errors import SimulationError

log = logging.getLogger(__name__)

SESSION_DATE = dt.date(2026, 3, 2)
HEAD_EXAM_START = dt.time(9, 0)
SODIUM_EXAM_DELAY = dt.timedelta(minutes=35)
LESION_SEG_SERIES_NUMBER = 1301
RECEIVE_FIELD_AMPLITUDES = (0.0, 0.05, 0.10, 0.20)
"""Sodium receive field amplitudes drawn per subject, each a quarter of subjects (0: exactly flat)."""
PSF_FWHM_FACTOR_RANGE = (1.3, 2.0)
"""Sodium PSF FWHM / voxel size, drawn uniformly per subject."""
SCALE_INTERCEPT_RANGE = (200, 600)
"""Philips private scale intercept SI of the sodium series (stored units), drawn per subject."""


class VialLayout(enum.Enum):
    DRAWN = "drawn"
    """Size, tilt, site and sides drawn per subject (:mod:`simulator.vial_placement`)."""
    DEFAULT = "default"
    """The coil's predefined set-up (:func:`simulator.phantoms.default_vials`), as before."""


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate. ``None`` means "drawn per seed"; a value forces it."""

    seed: int
    group: Group
    enhanced: bool = False
    psf_fwhm_factor: float | None = None
    snr: float = 8.0
    sodium_receive_field_amplitude: float | None = None
    """Relative amplitude of the sodium receive field; 0 gives exactly 1.0 everywhere."""
    receive_field_shape: ReceiveFieldShape | None = None
    phantom_concentrations_mM: tuple[float, float] = (40.0, 80.0)
    vial_layout: VialLayout = VialLayout.DRAWN
    eyes: bool = True
    new_study_for_sodium: bool | None = None
    """Whether the coil change starts a new study; ``None`` lets the seed decide."""
    progress: bool = False


@dataclass(frozen=True)
class SodiumSettings:
    """The per-subject sodium acquisition settings, drawn or forced."""

    psf_fwhm_factor: float
    receive_field_amplitude: float
    receive_field_shape: ReceiveFieldShape
    scale_intercept: int


def study_acquisition(seed: int, group: Group, **overrides: Any) -> SimulationOptions:
    """The acquisition the default configuration describes: the coil's predefined vials (40 mM on the
    right), PSF 1.6 x voxel, a +-10 % quadratic receive field. The demo and the tests that check a
    method against a known set-up use it; anatomy, eyes and noise are still drawn per seed."""
    fields: dict[str, Any] = {
        "vial_layout": VialLayout.DEFAULT,
        "psf_fwhm_factor": 1.6,
        "sodium_receive_field_amplitude": 0.10,
        "receive_field_shape": ReceiveFieldShape.QUADRATIC,
        **overrides,
    }
    return SimulationOptions(seed=seed, group=group, **fields)


@dataclass(frozen=True)
class SimulatedSession:
    folder: Path
    dicom_folder: Path
    ground_truth_path: Path
    series_files: dict[str, list[Path]]
    ground_truth: dict[str, Any]


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams, so changing one part of the simulation leaves the others as they were."""
    names = (
        "anatomy",
        "tissue",
        "pose",
        "study",
        "planning",
        "noise",
        "scaling",
        # Added later; spawned children keep their index, so the streams above are unchanged.
        "eyes",
        "vials",
        "receive_field",
        "psf",
        "intercept",
    )
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def _head_centre(anatomy: Anatomy) -> tuple[float, float, float]:
    intracranial = sum(anatomy.fractions[t] for t in INTRACRANIAL_TISSUES)
    k, j, i = np.nonzero(np.asarray(intracranial) > 0.5)
    centre = anatomy.grid.affine_lps() @ np.array([i.mean(), j.mean(), k.mean(), 1.0])
    return float(centre[0]), float(centre[1]), float(centre[2])


def _sodium_settings(options: SimulationOptions, rngs: dict[str, np.random.Generator]) -> SodiumSettings:
    """Draw every setting (always, so a forced one leaves the other draws as they were), then force."""
    amplitude = float(rngs["receive_field"].choice(RECEIVE_FIELD_AMPLITUDES))
    shapes = list(ReceiveFieldShape)
    shape = shapes[int(rngs["receive_field"].integers(len(shapes)))]
    psf = float(rngs["psf"].uniform(*PSF_FWHM_FACTOR_RANGE))
    intercept = int(rngs["intercept"].integers(SCALE_INTERCEPT_RANGE[0], SCALE_INTERCEPT_RANGE[1] + 1))
    return SodiumSettings(
        psf_fwhm_factor=psf if options.psf_fwhm_factor is None else options.psf_fwhm_factor,
        receive_field_amplitude=(
            amplitude
            if options.sodium_receive_field_amplitude is None
            else options.sodium_receive_field_amplitude
        ),
        receive_field_shape=shape if options.receive_field_shape is None else options.receive_field_shape,
        scale_intercept=intercept,
    )


def _vials(
    options: SimulationOptions, rng: np.random.Generator, anatomy: Anatomy, pose: HeadPose
) -> tuple[PlacedVial, ...]:
    if options.vial_layout is VialLayout.DEFAULT:
        return tuple(
            PlacedVial(vial, "right" if vial.centre_lps_mm[0] < 0 else "left", None, None)
            for vial in default_vials(options.phantom_concentrations_mM)
        )
    return draw_vials(
        rng,
        anatomy=anatomy,
        pose=pose,
        concentrations_mM=options.phantom_concentrations_mM,
        fov_mm=SODIUM_3D.fov_mm,
    )


def _patient(options: SimulationOptions) -> Patient:
    return Patient(
        name=f"SIM^{options.group.value}{options.seed:04d}",
        patient_id=f"SIM{options.group.value}{options.seed:06d}",
        issuer_of_patient_id="SODIUM-NODE-SIMULATOR",
        birth_date="19780101",
        sex="F" if options.seed % 3 else "M",
    )


def _exams(options: SimulationOptions, rng: np.random.Generator) -> dict[ExamKind, Exam]:
    start = dt.datetime.combine(SESSION_DATE + dt.timedelta(days=options.seed % 365), HEAD_EXAM_START)
    new_study = options.new_study_for_sodium
    if new_study is None:
        new_study = bool(rng.random() < 0.5)
    head_study = derived_uid(options.seed, options.group.value, "study", "head")
    sodium_study = (
        derived_uid(options.seed, options.group.value, "study", "sodium") if new_study else head_study
    )
    accession = f"ACC{options.seed:06d}"
    return {
        ExamKind.HEAD_COIL: Exam(
            head_study, "1", accession, "MRI brain 1H + 23Na", derived_uid(options.seed, "for", "head"), start
        ),
        ExamKind.SODIUM: Exam(
            sodium_study,
            "2" if new_study else "1",
            f"{accession}B" if new_study else accession,
            "MRI brain 1H + 23Na",
            derived_uid(options.seed, "for", "sodium"),
            start + SODIUM_EXAM_DELAY,
        ),
    }


def _scanned(
    protocol: SeriesProtocol, exam: Exam, grid: VolumeGrid, echoes: Any, options: SimulationOptions
) -> ScannedSeries:
    return ScannedSeries(
        key=protocol.key,
        exam=exam,
        series_instance_uid=derived_uid(options.seed, options.group.value, "series", protocol.key),
        series_number=protocol.series_number,
        series_description=protocol.description,
        protocol_name=protocol.description,
        nucleus=protocol.nucleus,
        imaging_frequency_mhz=protocol.imaging_frequency_mhz,
        coils=protocol.coils,
        acquisition=protocol.acquisition,
        grid=grid,
        echoes=echoes,
        acquired=exam.start + dt.timedelta(minutes=protocol.minutes_after_exam_start),
    )


def simulate_session(out_dir: Path, options: SimulationOptions) -> SimulatedSession:
    """Simulate and write one session into ``out_dir`` (which must be empty or not exist)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SimulationError(f"{out_dir}: output folder is not empty; choose a new folder")
    if (options.psf_fwhm_factor is not None and options.psf_fwhm_factor <= 0) or options.snr <= 0:
        raise SimulationError(
            f"psf_fwhm_factor and snr must be positive (got {options.psf_fwhm_factor}, {options.snr})"
        )
    if (
        options.sodium_receive_field_amplitude is not None
        and not 0.0 <= options.sodium_receive_field_amplitude < 1.0
    ):
        raise SimulationError(
            f"sodium receive field amplitude must be in [0, 1) (got {options.sodium_receive_field_amplitude})"
        )
    rngs = _rngs(options.seed)
    steps = tqdm(total=len(PROTOCOL) + 3, desc="simulate", unit="step", disable=not options.progress)
    anatomy = simulate_anatomy(rngs["anatomy"], options.group, eye_rng=rngs["eyes"] if options.eyes else None)
    brain_tsc = draw_tissue_tsc(rngs["tissue"], options.group)
    eye_tsc = draw_eye_tsc(rngs["eyes"]) if options.eyes else {}
    settings = _sodium_settings(options, rngs)
    centre = _head_centre(anatomy)
    poses = {
        ExamKind.HEAD_COIL: draw_pose(rngs["pose"], centre),
        ExamKind.SODIUM: draw_pose(rngs["pose"], centre),
    }
    placed_vials = _vials(options, rngs["vials"], anatomy, poses[ExamKind.SODIUM])
    vials = tuple(p.vial for p in placed_vials)
    patient = _patient(options)
    exams = _exams(options, rngs["study"])
    steps.update()

    dicom_folder = out_dir / "dicom"
    series_list: list[ScannedSeries] = []
    sodium: SodiumAcquisition | None = None
    for protocol in PROTOCOL:
        pose = poses[protocol.exam]
        coil_fixed = protocol.exam is ExamKind.SODIUM
        grid = plan_grid(protocol, pose, rngs["planning"], coil_fixed=coil_fixed)
        if protocol is SODIUM_3D:
            sodium = acquire_sodium(
                rngs["noise"],
                anatomy=anatomy,
                pose=pose,
                grid=grid,
                drawn_tsc_mM={**brain_tsc, **eye_tsc},
                vials=vials,
                psf_fwhm_factor=settings.psf_fwhm_factor,
                snr=options.snr,
                receive_field_amplitude=settings.receive_field_amplitude,
                receive_field_shape=settings.receive_field_shape,
                field_rng=rngs["receive_field"],
                signal_per_mM=float(rngs["scaling"].uniform(0.5, 5.0)),
            )
            volumes = [
                AcquiredVolume(
                    protocol.acquisition.echo_times_ms[0], sodium.noise_free_signal, sodium.noisy_signal
                )
            ]
        else:
            volumes = acquire_proton_series(
                rngs["noise"],
                protocol=protocol,
                anatomy=anatomy,
                pose=pose,
                grid=grid,
                vials=vials if coil_fixed else (),
            )
        intercept = settings.scale_intercept if protocol is SODIUM_3D else 0
        echoes = store_echoes(rngs["scaling"], volumes, scale_intercept=intercept)
        series = _scanned(protocol, exams[protocol.exam], grid, echoes, options)
        series_list.append(series)
        steps.update()
    if sodium is None:
        raise SimulationError("the protocol has no sodium series")

    created = exams[ExamKind.SODIUM].start + dt.timedelta(hours=1)
    series_files: dict[str, list[Path]] = {}
    for series in series_list:
        folder = (
            dicom_folder / f"{series.exam.study_id}_{series.series_number:04d}_{series.series_description}"
        )
        writer = write_enhanced_series if options.enhanced else write_classic_series
        series_files[series.key] = writer(patient=patient, series=series, folder=folder, created=created)
    t1_series = next(s for s in series_list if s.key == T1_3D.key)
    t1_truth = write_t1_space_truth(
        anatomy=anatomy,
        pose=poses[ExamKind.HEAD_COIL],
        t1_grid=t1_series.grid,
        folder=out_dir / "ground_truth" / "t1_space",
    )
    seg_path = _write_lesion_seg(t1_truth, series_files[T1_3D.key], dicom_folder, created)
    if seg_path is not None:
        series_files["lesion_seg"] = [seg_path]
    steps.update()

    ground_truth = _ground_truth(
        options=options,
        anatomy=anatomy,
        brain_tsc=brain_tsc,
        eye_tsc=eye_tsc,
        settings=settings,
        poses=poses,
        vials=placed_vials,
        patient=patient,
        series_list=series_list,
        sodium=sodium,
        t1_truth=t1_truth,
        series_files=series_files,
        out_dir=out_dir,
    )
    ground_truth_path = write_json(ground_truth, out_dir / "ground_truth" / "ground_truth.json")
    steps.update()
    steps.close()
    return SimulatedSession(out_dir, dicom_folder, ground_truth_path, series_files, ground_truth)


def _write_lesion_seg(
    t1_truth: T1SpaceTruth, t1_files: list[Path], dicom_folder: Path, created: dt.datetime
) -> Path | None:
    if not t1_truth.t2_lesion_mask.any():
        return None
    datasets = [pydicom.dcmread(path) for path in t1_files]
    return write_lesion_seg(
        t1_datasets=datasets,
        t2_lesion_mask_kji=t1_truth.t2_lesion_mask,
        t1_hypointense_mask_kji=t1_truth.t1_hypointense_lesion_mask,
        series_number=LESION_SEG_SERIES_NUMBER,
        created=created,
        path=dicom_folder / f"1_{LESION_SEG_SERIES_NUMBER:04d}_WM_lesion_SEG" / "SEG_00001.dcm",
    )


def _weighted_mean(values: npt.NDArray[np.float32], weights: npt.NDArray[np.float32]) -> float | None:
    total = float(weights.sum(dtype=np.float64))
    return float((values * weights).sum(dtype=np.float64) / total) if total > 0 else None


def _ground_truth(
    *,
    options: SimulationOptions,
    anatomy: Anatomy,
    brain_tsc: dict[Tissue, float],
    eye_tsc: dict[Tissue, float],
    settings: SodiumSettings,
    poses: dict[ExamKind, HeadPose],
    vials: tuple[PlacedVial, ...],
    patient: Patient,
    series_list: list[ScannedSeries],
    sodium: SodiumAcquisition,
    t1_truth: T1SpaceTruth,
    series_files: dict[str, list[Path]],
    out_dir: Path,
) -> dict[str, Any]:
    truth_dir = out_dir / "ground_truth"
    sodium_grid = next(s.grid for s in series_list if s.key == SODIUM_3D.key)
    tsc_all = {**brain_tsc, Tissue.CSF: 140.0, **eye_tsc}

    write_nifti(sodium.tsc_psf_mM, sodium_grid, truth_dir / "sodium_space" / "tsc_psf_mM.nii.gz")
    write_nifti(
        sodium.noise_free_signal, sodium_grid, truth_dir / "sodium_space" / "signal_noise_free.nii.gz"
    )
    write_nifti(sodium.receive_field, sodium_grid, truth_dir / "sodium_space" / "receive_field.nii.gz")
    for index, fraction in enumerate(sodium.vial_fractions):
        write_nifti(
            fraction, sodium_grid, truth_dir / "sodium_space" / f"prob_vial_{index}.nii.gz", probability=True
        )
    for tissue, fraction in sodium.tissue_fractions.items():
        write_nifti(
            fraction,
            sodium_grid,
            truth_dir / "sodium_space" / f"prob_{tissue.value}.nii.gz",
            probability=True,
        )

    tissues: dict[str, Any] = {}
    for tissue in (*INTRACRANIAL_TISSUES, *(t for t in EYE_TISSUES if t in eye_tsc)):
        t1_volume_ml = t1_truth.volumes_ml[tissue]
        tissues[tissue.value] = {
            "tsc_true_mM": tsc_all[tissue],
            "mean_tsc_t1_space_mM": tsc_all[tissue] if t1_volume_ml > 0 else None,
            "mean_psf_tsc_sodium_space_mM": _weighted_mean(
                sodium.tsc_psf_mM, sodium.tissue_fractions[tissue]
            ),
            "volume_subject_ml": anatomy.volume_ml(tissue),
            "volume_t1_space_ml": t1_volume_ml,
        }
    lesion_volume = sum(tissues[t.value]["volume_t1_space_ml"] for t in LESION_TISSUES)
    lesion_tsc = (
        sum(tissues[t.value]["volume_t1_space_ml"] * tsc_all[t] for t in LESION_TISSUES) / lesion_volume
        if lesion_volume > 0
        else None
    )
    brain_ml = sum(tissues[t.value]["volume_t1_space_ml"] for t in BRAIN_TISSUES)
    tiv_ml = brain_ml + tissues[Tissue.CSF.value]["volume_t1_space_ml"]
    grey_ml = sum(tissues[t.value]["volume_t1_space_ml"] for t in (Tissue.CORTICAL_GM, Tissue.DEEP_GM))
    white_ml = brain_ml - grey_ml
    return {
        "schema_version": GROUND_TRUTH_SCHEMA_VERSION,
        "seed": options.seed,
        "group": options.group.value,
        "parameters": {
            "enhanced": options.enhanced,
            "psf_fwhm_factor": settings.psf_fwhm_factor,
            "psf_fwhm_mm": sodium.psf_fwhm_mm,
            "snr_in_gm": options.snr,
            "sodium_receive_field_amplitude": settings.receive_field_amplitude,
            "sodium_receive_field_shape": settings.receive_field_shape.value,
            "sodium_scale_intercept": settings.scale_intercept,
            "vial_layout": options.vial_layout.value,
            "sodium_signal_per_mM": sodium.signal_per_mM,
            "sodium_noise_sigma": sodium.noise_sigma,
            "warp_rms_mm": anatomy.warp_rms_mm,
            "global_scale": anatomy.global_scale,
            "axis_scales_lps": list(anatomy.axis_scales),
            "atrophy": anatomy.atrophy,
        },
        "patient": {"name": patient.name, "id": patient.patient_id, "issuer": patient.issuer_of_patient_id},
        "tissues": tissues,
        "lesions": {
            "t2_volume_ml": lesion_volume,
            "t1_hypointense_volume_ml": tissues[Tissue.LESION_T1_HYPOINTENSE.value]["volume_t1_space_ml"],
            "tsc_all_t2_lesions_mM": lesion_tsc,
            "count": len(anatomy.lesions.lesions),
            "items": [
                {
                    "site": les.site.value,
                    "centre_subject_lps_mm": les.centre_lps_mm,
                    "volume_ml": les.volume_ml,
                    "t1_hypointense": les.t1_hypointense,
                }
                for les in anatomy.lesions.lesions
            ],
        },
        "volumes": {
            "tiv_ml": tiv_ml,
            "brain_ml": brain_ml,
            "grey_ml": grey_ml,
            "white_ml": white_ml,
            "bpf": brain_ml / tiv_ml,
            "gmf": grey_ml / tiv_ml,
            "wmf": white_ml / tiv_ml,
            "ventricles_subject_ml": anatomy.ventricles_ml,
        },
        "phantoms": [
            {
                "concentration_mM": p.vial.concentration_mM,
                "centre_scanner_lps_mm": p.vial.centre_lps_mm,
                "radius_mm": p.vial.radius_mm,
                "length_mm": p.vial.length_mm,
                "axis_lps": list(p.vial.axis_lps),
                "volume_ml": p.vial.volume_ml,
                "side": p.side,
                "site": None if p.site is None else p.site.value,
                "clearance_from_head_mm": p.clearance_mm,
            }
            for p in vials
        ],
        "eyes": [
            {
                "side": eye.side,
                "centre_subject_lps_mm": eye.centre_lps_mm,
                "radius_mm": eye.radius_mm,
                "lens_centre_subject_lps_mm": eye.lens_centre_lps_mm,
            }
            for eye in anatomy.eyes
        ],
        "exams": {
            kind.value: {
                "subject_to_scanner_lps": poses[kind].subject_to_scanner_lps().round(8).tolist(),
                "rotation_deg": poses[kind].rotation_deg,
                "translation_mm": poses[kind].translation_mm,
            }
            for kind in ExamKind
        },
        "t1_to_sodium_scanner_lps": (
            poses[ExamKind.SODIUM].subject_to_scanner_lps()
            @ np.linalg.inv(poses[ExamKind.HEAD_COIL].subject_to_scanner_lps())
        )
        .round(8)
        .tolist(),
        "series": {
            s.key: {
                "series_instance_uid": s.series_instance_uid,
                "study_instance_uid": s.exam.study_instance_uid,
                "frame_of_reference_uid": s.exam.frame_of_reference_uid,
                "series_number": s.series_number,
                "series_description": s.series_description,
                "nucleus": s.nucleus.value,
                "receive_coil": s.coils.receive_coil_name,
                "echo_times_ms": [e.echo_time_ms for e in s.echoes],
                "scaling": [
                    {
                        "rescale_slope": e.scaling.rescale_slope,
                        "rescale_intercept": e.scaling.rescale_intercept,
                        "scale_slope": e.scaling.scale_slope,
                        "scale_intercept": e.scaling.scale_intercept,
                    }
                    for e in s.echoes
                ],
                "files": len(series_files[s.key]),
                "grid": grid_record(s.grid),
            }
            for s in series_list
        },
        "lesion_seg": {"present": "lesion_seg" in series_files, "series_number": LESION_SEG_SERIES_NUMBER},
        "label_values": LABELS,
    }
