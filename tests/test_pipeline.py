"""The whole processing on a simulated session: the node's runner (builtin segmentation) and the
pipeline with an external segmentation (the simulator's true maps), plus bad inputs that must stop
the job before anything that looks like a result is written."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from quality_assertions import assert_checks_pass_but_csf

from node.jobs import JOB_FILE, JobInstance, JobSeries, JobSession, read_job_quality
from node.processing_runner import PROCESSING_LOG, RESULTS_FOLDER, ProcessingRunner
from processing.dicom_series import load_series
from processing.lesion_masks import read_lesion_seg
from processing.measurements import MEASUREMENTS_FILE, Measurements, PvcMethod, Tissue, read_measurements
from processing.partial_volume import gtm_concentrations
from processing.pipeline import STEPS, process_session
from processing.psf_resampling import resample_masks_to_sodium
from processing.segmentation.builtin import segment_builtin
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings, SegmentationSource
from processing.transforms import RigidTransform
from processing.volume import Scaling
from simulator.lesion_seg import write_lesion_seg
from simulator.session import SimulatedSession
from sodium_node.config_models import Role
from sodium_node.errors import CalibrationError, SegmentationError

ROLE_KEYS = {
    Role.SODIUM: "sodium",
    Role.BODY_COIL_PDT2: "pd_t2_body",
    Role.HEAD_COIL_PDT2: "pd_t2_head",
    Role.T1_3D: "t1_3d",
    Role.LESION_SEG: "lesion_seg",
}
EXTERNAL_GTM_TOLERANCE_MM = 2.5
"""True segmentation, registered chain, noisy image with the default +-10 % receive field (not
corrected): the field alone moves tissue means by up to ~2 mM (docs/processing.md), calibration
noise ~1 mM at 40 mM; measured errors on this session are printed."""

BUILTIN_TOLERANCE_MM = {Tissue.CORTICAL_GM: 3.0, Tissue.DEEP_GM: 2.0, Tissue.NAWM: 2.5}
"""Builtin segmentation, whole pipeline, seed 11 (an atrophic RRMS subject of the independent anatomy, the
study acquisition, +-10 % receive field, left uncorrected as the default now is): measured CGM -2.04,
DGM +0.85, NAWM -1.12 mM (with the field estimated: -1.59, -0.37, -0.85; before the EM's confident CSF
overrode the non-atrophic atlas in the unmixing: -2.6, +4.9, +3.1). A regression guard with ~1.5 mM of
room for the run-to-run spread of ITK's threaded registration and the calibration noise, not the goal:
bench/accuracy.py gives the MAE over many subjects."""


def series_of(session: SimulatedSession, **extra: object) -> SessionSeries:
    files = session.series_files
    return SessionSeries(
        sodium=tuple(files["sodium"]),
        body_coil_pdt2=tuple(files["pd_t2_body"]),
        head_coil_pdt2=tuple(files["pd_t2_head"]),
        t1_3d=tuple(files["t1_3d"]),
        lesion_seg=tuple(files.get("lesion_seg", ())),
        **extra,  # type: ignore[arg-type]
    )


def external_maps_from_truth(session: SimulatedSession, folder: Path) -> Path:
    truth = session.folder / "ground_truth/t1_space"

    def load(*names: str) -> tuple[np.ndarray, np.ndarray]:
        images = [nib.nifti1.load(truth / f"prob_{name}.nii.gz") for name in names]
        return np.sum([np.asarray(i.get_fdata(), np.float32) for i in images], axis=0), images[0].affine

    folder.mkdir(parents=True)
    for name, parts in {
        "gm": ("cgm", "dgm"),
        "dgm": ("dgm",),
        "wm": ("nawm", "lesion_t1_iso", "lesion_t1_hypo"),
        "csf": ("csf",),
    }.items():
        data, affine = load(*parts)
        nib.save(nib.Nifti1Image(np.clip(data, 0, 1).astype(np.float32), affine), folder / f"{name}.nii.gz")
    return folder


def truth_mM(session: SimulatedSession) -> dict[Tissue, float]:
    tissues = session.ground_truth["tissues"]
    truth = {
        t: float(tissues[t.value]["tsc_true_mM"]) for t in (Tissue.CORTICAL_GM, Tissue.DEEP_GM, Tissue.NAWM)
    }
    truth[Tissue.CSF] = 140.0
    truth[Tissue.LESION] = float(session.ground_truth["lesions"]["tsc_all_t2_lesions_mM"])
    return truth


def assert_qc_record_and_report(results: Path, measurements: Measurements) -> None:
    """The machine-readable QC record and the HTML report (issue 13 item 2) hold what a physicist trends."""
    record = json.loads((results / measurements.files["qc_record"]).read_text())
    calibration = record["calibration"]
    assert [vial["concentration_mM"] for vial in calibration["vials"]] == [40.0, 80.0]
    assert calibration["slope_signal_per_mM"] > 0
    assert calibration["fitted_psf_fwhm_mm"] == pytest.approx(measurements.psf_fwhm_mm)
    steps = record["registration"]
    assert [step["name"] for step in steps] == ["sodium_to_body_pd", "head_pd_to_body_pd", "head_pd_to_t1"]
    for step in steps:
        assert len(step["rotation_xyz_deg"]) == 3 and len(step["translation_lps_mm"]) == 3
        assert 0 <= step["rotation_total_deg"] < 30, (
            "the simulator turns heads by at most 10 degrees per axis"
        )
    report = (results / measurements.files["qc_report"]).read_text()
    parser = HTMLParser()
    parser.feed(report)
    for check in measurements.quality:
        assert f"<td>{check.step}</td>" in report
        if check.picture:
            name = Path(check.picture).name
            assert f'src="{name}"' in report and (results / "qc" / name).is_file()
    first_verdicts = re.findall(r'<tr class="(fail|warn|pass)">', report)
    order = {"fail": 0, "warn": 1, "pass": 2}
    assert first_verdicts == sorted(first_verdicts, key=order.__getitem__), "failures first"
    assert "rotation" in report and "translation" in report
    for picture in ("segmentation_t1.png", "masks_sodium.png", "calibration_plot.png"):
        assert (results / "qc" / picture).is_file() and f'src="{picture}"' in report, picture


def test_runner_processes_a_job_folder(tmp_path: Path, classic_session: SimulatedSession) -> None:
    """A job-like folder (role/series/instance hard links, as the node builds them), builtin
    segmentation, default settings: the results folder holds a complete, readable result."""
    job_folder = tmp_path / "job"
    series: dict[Role, JobSeries] = {}
    for role, key in ROLE_KEYS.items():
        instances = []
        for path in classic_session.series_files[key]:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            target = (
                job_folder / role.value / str(dataset.SeriesInstanceUID) / f"{dataset.SOPInstanceUID}.dcm"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            instances.append(JobInstance(str(dataset.SOPInstanceUID), "", target))
        series[role] = JobSeries(role, str(dataset.SeriesInstanceUID), "", None, "", True, tuple(instances))
    session = JobSession("job-1", "session-1", "P1", "", False, "", series)
    (job_folder / JOB_FILE).write_text(json.dumps({"job_id": "job-1", "state": "running"}))
    ProcessingRunner(ProcessingSettings()).run(job_folder, session)

    results = job_folder / RESULTS_FOLDER
    measurements = read_measurements(results)
    assert measurements.segmentation == "builtin" and measurements.pvc_method is PvcMethod.GTM
    assert measurements.psf_fwhm_mm == pytest.approx(
        classic_session.ground_truth["parameters"]["psf_fwhm_mm"], rel=0.08
    ), "the PSF the vials show (psf_source = vials) is the simulated one"
    assert {t.tissue for t in measurements.tissues} == set(Tissue)
    for role_file in measurements.files.values():
        assert (results / role_file).is_file(), role_file
    assert_checks_pass_but_csf(measurements)
    quality = read_job_quality(job_folder)
    assert quality is not None and quality.verdict is measurements.qc_verdict
    assert quality.failed_checks == () and quality.objects_queued is None
    assert_qc_record_and_report(results, measurements)
    job_log = (job_folder / PROCESSING_LOG).read_text()
    assert all(f"step {step}:" in job_log for step in STEPS), "the child's own log, one line per step"
    assert measurements.volumes.t2_lesion_ml > 0 and measurements.volumes.t1_lesion_ml is not None
    provenance = json.loads((results / "provenance.json").read_text())
    assert len(provenance["inputs"]["sodium"]) == len(classic_session.series_files["sodium"])
    assert all(len(item["sha256"]) == 64 for item in provenance["inputs"]["t1_3d"])
    truth = truth_mM(classic_session)
    for tissue in measurements.tissues:
        print(f"builtin {tissue.tissue.value}: {tissue.mean_mM - truth[tissue.tissue]:+.2f} mM vs truth")
    by_tissue = {m.tissue: m.mean_mM - truth[m.tissue] for m in measurements.tissues}
    for tissue, tolerance in BUILTIN_TOLERANCE_MM.items():
        assert abs(by_tissue[tissue]) <= tolerance, (tissue, by_tissue[tissue])


def test_pipeline_with_external_true_segmentation(tmp_path: Path, classic_session: SimulatedSession) -> None:
    maps = external_maps_from_truth(classic_session, tmp_path / "maps")
    settings = ProcessingSettings(segmentation=SegmentationSource.EXTERNAL, pvc_method=PvcMethod.GTM)
    measurements = process_session(
        series_of(classic_session, segmentation_folder=maps), tmp_path / "out", settings
    )
    assert measurements.segmentation == "external:maps"
    truth = truth_mM(classic_session)
    volumes = classic_session.ground_truth["volumes"]
    assert measurements.volumes.tiv_ml == pytest.approx(volumes["tiv_ml"], rel=0.01)
    assert measurements.volumes.bpf == pytest.approx(volumes["bpf"], abs=0.01)
    for tissue in measurements.tissues:
        print(f"external truth {tissue.tissue.value}: {tissue.mean_mM - truth[tissue.tissue]:+.2f} mM")
    by_tissue = {m.tissue: m for m in measurements.tissues}
    for main in (Tissue.CORTICAL_GM, Tissue.DEEP_GM, Tissue.NAWM):
        assert by_tissue[main].mean_mM == pytest.approx(truth[main], abs=EXTERNAL_GTM_TOLERANCE_MM)


def test_sodium_without_signal_stops_before_any_result(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    silent = []
    for path in classic_session.series_files["sodium"]:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
        dataset.PixelData = np.zeros_like(pixels).tobytes()
        target = tmp_path / "silent" / path.name
        target.parent.mkdir(exist_ok=True)
        dataset.save_as(target)
        silent.append(target)
    out = tmp_path / "out"
    out.mkdir()
    (out / MEASUREMENTS_FILE).write_text("{}")
    with pytest.raises(CalibrationError, match="no sodium signal"):
        process_session(
            SessionSeries(
                sodium=tuple(silent),
                body_coil_pdt2=tuple(classic_session.series_files["pd_t2_body"]),
                head_coil_pdt2=tuple(classic_session.series_files["pd_t2_head"]),
                t1_3d=tuple(classic_session.series_files["t1_3d"]),
            ),
            out,
            ProcessingSettings(),
        )
    assert not (out / MEASUREMENTS_FILE).exists(), "a stale result must not survive a failed run"
    assert not (out / "tsc_mM.nii.gz").exists()


def test_lesion_mask_in_another_frame_of_reference(tmp_path: Path, classic_session: SimulatedSession) -> None:
    t1 = load_series(classic_session.series_files["t1_3d"]).echo(1)
    dataset = pydicom.dcmread(classic_session.series_files["lesion_seg"][0])
    dataset.FrameOfReferenceUID = "1.2.3.4"
    moved = tmp_path / "seg.dcm"
    dataset.save_as(moved)
    with pytest.raises(SegmentationError, match=r"frame of reference 1\.2\.3\.4 is not the 3D T1's"):
        read_lesion_seg(moved, t1=t1)


def test_one_segment_lesion_seg_is_read(tmp_path: Path, classic_session: SimulatedSession) -> None:
    """A SEG with only T2 lesions (no T1-hypointense segment, as for most CIS patients): highdicom
    puts the Segment Identification in the shared functional groups, not per frame."""
    files = classic_session.series_files["t1_3d"]
    t1 = load_series(files).echo(1)
    datasets = [pydicom.dcmread(path) for path in files]
    datasets.sort(
        key=lambda d: float(
            np.dot(d.ImagePositionPatient, np.cross(*np.reshape(d.ImageOrientationPatient, (2, 3))))
        )
    )
    t2_mask = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), dtype=bool)
    t2_mask[80:83, 100:104, 110:115] = True
    path = write_lesion_seg(
        t1_datasets=datasets,
        t2_lesion_mask_kji=t2_mask,
        t1_hypointense_mask_kji=np.zeros_like(t2_mask),
        series_number=1301,
        created=dt.datetime(2026, 1, 2, 3, 4, 5),
        path=tmp_path / "seg.dcm",
    )
    assert "SegmentIdentificationSequence" in pydicom.dcmread(path).SharedFunctionalGroupsSequence[0]
    masks = read_lesion_seg(path, t1=t1)
    assert masks.t1_hypointense is None
    assert int(np.count_nonzero(masks.t2_hyperintense.data)) == int(t2_mask.sum())


def test_t1_that_is_not_a_brain(classic_session: SimulatedSession) -> None:
    t1 = load_series(classic_session.series_files["t1_3d"]).echo(1)
    noise = np.random.default_rng(0).random(t1.shape, dtype=np.float32)
    with pytest.raises(SegmentationError, match="3D T1 noise"):
        segment_builtin(
            t1.with_data(noise, scaling=Scaling.DERIVED, unit="a.u."), t2_lesions=None, t1_name="noise"
        )


def test_segmentation_outside_the_sodium_fov(classic_session: SimulatedSession) -> None:
    folder = classic_session.folder
    sodium = load_series(classic_session.series_files["sodium"]).echo(1)
    maps = {
        name: load_series(classic_session.series_files["t1_3d"])
        .echo(1)
        .with_data(
            np.asarray(nib.nifti1.load(folder / f"ground_truth/t1_space/prob_{name}.nii.gz").get_fdata()),
            scaling=Scaling.DERIVED,
            unit="fraction",
        )
        for name in ("cgm", "csf")
    }
    far_away = np.eye(4)
    far_away[:3, 3] = (400.0, 0.0, 0.0)
    masks = resample_masks_to_sodium(
        maps, sodium_grid=sodium, t1_to_sodium=RigidTransform(far_away, "t1", "sodium"), psf_fwhm_mm=4.8
    )
    with pytest.raises(SegmentationError, match="does not overlap the sodium field of view"):
        gtm_concentrations(sodium, masks)
