"""dicom_out writers: each object is written, read back and validated with dciodvfy (dicom3tools).

The results folder comes from the simulated sessions' ground truth (tests/dicom_out_helpers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_out_helpers import build_results_folder
from peers import canonical, dciodvfy_errors, load_nifti, run_dcm2niix
from pydicom.sr.codedict import codes

from dicom_out.export import ExportedObject, export_results, read_export
from dicom_out.mr_fallback import quantisation_for
from dicom_out.results import Results, load_results
from processing.measurements import Tissue
from simulator.session import SimulatedSession
from sodium_node.config_models import ObjectKind
from sodium_node.errors import ExportError


@dataclass(frozen=True)
class Exported:
    session: SimulatedSession
    results: Results
    out_dir: Path
    objects: list[ExportedObject]

    def paths(self, kind: ObjectKind) -> list[Path]:
        return [self.out_dir / item.path for item in self.objects if item.kind is kind]


def _export(session: SimulatedSession, folder: Path) -> Exported:
    results_dir = build_results_folder(session, folder / "results")
    objects = export_results(results_dir, session.series_files["sodium"], folder / "export")
    return Exported(
        session, load_results(results_dir, session.series_files["sodium"]), folder / "export", objects
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
    mapping = dataset.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
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
    (pm,) = classic_export.objects[:1]
    (seg_path,) = classic_export.paths(ObjectKind.SEG)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    groups = content.get_volumetric_roi_measurement_groups()
    measurements = classic_export.results.measurements
    assert len(groups) == len(measurements.tissues)
    for group, expected in zip(groups, measurements.tissues, strict=True):
        assert group.tracking_identifier == f"TSC {expected.tissue.value}"
        segment = group.referenced_segment
        assert segment is not None
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        segment_numbers = segment.referenced_segment_numbers
        assert segment_numbers is not None
        (number,) = segment_numbers
        assert seg.SegmentSequence[number - 1].SegmentLabel.startswith(
            ("Cortical", "Deep", "Normal", "MS", "CSF")
        )
        by_derivation = {
            m.derivation: m.value
            for m in group.get_measurements(name=codes.DCM.Concentration)
            if m.derivation is not None
        }
        assert by_derivation[codes.SCT.Mean] == pytest.approx(expected.mean_mM, rel=1e-12)
        assert by_derivation[codes.SCT.StandardDeviation] == pytest.approx(expected.sd_mM, rel=1e-12)
        assert by_derivation[codes.SCT.Median] == pytest.approx(expected.median_mM, rel=1e-12)
        (volume,) = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(expected.volume_ml, rel=1e-12)
        (source,) = group.get_measurements(name=codes.DCM.Concentration)[0].referenced_images
        assert source.referenced_sop_instance_uid == pm.sop_instance_uid
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {pm.sop_instance_uid, str(seg.SOPInstanceUID)}


def test_summary_page(classic_export: Exported) -> None:
    (path,) = classic_export.paths(ObjectKind.SUMMARY)
    assert dciodvfy_errors(path) == []
    dataset = pydicom.dcmread(path)
    assert dataset.PhotometricInterpretation == "RGB"
    assert dataset.pixel_array.shape == (1754, 1240, 3)
    assert dataset.StudyInstanceUID == classic_export.results.sodium.first.StudyInstanceUID
    assert dataset.pixel_array.std() > 10  # something was drawn


def test_export_twice_gives_the_same_uids(classic_export: Exported, tmp_path: Path) -> None:
    again = export_results(
        classic_export.results.folder, classic_export.session.series_files["sodium"], tmp_path / "again"
    )
    assert [(o.kind, o.sop_instance_uid) for o in again] == [
        (o.kind, o.sop_instance_uid) for o in classic_export.objects
    ]
    assert read_export(tmp_path / "again") == again
    series = {
        pydicom.dcmread(tmp_path / "again" / o.path, stop_before_pixels=True).SeriesInstanceUID for o in again
    }
    assert len(series) == len(ObjectKind)


def test_results_of_another_sodium_series_are_refused(
    classic_export: Exported, enhanced_session: SimulatedSession
) -> None:
    with pytest.raises(ExportError, match="sodium series"):
        load_results(classic_export.results.folder, enhanced_session.series_files["sodium"])


def test_export_command(classic_export: Exported, tmp_path: Path) -> None:
    from sodium_node.cli import main

    sodium_dir = classic_export.session.series_files["sodium"][0].parent
    assert main(["export", str(classic_export.results.folder), str(sodium_dir), str(tmp_path / "out")]) == 0
    assert [o.sop_instance_uid for o in read_export(tmp_path / "out")] == [
        o.sop_instance_uid for o in classic_export.objects
    ]
