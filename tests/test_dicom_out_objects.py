"""dicom_out writers: each object is written, read back and validated with dciodvfy (dicom3tools).

The results folder comes from the simulated sessions' ground truth (tests/dicom_out_helpers.py).
Every object carries the result version and "research use only" in its Series Description and the
version's creation time as Series Date/Time (the versions themselves: test_dicom_out_versions.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_out_helpers import build_results_folder
from peers import canonical, dciodvfy_errors, load_nifti, run_dcm2niix
from pydicom.dataelem import DataElement
from pydicom.sr.codedict import codes

from dicom_out.export import ExportedObject, export_results, read_export
from dicom_out.identity import RESEARCH_USE, tissue_tracking_uid
from dicom_out.mr_fallback import quantisation_for
from dicom_out.results import Results, load_results
from dicom_out.segmentation import TISSUE_CODING
from dicom_out.structured_report import DEGREE, MILLILITRE, MILLIMETRE, NATS, NO_UNITS, metric_unit
from processing.measurements import QualityCheck, Tissue, Verdict
from simulator.session import SimulatedSession
from sodium_node.config_models import ObjectKind
from sodium_node.errors import ExportError


@dataclass(frozen=True)
class Exported:
    session: SimulatedSession
    results: Results
    out_dir: Path
    objects: list[ExportedObject]
    versions_dir: Path

    def paths(self, kind: ObjectKind) -> list[Path]:
        return [self.out_dir / item.path for item in self.objects if item.kind is kind]


EXPORTED_AT = dt.datetime(2024, 5, 6, 7, 8, 9)
"""The creation time of the exported result version: every object's Series/Content Date/Time."""


def _export(session: SimulatedSession, folder: Path) -> Exported:
    results_dir = build_results_folder(session, folder / "results")
    objects = export_results(
        results_dir,
        session.series_files["sodium"],
        folder / "export",
        versions_dir=folder / "result_versions",
        now=EXPORTED_AT,
    )
    return Exported(
        session,
        load_results(results_dir, session.series_files["sodium"]),
        folder / "export",
        objects,
        folder / "result_versions",
    )


@pytest.fixture(scope="module")
def classic_export(classic_session: SimulatedSession, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return _export(classic_session, tmp_path_factory.mktemp("dicom_out_classic"))


@pytest.fixture(scope="module")
def enhanced_export(enhanced_session: SimulatedSession, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return _export(enhanced_session, tmp_path_factory.mktemp("dicom_out_enhanced"))


@pytest.fixture(params=["classic", "enhanced"])
def exported(request: pytest.FixtureRequest) -> Exported:
    return request.getfixturevalue(f"{request.param}_export")  # type: ignore[no-any-return]


def _assert_version_dates_and_research_use(dataset: pydicom.Dataset) -> None:
    assert str(dataset.SeriesDescription).endswith(" v1 (research use only)"), dataset.SeriesDescription
    assert len(str(dataset.SeriesDescription)) <= 64
    for prefix in ("Series", "Content", "InstanceCreation"):
        assert dataset[f"{prefix}Date"].value == "20240506", prefix
        assert dataset[f"{prefix}Time"].value == "070809", prefix


def _assert_same_grid_as_sodium(exported: Exported, paths: list[Path], work: Path) -> np.ndarray:
    """dcm2niix of our object and of the sodium series: same RAS affine within 0.01 mm, same shape."""
    ours = work / "ours"
    ours.mkdir()
    for path in paths:
        (ours / path.name).symlink_to(path)
    run_dcm2niix(ours, work / "ours_nii")
    sodium = work / "sodium"
    sodium.mkdir()
    for path in exported.session.series_files["sodium"]:
        (sodium / path.name).symlink_to(path)
    run_dcm2niix(sodium, work / "sodium_nii")
    (ours_nii,) = sorted((work / "ours_nii").glob("*.nii*"))
    (sodium_nii,) = sorted((work / "sodium_nii").glob("*.nii*"))
    ours_image, sodium_image = canonical(load_nifti(ours_nii)), canonical(load_nifti(sodium_nii))
    assert ours_image.shape == sodium_image.shape
    np.testing.assert_allclose(ours_image.affine, sodium_image.affine, atol=0.01)
    return np.asarray(ours_image.get_fdata())


def test_parametric_map(exported: Exported, tmp_path: Path) -> None:
    (path,) = exported.paths(ObjectKind.PARAMETRIC_MAP)
    assert dciodvfy_errors(path) == []
    dataset = pydicom.dcmread(path)
    parametric_map = hd.pm.ParametricMap.from_dataset(dataset)
    sodium = exported.results.sodium
    assert dataset.StudyInstanceUID == sodium.first.StudyInstanceUID
    assert dataset.PatientID == sodium.first.PatientID
    assert dataset.FrameOfReferenceUID == sodium.first.FrameOfReferenceUID
    assert dataset.SeriesInstanceUID != sodium.series_instance_uid
    _assert_version_dates_and_research_use(dataset)
    assert dataset.ContentDescription == "Total sodium concentration (mM), research use only"
    shared = dataset.SharedFunctionalGroupsSequence[0]
    window = shared.FrameVOILUTSequence[0]
    # one window, one explanation (it was stored as 12 one-letter values)
    assert window["WindowCenterWidthExplanation"].VM == 1
    assert window.WindowCenterWidthExplanation == "TSC 0-140 mM"
    assert (float(window.WindowCenter), float(window.WindowWidth)) == (70.0, 140.0)
    mapping = shared.RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "mmol/L"
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    # highdicom may store the frames in another order: match them to the sodium frames by position
    positions = np.array(
        [
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            for frame in dataset.PerFrameFunctionalGroupsSequence
        ]
    )
    distances = np.linalg.norm(positions[:, None, :] - sodium.frame_positions_lps[None, :, :], axis=-1)
    assert np.all(distances.min(axis=1) < 1e-4)
    source_frames = distances.argmin(axis=1)
    assert sorted(source_frames.tolist()) == list(range(sodium.frame_count))
    # float32 written as is: exact
    np.testing.assert_array_equal(parametric_map.pixel_array, exported.results.tsc_mM[source_frames])
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in dataset.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in sodium.datasets}
    values = _assert_same_grid_as_sodium(exported, [path], tmp_path)
    # the TSC in world space is the ground-truth map (float32 precision)
    truth = canonical(
        load_nifti(exported.session.ground_truth_path.parent / "sodium_space" / "tsc_psf_mM.nii.gz")
    )
    np.testing.assert_allclose(values, truth.get_fdata(), atol=1e-4)


def test_mr_fallback(exported: Exported, tmp_path: Path) -> None:
    paths = exported.paths(ObjectKind.MR_FALLBACK)
    assert len(paths) == exported.results.sodium.frame_count
    assert dciodvfy_errors(paths[0]) == [] and dciodvfy_errors(paths[-1]) == []
    step = quantisation_for(exported.results.tsc_mM).slope_mM
    for frame in (0, len(paths) // 2):
        dataset = pydicom.dcmread(paths[frame])
        _assert_version_dates_and_research_use(dataset)
        assert dataset.ImageComments == RESEARCH_USE
        # the UCUM unit, not "MM" (which reads as millimetres)
        assert dataset.RescaleType == "mmol/L"
        assert dataset.WindowCenterWidthExplanation == "TSC 0-140 mM"
        assert list(dataset.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert dataset.BitsAllocated == 16 and dataset.PixelRepresentation == 0
        tsc = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
        # quantisation: rounding to the nearest step
        np.testing.assert_allclose(tsc, exported.results.tsc_mM[frame], atol=step / 2 + 1e-6)
        np.testing.assert_allclose(
            [float(v) for v in dataset.ImagePositionPatient],
            exported.results.sodium.frame_positions_lps[frame],
            atol=1e-4,
        )
    values = _assert_same_grid_as_sodium(exported, paths, tmp_path)
    truth = canonical(
        load_nifti(exported.session.ground_truth_path.parent / "sodium_space" / "tsc_psf_mM.nii.gz")
    )
    np.testing.assert_allclose(values, truth.get_fdata(), atol=step / 2 + 1e-4)


def test_segmentation(classic_export: Exported) -> None:
    (path,) = classic_export.paths(ObjectKind.SEG)
    assert dciodvfy_errors(path) == []
    segmentation = hd.seg.segread(path)
    labels = [item.SegmentLabel for item in segmentation.SegmentSequence]
    assert labels == [
        "Cortical grey matter",
        "Deep grey matter",
        "Normal-appearing white matter",
        "MS lesions",
        "CSF",
    ]
    assert segmentation.StudyInstanceUID == classic_export.results.sodium.first.StudyInstanceUID
    _assert_version_dates_and_research_use(segmentation)
    assert "research use only" in segmentation.ContentDescription
    for item, tissue in zip(segmentation.SegmentSequence, Tissue, strict=True):
        assert item.TrackingUID == tissue_tracking_uid(classic_export.results, tissue)
        assert "sodium space" in item.SegmentDescription
        # CIELab stored as 16-bit integers: back to RGB within 1 of the chosen colour
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        np.testing.assert_allclose(rgb, TISSUE_CODING[tissue].display_rgb, atol=1)
    volume = segmentation.get_volume(combine_segments=False, rescale_fractional=True)
    assert volume is not None
    # every segment's voxels, wherever highdicom puts them, hold the mask fractions (1/255 steps)
    for number, tissue in enumerate(Tissue, start=1):
        stored = segmentation.get_pixels_by_source_instance(
            [ds.SOPInstanceUID for ds in classic_export.results.sodium.datasets],
            segment_numbers=[number],
            rescale_fractional=True,
        )[..., 0]
        np.testing.assert_allclose(stored, classic_export.results.masks[tissue], atol=0.5 / 255 + 1e-6)


def test_structured_report_values_equal_measurements(classic_export: Exported) -> None:
    (path,) = classic_export.paths(ObjectKind.SR)
    assert dciodvfy_errors(path) == []
    report = hd.sr.srread(path)
    _assert_version_dates_and_research_use(report)
    assert "PredecessorDocumentsSequence" not in report, "version 1 replaces nothing"
    (pm,) = classic_export.objects[:1]
    (seg_path,) = classic_export.paths(ObjectKind.SEG)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    groups = content.get_volumetric_roi_measurement_groups()
    measurements = classic_export.results.measurements
    # CSF is a quality check (its TSC is known), not a tissue result
    tissues = [m for m in measurements.tissues if m.tissue is not Tissue.CSF]
    assert [m.tissue for m in measurements.tissues if m not in tissues] == [Tissue.CSF]
    assert len(groups) == len(tissues)
    for group, expected in zip(groups, tissues, strict=True):
        assert group.tracking_identifier == f"TSC {expected.tissue.value}"
        segment = group.referenced_segment
        assert segment is not None
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        segment_numbers = segment.referenced_segment_numbers
        assert segment_numbers is not None
        (number,) = segment_numbers
        segment_item = seg.SegmentSequence[number - 1]
        assert segment_item.SegmentLabel == TISSUE_CODING[expected.tissue].label
        # one Tracking UID per tissue, shared by the SEG segment and the SR group
        assert group.tracking_uid == segment_item.TrackingUID
        assert group.tracking_uid == tissue_tracking_uid(classic_export.results, expected.tissue)
        # the tissue is where it was measured (Finding Site), not a finding
        assert group.finding_type is None
        (site,) = group.finding_sites
        assert site.value == TISSUE_CODING[expected.tissue].property_type
        by_derivation = {
            m.derivation: m.value
            for m in group.get_measurements(name=codes.DCM.Concentration)
            if m.derivation is not None
        }
        assert by_derivation[codes.SCT.Mean] == pytest.approx(expected.mean_mM, rel=1e-12)
        assert by_derivation[codes.SCT.StandardDeviation] == pytest.approx(expected.sd_mM, rel=1e-12)
        assert by_derivation[codes.SCT.Median] == pytest.approx(expected.median_mM, rel=1e-12)
        assert {m.unit.value for m in group.get_measurements(name=codes.DCM.Concentration)} == {"mmol/L"}
        (volume,) = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(expected.volume_ml, rel=1e-12)
        assert volume.unit == MILLILITRE
        assert volume.method is not None and "sodium space" in volume.method.meaning
        (source,) = group.get_measurements(name=codes.DCM.Concentration)[0].referenced_images
        assert source.referenced_sop_instance_uid == pm.sop_instance_uid
    brain, quality = content.get_image_measurement_groups()
    assert brain.tracking_identifier == "Brain volumes (3D-T1 space)"
    units = {
        m.name.value: (m.unit.value, m.method.meaning if m.method else None) for m in brain.get_measurements()
    }
    assert units["tiv"] == ("mL", "Volume in 3D-T1 space (segmentation)")
    assert units["t2lv"][0] == "mL" and units["bpf"] == ("1", None)
    assert measurements.volumes.t1_lesion_ml is not None and units["t1lv"][0] == "mL"
    assert quality.tracking_identifier == "Quality control"
    values = {m.name.value: (m.value, m.unit.value) for m in quality.get_measurements()}
    csf = measurements.tissue(Tissue.CSF)
    assert csf is not None
    assert values["qc-csf-tsc"] == (pytest.approx(csf.mean_mM, rel=1e-12), "mmol/L")
    assert values["csf-tsc-assumed"] == (pytest.approx(140.0), "mmol/L")
    for check in measurements.quality:
        assert values[f"qc-{check.step}-{check.metric_name}"][0] == pytest.approx(check.metric_value)
    assert values["qc-registration-mutual_information"][1] == "1"  # no unit suffix in this name
    verdicts = {e.name.value: e.value.value for e in quality.get_qualitative_evaluations()}
    assert verdicts == {
        "qc-overall": "qc-pass",
        "qc-calibration": "qc-pass",
        "qc-registration": "qc-pass",
        "intended-use": "research-only",
    }
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {pm.sop_instance_uid, str(seg.SOPInstanceUID)}


def test_qc_metric_units_follow_the_metric_names() -> None:
    """A zero offset in mM is mmol/L (it was "1"); mm, deg, ml and nats likewise; ratios are 1."""
    assert metric_unit("zero_offset_mM").value == "mmol/L"
    assert metric_unit("fitted_csf_minus_expected_mM").value == "mmol/L"
    assert metric_unit("translation_mm") == MILLIMETRE
    assert metric_unit("rotation_deg") == DEGREE
    assert metric_unit("tissue_volume_ml") == MILLILITRE
    assert metric_unit("mutual_information_nats") == NATS
    assert metric_unit("coverage") == NO_UNITS
    assert metric_unit("tissue_gain_change") == NO_UNITS
    check = QualityCheck("calibration", Verdict.PASS, "zero_offset_mM", 3.0, 20.0)
    assert metric_unit(check.metric_name).value == "mmol/L"


def test_summary_page(classic_export: Exported) -> None:
    (path,) = classic_export.paths(ObjectKind.SUMMARY)
    assert dciodvfy_errors(path) == []
    dataset = pydicom.dcmread(path)
    assert dataset.PhotometricInterpretation == "RGB"
    assert dataset.pixel_array.shape == (1754, 1240, 3)
    assert dataset.StudyInstanceUID == classic_export.results.sodium.first.StudyInstanceUID
    assert dataset.pixel_array.std() > 10  # something was drawn
    assert dataset.BurnedInAnnotation == "YES", "the patient's name and ID are drawn on the page"
    assert dataset.ImageComments == RESEARCH_USE
    _assert_version_dates_and_research_use(dataset)
    assert (dataset.DateOfSecondaryCapture, dataset.TimeOfSecondaryCapture) == ("20240506", "070809")


def test_export_twice_gives_the_same_uids_and_bytes(classic_export: Exported, tmp_path: Path) -> None:
    """The same results and ledger, exported again later elsewhere: the same version, byte for byte."""
    again = export_results(
        classic_export.results.folder,
        classic_export.session.series_files["sodium"],
        tmp_path / "again",
        versions_dir=classic_export.versions_dir,
        now=EXPORTED_AT + dt.timedelta(days=3),
    )
    assert [(o.kind, o.sop_instance_uid) for o in again] == [
        (o.kind, o.sop_instance_uid) for o in classic_export.objects
    ]
    assert read_export(tmp_path / "again") == again
    for first, second in zip(classic_export.objects, again, strict=True):
        assert (tmp_path / "again" / second.path).read_bytes() == (
            classic_export.out_dir / first.path
        ).read_bytes(), f"{first.kind.value} {first.path} differs"
    series = {
        pydicom.dcmread(tmp_path / "again" / o.path, stop_before_pixels=True).SeriesInstanceUID for o in again
    }
    assert len(series) == len(ObjectKind)


def test_results_of_another_sodium_series_are_refused(
    classic_export: Exported, enhanced_session: SimulatedSession
) -> None:
    with pytest.raises(ExportError, match="sodium series"):
        load_results(classic_export.results.folder, enhanced_session.series_files["sodium"])


def test_export_command_numbers_versions_in_the_node_storage(
    classic_export: Exported, tmp_path: Path
) -> None:
    """`sodium-node export` keeps its ledger in ``storage.result_versions_dir``: a second export of the
    same results (into another folder) is the same version; a ledger of its own means new UIDs."""
    from node_helpers import free_port, write_node_config

    from sodium_node.cli import main

    config = write_node_config(tmp_path / "node", port=free_port())
    sodium_dir = classic_export.session.series_files["sodium"][0].parent
    results = str(classic_export.results.folder)
    for out in ("out", "out2"):
        assert main(["export", results, str(sodium_dir), str(tmp_path / out), "--config", str(config)]) == 0
    first, second = read_export(tmp_path / "out"), read_export(tmp_path / "out2")
    assert [o.sop_instance_uid for o in first] == [o.sop_instance_uid for o in second]
    ledgers = list((tmp_path / "node" / "state" / "result_versions").glob("*.json"))
    assert [path.name for path in ledgers] == [f"{classic_export.results.sodium.series_instance_uid}.json"]
    # another ledger (the test fixture's) created its v1 at another time: other UIDs, never the same
    # UIDs with other bytes
    assert not {o.sop_instance_uid for o in first} & {o.sop_instance_uid for o in classic_export.objects}


def _sodium_with_birth_date(session: SimulatedSession, folder: Path, value: str) -> list[Path]:
    """The session's sodium files with Patient Birth Date ``value`` stored as is (not validated)."""
    folder.mkdir()
    paths = []
    for source in session.series_files["sodium"]:
        dataset = pydicom.dcmread(source)
        dataset["PatientBirthDate"] = DataElement(
            "PatientBirthDate", "DA", value, validation_mode=pydicom.config.IGNORE
        )
        dataset.save_as(folder / source.name)
        paths.append(folder / source.name)
    return paths


@pytest.mark.parametrize(
    ("stored", "written"),
    [("1970-01-31", "19700131"), ("1970.1.31", "19700131"), ("31/01/1970", ""), ("no-date-qx", "")],
)
def test_non_conformant_birth_date_is_written_conformant_and_never_logged(
    classic_session: SimulatedSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    stored: str,
    written: str,
) -> None:
    """A birth date that is not a DA failed the export at the Parametric Map writer (highdicom raised
    with the value in the message, which reached the log and error.json). A year-first date is
    converted; anything else is written empty (Type 2); the value appears in no log line."""
    sodium_files = _sodium_with_birth_date(classic_session, tmp_path / "sodium", stored)
    results_dir = build_results_folder(classic_session, tmp_path / "results")
    caplog.set_level(logging.DEBUG)
    objects = export_results(
        results_dir, sodium_files, tmp_path / "export", versions_dir=tmp_path / "versions", now=EXPORTED_AT
    )
    assert {item.kind for item in objects} == set(ObjectKind)
    for item in objects:
        if item.kind is ObjectKind.MR_FALLBACK and not item.path.name.endswith("0001.dcm"):
            continue
        dataset = pydicom.dcmread(tmp_path / "export" / item.path, stop_before_pixels=True)
        assert dataset["PatientBirthDate"].value == written, item.kind
    (parametric_map,) = (tmp_path / "export" / o.path for o in objects if o.kind is ObjectKind.PARAMETRIC_MAP)
    assert dciodvfy_errors(parametric_map) == []
    assert "Patient Birth Date is not a DICOM date" in caplog.text
    for value in {stored, stored.replace("-", ""), written} - {""}:
        assert value not in caplog.text
