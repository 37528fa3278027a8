"""The loader: series to volumes with the right geometry and values, or an error that says why not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from peers import canonical, load_nifti
from synthetic_series import CREATED, dual_echo_sodium_series, oblique_grid, synthetic_patient

from processing.dicom_series import dicom_files_under, find_series, load_series
from processing.volume import Scaling
from simulator.dicom_classic import write_classic_series
from simulator.dicom_enhanced import write_enhanced_series
from simulator.series import ScannedSeries
from simulator.session import SimulatedSession
from sodium_node.errors import LoadError

REAL_EPI = Path(__file__).resolve().parent / "data" / "philips_achieva_epi"
AFFINE_TOLERANCE_MM = 0.01
"""The issue's requirement for the affine."""
VALUE_RELATIVE_TOLERANCE = 1e-6
"""We compute in float64 and store float32 (7 significant digits); dcm2niix stores int16 with a
float32 slope, so the two agree to float32 precision of the largest value."""

Writer = Callable[..., list[Path]]
WRITERS: dict[str, Writer] = {"classic": write_classic_series, "enhanced": write_enhanced_series}


def test_real_philips_epi_matches_dcm2niix_reference() -> None:
    series = find_series(dicom_files_under(REAL_EPI / "fmri"))
    assert len(series) == 1
    loaded = load_series(series[0].paths)
    assert [v.temporal_index for v in loaded.volumes] == [1, 2, 3], "three temporal positions"
    assert all(v.scaling is Scaling.PHILIPS_FLOATING for v in loaded.volumes)
    ours = canonical(
        nib.Nifti1Image(np.stack([v.data for v in loaded.volumes], axis=-1), loaded.volumes[0].affine_ras)
    )
    reference = canonical(load_nifti(REAL_EPI / "dcm2niix_reference" / "EPI_asc_CLEAR_201.nii.gz"))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine, reference.affine, atol=AFFINE_TOLERANCE_MM)
    reference_values = np.asarray(reference.dataobj)
    np.testing.assert_allclose(
        np.asarray(ours.dataobj),
        reference_values,
        rtol=0,
        atol=VALUE_RELATIVE_TOLERANCE * reference_values.max(),
    )


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_every_simulated_series_has_the_ground_truth_geometry(
    kind: str, simulated_sessions: dict[str, SimulatedSession]
) -> None:
    session = simulated_sessions[kind]
    for key, truth in session.ground_truth["series"].items():
        loaded = load_series(session.series_files[key])
        assert loaded.echo_numbers == tuple(range(1, len(truth["echo_times_ms"]) + 1)), key
        for volume, echo_time_ms in zip(loaded.volumes, truth["echo_times_ms"], strict=True):
            assert volume.shape == tuple(truth["grid"]["shape_ijk"]), key
            np.testing.assert_allclose(
                volume.affine_ras,
                np.array(truth["grid"]["affine_ras"]),
                atol=AFFINE_TOLERANCE_MM,
                err_msg=key,
            )
            assert volume.echo.time_ms == pytest.approx(echo_time_ms), key
            assert volume.scaling is Scaling.PHILIPS_FLOATING
            assert volume.frame_of_reference_uid == truth["frame_of_reference_uid"]


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_values_are_philips_floating_values_per_echo(kind: str, tmp_path: Path) -> None:
    """Each echo has its own RS/RI/SS (one with an intercept): FP = (SV - SI) / SS, per echo."""
    series = dual_echo_sodium_series()
    paths = WRITERS[kind](patient=synthetic_patient(), series=series, folder=tmp_path, created=CREATED)
    loaded = load_series(paths)
    assert len(loaded.volumes) == 2
    for volume, echo in zip(loaded.volumes, series.echoes, strict=True):
        expected_ijk = echo.scaling.floating_value(echo.stored_kji).transpose(2, 1, 0)
        np.testing.assert_allclose(volume.data, expected_ijk, rtol=VALUE_RELATIVE_TOLERANCE)
        np.testing.assert_allclose(volume.affine_ras, series.grid.affine_ras(), atol=AFFINE_TOLERANCE_MM)
        assert volume.echo.time_ms == pytest.approx(echo.echo_time_ms)


# --- bad input: each gets an error naming the series (number 501) and the problem ---------------


def _write_classic(folder: Path, series: ScannedSeries | None = None) -> list[Path]:
    series = dual_echo_sodium_series() if series is None else series
    return write_classic_series(patient=synthetic_patient(), series=series, folder=folder, created=CREATED)


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)


def _slice_files(paths: list[Path], slice_index: int) -> list[Path]:
    """Classic files are written slice-major, echo-minor (two echoes)."""
    return paths[2 * slice_index : 2 * slice_index + 2]


def _expect_error(paths: list[Path], *fragments: str) -> None:
    with pytest.raises(LoadError) as caught:
        load_series(paths)
    message = str(caught.value)
    assert "series 501" in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_mixed_series_is_refused(tmp_path: Path) -> None:
    first = _write_classic(tmp_path / "a")
    other_uid = "1.2.826.0.1.3680043.8.498.1"
    for path in first[:2]:
        _edit(path, lambda ds: setattr(ds, "SeriesInstanceUID", other_uid))
    _expect_error(first, "mixed series", "SeriesInstanceUID")


def test_missing_slice_is_refused(tmp_path: Path) -> None:
    paths = _write_classic(tmp_path)
    for path in _slice_files(paths, 3):
        path.unlink()
    remaining = [p for p in paths if p.exists()]
    _expect_error(remaining, "missing slice")


def test_missing_slice_is_found_from_positions_alone(tmp_path: Path) -> None:
    """Without Images in Acquisition, the gap in the slice positions shows the missing slice."""
    paths = _write_classic(tmp_path)
    for path in _slice_files(paths, 2):
        path.unlink()
    remaining = [p for p in paths if p.exists()]
    for path in remaining:
        _edit(path, lambda ds: delattr(ds, "ImagesInAcquisition"))
    _expect_error(remaining, "missing slice", "gap of 10.000 mm")


def test_missing_slice_in_one_echo_is_refused(tmp_path: Path) -> None:
    paths = _write_classic(tmp_path)
    _slice_files(paths, 5)[1].unlink()
    remaining = [p for p in paths if p.exists()]
    for path in remaining:
        _edit(path, lambda ds: delattr(ds, "ImagesInAcquisition"))
    _expect_error(remaining, "missing slice", "different slice counts")


def _move_along(path: Path, offset_lps_mm: np.ndarray) -> None:
    def change(dataset: pydicom.Dataset) -> None:
        position = np.array([float(v) for v in dataset.ImagePositionPatient]) + offset_lps_mm
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]

    _edit(path, change)


def test_uneven_slice_spacing_is_refused(tmp_path: Path) -> None:
    grid = oblique_grid()
    paths = _write_classic(tmp_path, dual_echo_sodium_series(grid=grid))
    normal = grid.direction_matrix[:, 2]
    for path in _slice_files(paths, 3):
        _move_along(path, 0.8 * normal)
    _expect_error(paths, "uneven slice spacing")


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    """Each slice shifted 0.5 mm along the row direction per slice: a 5.7 degree tilt for 5 mm slices."""
    grid = oblique_grid()
    paths = _write_classic(tmp_path, dual_echo_sodium_series(grid=grid))
    row_direction = grid.direction_matrix[:, 0]
    for k in range(grid.n_slices):
        for path in _slice_files(paths, k):
            _move_along(path, 0.5 * k * row_direction)
    _expect_error(paths, "gantry tilt")


def test_mixed_orientations_are_refused(tmp_path: Path) -> None:
    paths = _write_classic(tmp_path)
    other = oblique_grid(angles_deg=(12.0, -17.0, 33.0)).image_orientation_patient()
    for path in _slice_files(paths, 4):
        _edit(path, lambda ds: setattr(ds, "ImageOrientationPatient", [f"{v:.8f}" for v in other]))
    _expect_error(paths, "mixed orientations")


def test_enhanced_missing_frame_is_refused(tmp_path: Path) -> None:
    """An Enhanced MR file whose In-Stack Position Numbers skip a slice (frames 5 and 6 dropped)."""
    series = dual_echo_sodium_series()
    [path] = write_enhanced_series(
        patient=synthetic_patient(), series=series, folder=tmp_path, created=CREATED
    )
    dataset = pydicom.dcmread(path)
    keep = [i for i in range(int(dataset.NumberOfFrames)) if i not in (4, 5)]
    frames = dataset.pixel_array[keep]
    dataset.PerFrameFunctionalGroupsSequence = pydicom.Sequence(
        [dataset.PerFrameFunctionalGroupsSequence[i] for i in keep]
    )
    dataset.NumberOfFrames = len(keep)
    dataset.PixelData = np.ascontiguousarray(frames, dtype=np.uint16).tobytes()
    dataset.save_as(path)
    _expect_error([path], "missing slice")
