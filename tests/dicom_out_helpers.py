"""A results folder built from a simulated session's ground truth, for the dicom_out tests.

The TSC map is the ground truth's PSF-blurred TSC in sodium space and the masks are the true tissue
fractions there, so the tests need not wait for the processing pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from node_helpers import free_port, write_node_config
from PIL import Image, ImageDraw
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from dicom_out.export import ExportedObject, export_results
from processing.measurements import (
    BrainVolumes,
    Measurements,
    PvcMethod,
    QualityCheck,
    SessionReference,
    Tissue,
    TissueMeasurement,
    Verdict,
    read_measurements,
    write_measurements,
)
from simulator.session import SimulatedSession
from sodium_node.config_models import ObjectKind

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


def rescaled_results(folder: Path, target: Path, *, gain: float) -> Path:
    """A copy of the results folder ``folder`` whose TSC is ``gain`` times higher, as a reprocessing
    with another calibration would give: the map and every tissue's mean, SD and median change."""
    shutil.copytree(folder, target)
    tsc_image = nib.load(target / "tsc_mM.nii.gz")
    tsc = np.asarray(tsc_image.get_fdata(dtype=np.float32)) * gain  # type: ignore[attr-defined]
    _save(tsc, np.asarray(tsc_image.affine), target / "tsc_mM.nii.gz")  # type: ignore[attr-defined]
    measurements = read_measurements(target)
    tissues = tuple(
        dataclasses.replace(m, mean_mM=m.mean_mM * gain, sd_mM=m.sd_mM * gain, median_mM=m.median_mM * gain)
        for m in measurements.tissues
    )
    write_measurements(dataclasses.replace(measurements, tissues=tissues), target)
    return target


@dataclass(frozen=True)
class Export:
    """An export folder of a simulated session and what `export_results` listed."""

    folder: Path
    objects: list[ExportedObject]

    def uids(self, *kinds: ObjectKind) -> set[str]:
        return {item.sop_instance_uid for item in self.objects if not kinds or item.kind in kinds}

    def sop_classes(self, *without: ObjectKind) -> set[str]:
        return {item.sop_class_uid for item in self.objects if item.kind not in without}


def export_session(session: SimulatedSession, folder: Path) -> Export:
    """Every object kind of ``session``'s ground truth, exported under ``folder/export`` (< 1 s)."""
    results_dir = build_results_folder(session, folder / "results")
    objects = export_results(
        results_dir,
        session.series_files["sodium"],
        folder / "export",
        versions_dir=folder / "result_versions",
    )
    assert {item.kind for item in objects} == set(ObjectKind)
    return Export(folder / "export", objects)


@dataclass(frozen=True)
class DestinationSpec:
    """One [[destinations]] table of a test config: tiny back-offs so that retries take < 1 s."""

    name: str
    port: int
    accepts: tuple[ObjectKind, ...] = tuple(ObjectKind)
    ae_title: str = "TEST_PACS"
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 1.0
    max_age_hours: float = 1.0
    storage_commitment: bool = False
    commitment_timeout_s: float = 600.0

    def toml(self) -> str:
        return (
            "[[destinations]]\n"
            f'name = "{self.name}"\nae_title = "{self.ae_title}"\nhost = "127.0.0.1"\nport = {self.port}\n'
            f"accepts = {json.dumps([kind.value for kind in self.accepts])}\n"
            f"storage_commitment = {str(self.storage_commitment).lower()}\n"
            f"commitment_timeout_s = {self.commitment_timeout_s!r}\n"
            "[destinations.tls]\nenabled = false\n"
            f"[destinations.retry]\ninitial_backoff_s = {self.initial_backoff_s!r}\n"
            f"max_backoff_s = {self.max_backoff_s!r}\nmax_age_hours = {self.max_age_hours!r}\n\n"
        )


def write_delivery_config(
    folder: Path, destinations: Iterable[DestinationSpec], *, node_port: int | None = None, **values: str
) -> Path:
    """The shipped config with the node's state under ``folder`` and these [[destinations]].

    ``node_port`` is the node's own listener (where commitment reports go; default: a free port);
    ``values`` replaces further ``key = value`` lines as in `write_node_config`.
    """
    path = write_node_config(folder, port=free_port() if node_port is None else node_port, **values)
    text = path.read_text()
    start, end = text.index("\n[[destinations]]\n") + 1, text.index("\n[logging]\n") + 1
    path.write_text(text[:start] + "".join(spec.toml() for spec in destinations) + text[end:])
    return path


@dataclass
class ReceivedObjects:
    """What a test SCP stored: every SOP Instance UID in arrival order, with its SOP Class UID."""

    arrivals: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(uid for uid, _ in self.arrivals)


@contextmanager
def store_scp(
    port: int, sop_classes: Iterable[str], *, ae_title: str = "TEST_PACS"
) -> Iterator[ReceivedObjects]:
    """An in-process Storage SCP on 127.0.0.1:``port`` supporting only ``sop_classes``; always stopped."""
    received = ReceivedObjects()

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        with received.lock:
            received.arrivals.append((str(dataset.SOPInstanceUID), str(dataset.SOPClassUID)))
        return 0x0000

    ae = AE(ae_title=ae_title)
    for sop_class in sorted(set(sop_classes)):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        yield received
    finally:
        server.shutdown()
