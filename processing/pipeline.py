"""The whole processing of one session: DICOM files in, ``measurements.json`` and maps out.

load -> calibrate -> register -> segment -> resample (PSF) -> partial-volume correction -> measure
-> write. Each step is one function of the modules beside this one; this module only composes
them, times them, and writes the results folder (layout in ``processing.measurements``).

Nothing that looks like a result is written before every step has run: QC pictures go to ``qc/`` as
the steps run (they explain a failure), but the TSC map, the masks, ``provenance.json`` and, last,
``measurements.json`` are written only at the end. A stale ``measurements.json`` in the output folder
is removed first, so a failed re-run cannot leave an old result behind. A step that leaves nothing to
measure raises (see ``quality`` for which); every other doubt is a QC verdict (``quality.quality_checks``)
and a FAIL is written like any result, marked as failed in ``measurements.json``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from tqdm import tqdm

from processing.calibration import Calibration, calibrate
from processing.dicom_series import LoadedSeries, load_series
from processing.lesion_masks import LesionMasks, read_lesion_seg
from processing.measurements import (
    MEASUREMENTS_FILE,
    BrainVolumes,
    Measurements,
    SessionReference,
    Tissue,
    TissueMeasurement,
    write_measurements,
)
from processing.nifti_io import read_volume, write_volume
from processing.provenance import write_provenance
from processing.psf_resampling import resample_masks_to_sodium
from processing.qc_report import REPORT_FILE, qc_record, write_qc_record, write_qc_report
from processing.quality import quality_checks
from processing.receive_field import (
    ReceiveFieldEstimate,
    VialReference,
    estimate_receive_field,
)
from processing.registration import RegistrationChain, register_chain
from processing.registration_qc import ChainQuality, chain_quality
from processing.resample import resample_onto
from processing.segmentation.builtin import segment_builtin
from processing.segmentation.external import read_external_maps, run_segmentation_command
from processing.segmentation.tissue_maps import TissueMaps, brain_volumes, compartments
from processing.segmentation_pictures import write_measurement_pictures
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings, PsfSource, ReceiveFieldSource, SegmentationSource
from processing.tissue_tsc import measure_tissues
from processing.volume import Volume
from sodium_node import __version__
from sodium_node.errors import CalibrationError, LoadError, SegmentationError

log = logging.getLogger(__name__)

STEPS = ("load", "calibrate", "register", "segment", "resample", "measure", "write")
MIN_FOV_COVERAGE = 0.8
"""Share of the segmented intracranial volume that must fall inside the sodium field of view, or the
session is refused; below ``quality.FOV_COVERAGE``'s limits (0.95, 0.88) it is a warning or a failure."""
MIN_BRAIN_SIGNAL_RATIO = 3.0
"""Sodium image: the 99th percentile must exceed this multiple of the median (air, noise floor)."""


@dataclass(frozen=True)
class StepTimer:
    seconds: dict[str, float]
    bar: tqdm
    on_start: Callable[[str], None] | None = None
    """Told each step's name as it starts (the node's time limit per step: node/child_process.py)."""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.on_start is not None:
            self.on_start(name)
        self.bar.set_description(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        log.info("step %s: %.1f s", name, self.seconds[name])
        self.bar.update(1)


def _load(paths: tuple[Path, ...], role: str) -> LoadedSeries:
    if not paths:
        raise LoadError(f"session: no {role} series")
    return load_series(list(paths))


def _check_sodium_signal(sodium: Volume, name: str) -> None:
    data = np.asarray(sodium.data, dtype=np.float64)
    high, floor = float(np.percentile(data, 99)), float(np.median(np.abs(data)))
    if not np.isfinite(high) or high <= MIN_BRAIN_SIGNAL_RATIO * max(floor, 1e-12):
        raise CalibrationError(
            f"{name}: no sodium signal (99th percentile {high:.4g} vs median {floor:.4g}): "
            "check the coil, the nucleus and the transmit calibration"
        )


def _session_reference(
    series: SessionSeries, loaded: dict[str, LoadedSeries], lesion_uid: str | None
) -> SessionReference:
    first = pydicom.dcmread(series.sodium[0], stop_before_pixels=True)
    sodium = loaded["sodium"].header
    return SessionReference(
        patient_id=str(first.get("PatientID", "")),
        issuer_of_patient_id=str(first.get("IssuerOfPatientID", "")),
        sodium_study_instance_uid=sodium.study_instance_uid,
        sodium_series_instance_uid=sodium.series_instance_uid,
        sodium_frame_of_reference_uid=sodium.frame_of_reference_uid,
        t1_series_instance_uid=loaded["t1_3d"].header.series_instance_uid,
        lesion_seg_series_instance_uid=lesion_uid,
    )


def _lesions(series: SessionSeries, t1: Volume) -> tuple[LesionMasks | None, Volume | None]:
    """The SEG's masks, or a NIfTI T2-lesion mask, or nothing (healthy control)."""
    if series.lesion_seg:
        masks = read_lesion_seg(series.lesion_seg[0], t1=t1)
        return masks, masks.t2_hyperintense
    if series.lesion_mask_nifti is not None:
        mask = read_volume(series.lesion_mask_nifti, space="t1", unit="fraction")
        if mask.shape != t1.shape or not np.allclose(mask.affine_ras, t1.affine_ras, atol=1e-2):
            raise SegmentationError(
                f"lesion mask {series.lesion_mask_nifti}: not on the 3D T1's grid (another frame of "
                "reference or resolution); coregister it to the 3D T1"
            )
        return None, mask.with_data(
            (mask.data > 0.5).astype(np.float32), scaling=mask.scaling, unit="fraction"
        )
    return None, None


def _segment(
    series: SessionSeries,
    settings: ProcessingSettings,
    *,
    t1: Volume,
    t2_lesions: Volume | None,
    t2_on_t1: Volume | None,
    work: Path,
) -> TissueMaps:
    if settings.segmentation is SegmentationSource.BUILTIN:
        return segment_builtin(t1, t2_lesions=t2_lesions, t2_on_t1=t2_on_t1)
    if series.segmentation_folder is not None:
        return read_external_maps(
            series.segmentation_folder, t1=t1, source=f"external:{series.segmentation_folder.name}"
        )
    if settings.segmentation_command:
        return run_segmentation_command(settings.segmentation_command, t1=t1, work_folder=work)
    raise SegmentationError(
        "segmentation is external but neither tissue maps came with the session nor "
        "processing.segmentation_command is set"
    )


@dataclass(frozen=True)
class SessionAnalysis:
    """Everything up to the tissue maps in T1 space: what the sodium-space steps start from."""

    series: SessionSeries
    loaded: dict[str, LoadedSeries]
    calibration: Calibration
    chain: RegistrationChain
    maps: TissueMaps
    lesion_masks: LesionMasks | None
    volumes: BrainVolumes
    model: dict[str, Volume]
    """The PVC compartments in T1 space (``compartments``)."""
    registration_qc: ChainQuality

    @property
    def sodium_name(self) -> str:
        return self.loaded["sodium"].header.name

    @property
    def t1_name(self) -> str:
        return self.loaded["t1_3d"].header.name


def analyse_session(
    series: SessionSeries, settings: ProcessingSettings, *, qc_folder: Path, timer: StepTimer
) -> SessionAnalysis:
    """Load, calibrate, register and segment (the steps before sodium space)."""
    with timer.step("load"):
        loaded = {
            role: _load(paths, role) for role, paths in series.dicom_inputs().items() if role != "lesion_seg"
        }
        sodium, t1 = loaded["sodium"].echo(1), loaded["t1_3d"].echo(1)
        _check_sodium_signal(sodium, loaded["sodium"].header.name)
    with timer.step("calibrate"):
        receive_field = None
        if settings.receive_field_correction is ReceiveFieldSource.MAP:
            if series.receive_field_nifti is None:
                raise CalibrationError(
                    'processing.receive_field_correction is "map" but no receive-field map came with the '
                    'session; supply one, or choose "estimate" or "none"'
                )
            receive_field = read_volume(series.receive_field_nifti, space="sodium")
        calibration = calibrate(
            sodium,
            concentrations_mM=settings.phantom_concentrations_mM,
            erosion_voxels=settings.phantom_erosion_voxels,
            psf_fwhm_mm=configured_psf_fwhm_mm(sodium, settings),
            receive_field=receive_field,
            qc_picture_path=qc_folder / "calibration.png",
            series_name=loaded["sodium"].header.name,
        )
    with timer.step("register"):
        chain = register_chain(
            sodium=sodium,
            body_pd=loaded["body_coil_pdt2"].echo(1),
            head_pd=loaded["head_coil_pdt2"].echo(1),
            t1=t1,
            settings=settings.registration,
            qc_folder=qc_folder,
        )
        registration_qc = chain_quality(
            [
                (step.name, fixed, moving, step.transform)
                for step, (fixed, moving) in zip(
                    chain.steps,
                    (
                        (sodium, loaded["body_coil_pdt2"].echo(1)),
                        (loaded["head_coil_pdt2"].echo(1), loaded["body_coil_pdt2"].echo(1)),
                        (loaded["head_coil_pdt2"].echo(1), t1),
                    ),
                    strict=True,
                )
            ],
            settings.registration,
        )
    with timer.step("segment"), tempfile.TemporaryDirectory(prefix="sodium-seg-") as work:
        lesion_masks, t2_lesions = _lesions(series, t1)
        head_t2 = loaded["head_coil_pdt2"]
        t2_on_t1 = (
            resample_onto(head_t2.echo(2), t1, chain.steps[2].transform.inverse())
            if len(head_t2.volumes) >= 2
            else None
        )
        maps = _segment(series, settings, t1=t1, t2_lesions=t2_lesions, t2_on_t1=t2_on_t1, work=Path(work))
        volumes = brain_volumes(
            maps,
            t2_lesions=t2_lesions,
            t1_lesions=None if lesion_masks is None else lesion_masks.t1_hypointense,
            t1_series=loaded["t1_3d"].header.name,
        )
        model = compartments(maps, t2_lesions=t2_lesions, lesion_dilation_mm=settings.lesion_dilation_mm)
    return SessionAnalysis(
        series, loaded, calibration, chain, maps, lesion_masks, volumes, model, registration_qc
    )


def tissues_in_sodium_space(
    analysis: SessionAnalysis, *, psf_fwhm_mm: float
) -> tuple[dict[str, Volume], float]:
    """The compartments PSF-scaled into sodium space, and the share of their volume inside the sodium
    field of view; refuses a segmentation outside it."""
    in_sodium = resample_masks_to_sodium(
        analysis.model,
        sodium_grid=analysis.calibration.tsc_mM,
        t1_to_sodium=analysis.chain.t1_to_sodium,
        psf_fwhm_mm=psf_fwhm_mm,
    )
    coverage = fov_coverage(analysis.model, in_sodium)
    if coverage < MIN_FOV_COVERAGE:
        raise SegmentationError(
            f"segmentation of {analysis.t1_name}: only {coverage:.0%} of the intracranial volume falls "
            f"inside the sodium field of view of {analysis.sodium_name} (minimum {MIN_FOV_COVERAGE:.0%}): "
            "wrong session, or a failed registration"
        )
    return in_sodium, coverage


@dataclass(frozen=True)
class SodiumSpaceInputs:
    """What the measurement works on: the tissue maps in sodium space and the calibrated map."""

    fractions: dict[str, Volume]
    coverage: float
    """Share of the segmented intracranial volume inside the sodium field of view."""
    calibration: Calibration
    receive_field: ReceiveFieldEstimate | None
    """The estimated field, when ``receive_field_correction`` is ``estimate``."""


def sodium_space_inputs(
    analysis: SessionAnalysis, settings: ProcessingSettings, *, psf_fwhm_mm: float, qc_folder: Path | None
) -> SodiumSpaceInputs:
    """PSF-scaled tissue maps, and the calibration redone with the estimated receive field if asked."""
    fractions, coverage = tissues_in_sodium_space(analysis, psf_fwhm_mm=psf_fwhm_mm)
    if settings.receive_field_correction is not ReceiveFieldSource.ESTIMATE:
        return SodiumSpaceInputs(fractions, coverage, analysis.calibration, None)
    calibration = analysis.calibration
    sodium = analysis.loaded["sodium"].echo(1)
    estimate = estimate_receive_field(
        sodium,
        fractions,
        [
            VialReference(roi, vial.concentration_mM)
            for roi, vial in zip(calibration.vial_rois, calibration.vials, strict=True)
        ],
        noise_sigma=calibration.noise_sigma,
        series_name=analysis.sodium_name,
    )
    if not estimate.selection.applied:
        return SodiumSpaceInputs(fractions, coverage, calibration, estimate)
    corrected = calibrate(
        sodium,
        concentrations_mM=settings.phantom_concentrations_mM,
        erosion_voxels=settings.phantom_erosion_voxels,
        psf_fwhm_mm=configured_psf_fwhm_mm(sodium, settings),
        receive_field=estimate.field,
        qc_picture_path=None if qc_folder is None else qc_folder / "calibration.png",
        series_name=analysis.sodium_name,
    )
    return SodiumSpaceInputs(fractions, coverage, corrected, estimate)


def configured_psf_fwhm_mm(sodium: Volume, settings: ProcessingSettings) -> float:
    """The PSF FWHM the configuration gives the sodium image: ``psf_fwhm_factor`` x its mean voxel size."""
    return settings.psf_fwhm_factor * float(np.mean(sodium.voxel_size_mm))


def psf_fwhm_mm(analysis: SessionAnalysis, settings: ProcessingSettings) -> float:
    """The PSF width the tissue maps are blurred with (``processing.psf_source``): by default the one
    the vials' edges show on this session's image, which the calibration's QC holds within
    ``PSF_AGREEMENT`` of the configured width."""
    if settings.psf_source is PsfSource.VIALS:
        return analysis.calibration.fitted_psf_fwhm_mm
    return configured_psf_fwhm_mm(analysis.calibration.tsc_mM, settings)


def process_session(
    series: SessionSeries,
    out_dir: Path,
    settings: ProcessingSettings,
    *,
    progress: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> Measurements:
    """Run every step on ``series`` and write the results folder ``out_dir``; see the module doc."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MEASUREMENTS_FILE).unlink(missing_ok=True)
    qc_folder = out_dir / "qc"
    qc_folder.mkdir(exist_ok=True)
    with tqdm(total=len(STEPS), disable=not progress, unit="step") as bar:
        timer = StepTimer({}, bar, on_step)
        analysis = analyse_session(series, settings, qc_folder=qc_folder, timer=timer)
        fwhm_mm = psf_fwhm_mm(analysis, settings)
        with timer.step("resample"):
            inputs = sodium_space_inputs(analysis, settings, psf_fwhm_mm=fwhm_mm, qc_folder=qc_folder)
        with timer.step("measure"):
            tissues = measure_tissues(
                inputs.calibration.tsc_mM,
                inputs.fractions,
                method=settings.pvc_method,
                csf_tsc_mM=settings.csf_tsc_mM,
            )
        with timer.step("write"):
            measurements = _write_results(
                analysis, inputs, tissues, settings, out_dir=out_dir, psf_fwhm_mm=fwhm_mm, timer=timer
            )
    return measurements


def _write_results(
    analysis: SessionAnalysis,
    inputs: SodiumSpaceInputs,
    tissues: tuple[TissueMeasurement, ...],
    settings: ProcessingSettings,
    *,
    out_dir: Path,
    psf_fwhm_mm: float,
    timer: StepTimer,
) -> Measurements:
    files = {"tsc_map": "tsc_mM.nii.gz"}
    write_volume(inputs.calibration.tsc_mM, out_dir / files["tsc_map"])
    for tissue in Tissue:
        if tissue.value in inputs.fractions:
            files[f"mask_{tissue.value}"] = f"mask_{tissue.value}.nii.gz"
            write_volume(inputs.fractions[tissue.value], out_dir / files[f"mask_{tissue.value}"])
    if inputs.receive_field is not None:
        files["receive_field"] = "receive_field.nii.gz"
        write_volume(inputs.receive_field.field, out_dir / files["receive_field"])
    quality = quality_checks(analysis, inputs, tissues, settings, out_dir=out_dir)
    for check in quality:
        if check.picture is not None:
            files[f"qc_{check.step}"] = check.picture
    files["provenance"] = "provenance.json"
    for picture in write_measurement_pictures(
        t1=analysis.loaded["t1_3d"].echo(1),
        maps=analysis.maps,
        lesions=None if analysis.lesion_masks is None else analysis.lesion_masks.t2_hyperintense,
        tsc=inputs.calibration.tsc_mM,
        fractions=inputs.fractions,
        calibration=inputs.calibration,
        receive_field=None if inputs.receive_field is None else inputs.receive_field.field,
        qc_folder=out_dir / "qc",
    ):
        files[f"qc_{picture.stem}"] = str(picture.relative_to(out_dir))
    record = qc_record(inputs.calibration, analysis.chain)
    files["qc_record"] = write_qc_record(record, out_dir)
    files["qc_report"] = f"qc/{REPORT_FILE}"
    lesion_masks = analysis.lesion_masks
    measurements = Measurements(
        session=_session_reference(
            analysis.series,
            analysis.loaded,
            None if lesion_masks is None else lesion_masks.series_instance_uid,
        ),
        pipeline_version=__version__,
        segmentation=analysis.maps.source,
        pvc_method=settings.pvc_method,
        psf_fwhm_mm=psf_fwhm_mm,
        csf_tsc_mM=settings.csf_tsc_mM,
        tissues=tissues,
        volumes=analysis.volumes,
        quality=quality,
        files=files,
    )
    write_provenance(
        analysis.series,
        settings,
        out_dir / files["provenance"],
        step_seconds=timer.seconds,
        segmentation=analysis.maps.external,
    )
    write_qc_report(measurements, record, out_dir / "qc")
    write_measurements(measurements, out_dir)  # last: its presence says the result is complete
    return measurements


def fov_coverage(model: dict[str, Volume], in_sodium: dict[str, Volume]) -> float:
    def ml(volume: Volume) -> float:
        return float(np.sum(volume.data, dtype=np.float64)) * float(np.prod(volume.voxel_size_mm)) / 1000.0

    t1_ml = sum(ml(v) for v in model.values())
    return sum(ml(v) for v in in_sodium.values()) / t1_ml if t1_ml > 0 else 0.0
