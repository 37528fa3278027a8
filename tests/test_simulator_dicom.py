"""Every file the virtual scanner writes is valid DICOM that real tools read with the right geometry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from peers import canonical, dciodvfy_errors, load_nifti, run_dcm2niix

from simulator.dicom_common import PHILIPS_PRIVATE_CREATOR
from simulator.session import SimulatedSession

AFFINE_TOLERANCE_MM = 0.01
"""The issue's requirement; positions are written with 6 decimals, so the real error is ~1e-5 mm."""
SCALING_RELATIVE_TOLERANCE = 1e-6
"""Rescale values are DS with 8 significant digits and the private slope is float32 (7 digits)."""


def all_files(session: SimulatedSession) -> list[Path]:
    return [path for paths in session.series_files.values() for path in paths]


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_every_file_passes_dciodvfy(kind: str, simulated_sessions: dict[str, SimulatedSession]) -> None:
    files = all_files(simulated_sessions[kind])
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = dict(zip(files, pool.map(dciodvfy_errors, files), strict=True))
    failures = {path: errors for path, errors in reports.items() if errors}
    assert not failures, "dciodvfy errors:\n" + "\n".join(f"{p}: {e}" for p, e in list(failures.items())[:5])


@pytest.fixture(scope="module")
def dcm2niix_output(
    simulated_sessions: dict[str, SimulatedSession], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    outputs = {}
    for kind, session in simulated_sessions.items():
        folder = tmp_path_factory.mktemp(f"dcm2niix_{kind}")
        run_dcm2niix(session.dicom_folder, folder)
        outputs[kind] = folder
    return outputs


def converted_echo(folder: Path, series_number: int, echo_number: int) -> Path:
    """dcm2niix's file for one echo; it names a lone echo of an enhanced series ``_0`` (no EchoNumbers)."""
    path = folder / f"{series_number}_{echo_number}.nii"
    lone_echo = folder / f"{series_number}_0.nii"
    return lone_echo if echo_number == 1 and not path.exists() and lone_echo.exists() else path


def expected_canonical(grid_record: dict[str, list[int] | list[list[float]]]) -> nib.Nifti1Image:
    shape = tuple(int(n) for n in grid_record["shape_ijk"])  # type: ignore[union-attr]
    affine = np.array(grid_record["affine_ras"], dtype=np.float64)
    return canonical(nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine))


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_dcm2niix_converts_every_series_with_the_simulator_geometry(
    kind: str, simulated_sessions: dict[str, SimulatedSession], dcm2niix_output: dict[str, Path]
) -> None:
    truth = simulated_sessions[kind].ground_truth
    for key, series in truth["series"].items():
        expected = expected_canonical(series["grid"])
        for echo_number in range(1, len(series["echo_times_ms"]) + 1):
            path = converted_echo(dcm2niix_output[kind], series["series_number"], echo_number)
            assert path.is_file(), f"dcm2niix wrote no {path.name} for {key} (echo {echo_number})"
            converted = canonical(load_nifti(path))
            assert converted.shape[:3] == expected.shape, f"{key} echo {echo_number}: shape"
            np.testing.assert_allclose(
                converted.affine,
                expected.affine,
                atol=AFFINE_TOLERANCE_MM,
                err_msg=f"{key} echo {echo_number}",
            )


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_dcm2niix_floating_values_match_the_simulated_receiver_signal(
    kind: str, simulated_sessions: dict[str, SimulatedSession], dcm2niix_output: dict[str, Path]
) -> None:
    """dcm2niix's Philips 'precise float' (FP) is the receiver signal the simulator generated.

    Noisy FP vs the noise-free signal over bright voxels (> 30 % of the maximum, SNR > 5 there):
    their mean ratio is 1 within 2 % (Rician bias at SNR >= 5 is < 2 %); a wrong scaling (display
    value or a missing private slope) would be off by RS x SS, orders of magnitude.
    """
    session = simulated_sessions[kind]
    series = session.ground_truth["series"]["sodium"]
    converted = canonical(load_nifti(converted_echo(dcm2niix_output[kind], series["series_number"], 1)))
    noise_free = canonical(
        load_nifti(session.folder / "ground_truth" / "sodium_space" / "signal_noise_free.nii.gz")
    )
    noisy_values, free_values = converted.get_fdata(), noise_free.get_fdata()
    bright = free_values > 0.3 * free_values.max()
    ratio = noisy_values[bright].mean() / free_values[bright].mean()
    assert ratio == pytest.approx(1.0, abs=0.02)


def test_classic_philips_scaling_tags_are_present_and_consistent(classic_session: SimulatedSession) -> None:
    truth = classic_session.ground_truth["series"]
    for key, record in truth.items():
        for path in classic_session.series_files[key]:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            block = dataset.private_block(0x2005, PHILIPS_PRIVATE_CREATOR)
            scale_slope = float(block[0x0E].value)
            scale_intercept = float(block[0x0D].value)
            rescale_slope, rescale_intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
            expected = record["scaling"][int(dataset.EchoNumbers) - 1]
            assert rescale_slope == pytest.approx(expected["rescale_slope"], rel=SCALING_RELATIVE_TOLERANCE)
            assert scale_slope == pytest.approx(expected["scale_slope"], rel=SCALING_RELATIVE_TOLERANCE)
            assert scale_intercept == pytest.approx(-rescale_intercept / rescale_slope, abs=1e-6), path


def test_dual_echo_series_carry_both_echoes_with_their_own_scaling(classic_session: SimulatedSession) -> None:
    for key in ("pd_t2_head", "pd_t2_body"):
        files = classic_session.series_files[key]
        echoes = {int(pydicom.dcmread(p, stop_before_pixels=True).EchoNumbers) for p in files}
        assert echoes == {1, 2}, key
        slopes = [s["scale_slope"] for s in classic_session.ground_truth["series"][key]["scaling"]]
        assert slopes[0] != pytest.approx(slopes[1]), f"{key}: echoes should be scaled independently"


def test_lesion_seg_references_the_3d_t1_and_holds_the_lesions(classic_session: SimulatedSession) -> None:
    truth = classic_session.ground_truth
    seg = hd.seg.segread(classic_session.series_files["lesion_seg"][0])
    t1 = truth["series"]["t1_3d"]
    assert seg.FrameOfReferenceUID == t1["frame_of_reference_uid"]
    assert seg.StudyInstanceUID == t1["study_instance_uid"]
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == {t1["series_instance_uid"]}
    assert seg.get_segment_description(1).segment_label == "T2 hyperintense lesions"
    mask = seg.get_volume(segment_numbers=[1], combine_segments=True, skip_overlap_checks=True)
    voxel_ml = float(np.prod(t1["grid"]["voxel_size_mm"])) / 1000.0
    seg_volume_ml = float((mask.array > 0).sum()) * voxel_ml
    # The SEG is the fractional lesion map thresholded at 0.5: within 20 % of the fractional volume
    # for lesions of a few ml with 1 mm soft edges.
    assert seg_volume_ml == pytest.approx(truth["lesions"]["t2_volume_ml"], rel=0.2)
