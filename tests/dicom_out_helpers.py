"""A results folder built from a simulated session's ground truth, for the dicom_out tests.

The TSC map is the ground truth's PSF-blurred TSC in sodium space and the masks are the true tissue
fractions there, so the tests need not wait for the processing pipeline.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw

from processing.measurements import (
    BrainVolumes,
    Measurements,
    PvcMethod,
    QualityCheck,
    SessionReference,
    Tissue,
    TissueMeasurement,
    Verdict,
    write_measurements,
)
from simulator.session import SimulatedSession

PIPELINE_VERSION = "0.1.0-test"
MASK_THRESHOLD = 0.5


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


def _qc_picture(path: Path, title: str, colour: tuple[int, int, int]) -> None:
    image = Image.new("RGB", (320, 240), (20, 20, 20))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 30, 260, 210), outline=colour, width=6)
    draw.text((10, 10), title, fill=(255, 255, 255))
    image.save(path)


def build_results_folder(session: SimulatedSession, folder: Path) -> Path:
    """Write measurements.json, tsc_mM.nii.gz, mask_<tissue>.nii.gz and qc/*.png from ground truth."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = session.ground_truth
    sodium_space = session.ground_truth_path.parent / "sodium_space"
    tsc_image = nib.load(sodium_space / "tsc_psf_mM.nii.gz")
    affine = np.asarray(tsc_image.affine)  # type: ignore[attr-defined]
    tsc = np.asarray(tsc_image.get_fdata(dtype=np.float32))  # type: ignore[attr-defined]
    _save(tsc, affine, folder / "tsc_mM.nii.gz")

    def probability(name: str) -> np.ndarray:
        return np.asarray(nib.load(sodium_space / f"prob_{name}.nii.gz").get_fdata(dtype=np.float32))  # type: ignore[attr-defined]

    masks = {
        Tissue.CORTICAL_GM: probability("cgm"),
        Tissue.DEEP_GM: probability("dgm"),
        Tissue.NAWM: probability("nawm"),
        Tissue.LESION: probability("lesion_t1_iso") + probability("lesion_t1_hypo"),
        Tissue.CSF: probability("csf"),
    }
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    measured: list[TissueMeasurement] = []
    files = {"tsc_map": "tsc_mM.nii.gz"}
    for tissue, mask in masks.items():
        if not (mask > MASK_THRESHOLD).any():
            continue
        _save(np.clip(mask, 0, 1), affine, folder / f"mask_{tissue.value}.nii.gz")
        files[f"mask_{tissue.value}"] = f"mask_{tissue.value}.nii.gz"
        values = tsc[mask > MASK_THRESHOLD]
        measured.append(
            TissueMeasurement(
                tissue=tissue,
                mean_mM=float(values.mean()),
                sd_mM=float(values.std()),
                median_mM=float(np.median(values)),
                voxel_count=int(values.size),
                volume_ml=float(mask.sum() * voxel_ml),
                method=PvcMethod.NONE,
            )
        )
    qc = folder / "qc"
    qc.mkdir(exist_ok=True)
    _qc_picture(qc / "calibration.png", "calibration", (255, 200, 0))
    _qc_picture(qc / "registration.png", "registration", (0, 200, 255))
    tissues_ml = {name: item["volume_t1_space_ml"] for name, item in truth["tissues"].items()}
    series = truth["series"]
    measurements = Measurements(
        session=SessionReference(
            patient_id=truth["patient"]["id"],
            issuer_of_patient_id=truth["patient"]["issuer"],
            sodium_study_instance_uid=series["sodium"]["study_instance_uid"],
            sodium_series_instance_uid=series["sodium"]["series_instance_uid"],
            sodium_frame_of_reference_uid=series["sodium"]["frame_of_reference_uid"],
            t1_series_instance_uid=series["t1_3d"]["series_instance_uid"],
            lesion_seg_series_instance_uid=None,
        ),
        pipeline_version=PIPELINE_VERSION,
        segmentation="builtin",
        pvc_method=PvcMethod.NONE,
        psf_fwhm_mm=float(truth["parameters"]["psf_fwhm_mm"]),
        csf_tsc_mM=140.0,
        tissues=tuple(measured),
        volumes=BrainVolumes(
            tiv_ml=float(truth["volumes"]["tiv_ml"]),
            grey_matter_ml=tissues_ml["cgm"] + tissues_ml["dgm"],
            white_matter_ml=float(truth["volumes"]["white_ml"]),
            cortical_gm_ml=tissues_ml["cgm"],
            deep_gm_ml=tissues_ml["dgm"],
            t2_lesion_ml=float(truth["lesions"]["t2_volume_ml"]),
            t1_lesion_ml=float(truth["lesions"]["t1_hypointense_volume_ml"]),
        ),
        quality=(
            QualityCheck("calibration", Verdict.PASS, "phantom_fit_r2", 0.999, 0.98, "qc/calibration.png"),
            QualityCheck(
                "registration", Verdict.PASS, "mutual_information", 0.41, 0.05, "qc/registration.png"
            ),
        ),
        files=files,
    )
    write_measurements(measurements, folder)
    return folder
