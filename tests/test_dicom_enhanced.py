"""The Enhanced MR writer: valid IOD, frames read back exactly, and dcm2niix agrees on geometry and values."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from peers import canonical, dciodvfy_errors, load_nifti, run_dcm2niix
from pydicom.dataset import Dataset
from synthetic_series import CREATED, MAX_STORED, dual_echo_sodium_series, synthetic_patient

from simulator.dicom_classic import write_classic_series
from simulator.dicom_common import PHILIPS_PRIVATE_CREATOR
from simulator.dicom_enhanced import PHILIPS_PER_FRAME_CREATOR, write_enhanced_series
from simulator.series import EchoImage, Patient, PhilipsScaling, ScannedSeries

Writer = Callable[..., list[Path]]
FLOAT32_EPS = float(np.finfo(np.float32).eps)

POSITION_TOLERANCE_MM = 1e-4
"""Image Position (Patient) is written with 6 decimals (DS), so it is exact to 5e-7 mm."""
RESCALE_RELATIVE_TOLERANCE = 1e-7
"""Rescale Slope/Intercept are written with 8 significant digits (DS): relative error <= 5e-9."""
AFFINE_TOLERANCE_MM = 0.01
"""dcm2niix stores the affine as float32 srow/quaternion from 6-decimal DS positions: ~1e-5 mm."""


@pytest.fixture(scope="module")
def series() -> ScannedSeries:
    return dual_echo_sodium_series()


@pytest.fixture(scope="module")
def patient() -> Patient:
    return synthetic_patient()


@pytest.fixture(scope="module")
def enhanced_file(series: ScannedSeries, patient: Patient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    paths = write_enhanced_series(
        patient=patient, series=series, folder=tmp_path_factory.mktemp("enhanced"), created=CREATED
    )
    assert len(paths) == 1, "the enhanced writer must put the whole series in one file"
    return paths[0]


def test_dciodvfy_reports_no_errors(enhanced_file: Path) -> None:
    errors = dciodvfy_errors(enhanced_file)
    assert not errors, "dciodvfy found errors:\n" + "\n".join(errors)


def frame_echo(frame: Dataset, series: ScannedSeries) -> EchoImage:
    echo_time_ms = frame.MREchoSequence[0].EffectiveEchoTime
    matches = [echo for echo in series.echoes if echo.echo_time_ms == echo_time_ms]
    assert len(matches) == 1, f"frame echo time {echo_time_ms} ms matches {len(matches)} echoes"
    return matches[0]


def philips_scale_slope_and_intercept(frame: Dataset) -> tuple[float, float]:
    per_frame = frame.private_block(0x2005, PHILIPS_PER_FRAME_CREATOR)
    assert per_frame.block_start == 0x1400, "dcm2niix looks for the per-frame sequence at (2005,140F)"
    scaling_item = per_frame[0x0F].value[0]
    scaling = scaling_item.private_block(0x2005, PHILIPS_PRIVATE_CREATOR)
    assert scaling.block_start == 0x1000, "dcm2niix looks for the scale slope at (2005,100E)"
    return float(scaling[0x0E].value), float(scaling[0x0D].value)


def test_frames_read_back(enhanced_file: Path, series: ScannedSeries) -> None:
    dataset = pydicom.dcmread(enhanced_file)
    grid = series.grid
    assert dataset.SOPClassUID == pydicom.uid.EnhancedMRImageStorage
    assert dataset.NumberOfFrames == grid.n_slices * len(series.echoes)
    pixels = dataset.pixel_array
    seen: set[tuple[int, int]] = set()
    for frame, frame_pixels in zip(dataset.PerFrameFunctionalGroupsSequence, pixels, strict=True):
        slice_index = frame.FrameContentSequence[0].InStackPositionNumber - 1
        echo = frame_echo(frame, series)
        seen.add((slice_index, echo.echo_number))
        position = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        np.testing.assert_allclose(position, grid.slice_position_lps(slice_index), atol=POSITION_TOLERANCE_MM)
        transformation = frame.PixelValueTransformationSequence[0]
        assert float(transformation.RescaleSlope) == pytest.approx(
            echo.scaling.rescale_slope, rel=RESCALE_RELATIVE_TOLERANCE
        )
        assert float(transformation.RescaleIntercept) == pytest.approx(
            echo.scaling.rescale_intercept, rel=RESCALE_RELATIVE_TOLERANCE
        )
        # The private values are FL: exactly the float32 nearest to the echo's scaling.
        scale_slope, scale_intercept = philips_scale_slope_and_intercept(frame)
        assert scale_slope == float(np.float32(echo.scaling.scale_slope))
        assert scale_intercept == float(np.float32(echo.scaling.scale_intercept))
        np.testing.assert_array_equal(frame_pixels, echo.stored_kji[slice_index])
    assert len(seen) == dataset.NumberOfFrames, "every slice of every echo must be a frame exactly once"


def canonical_expected(values_kji: npt.NDArray[np.float64], series: ScannedSeries) -> nib.Nifti1Image:
    """The ground truth as a canonical NIfTI: simulator arrays are [k, j, i], NIfTI arrays [i, j, k]."""
    image = nib.Nifti1Image(values_kji.transpose(2, 1, 0), series.grid.affine_ras())  # type: ignore[no-untyped-call]
    return canonical(image)


def dcm2niix_float_tolerance(scaling: PhilipsScaling) -> float:
    """How far dcm2niix's "precise float" voxels may be from FP = (SV - SI) / SS.

    dcm2niix computes l0 = FP(0) and l1 = FP(1) in float32 and stores scl_inter = l0 and
    scl_slope = l1 - l0, so the slope carries up to eps32 * (|l0| + |l1|) / 2 of absolute error,
    multiplied by stored values up to 4095: a bound of eps32 * 4096 * (|l0| + |l1|).
    """
    l0, l1 = scaling.floating_value(np.array([0, 1], dtype=np.uint16))
    return FLOAT32_EPS * (MAX_STORED + 1) * (abs(float(l0)) + abs(float(l1)))


@pytest.fixture(scope="module")
def converted(
    series: ScannedSeries, patient: Patient, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """dcm2niix output folders of the enhanced and of the classic writer, for the same series."""
    writers: dict[str, Writer] = {"enhanced": write_enhanced_series, "classic": write_classic_series}
    folders: dict[str, Path] = {}
    for name, writer in writers.items():
        root = tmp_path_factory.mktemp(f"dcm2niix_{name}")
        writer(patient=patient, series=series, folder=root / "dicom", created=CREATED)
        run_dcm2niix(root / "dicom", root / "nifti")
        folders[name] = root / "nifti"
    return folders


@pytest.mark.parametrize("writer_name", ["enhanced", "classic"])
def test_dcm2niix_splits_echoes_with_geometry_and_floating_values(
    writer_name: str, converted: dict[str, Path], series: ScannedSeries
) -> None:
    folder = converted[writer_name]
    expected_names = sorted(f"{series.series_number}_{echo.echo_number}.nii" for echo in series.echoes)
    assert sorted(path.name for path in folder.glob("*.nii")) == expected_names
    for echo in series.echoes:
        name = f"{series.series_number}_{echo.echo_number}"
        image = canonical(load_nifti(folder / f"{name}.nii"))
        floating = canonical_expected(echo.scaling.floating_value(echo.stored_kji), series)
        np.testing.assert_allclose(image.affine, floating.affine, atol=AFFINE_TOLERANCE_MM)
        np.testing.assert_allclose(
            image.get_fdata(), floating.get_fdata(), rtol=0.0, atol=dcm2niix_float_tolerance(echo.scaling)
        )
        sidecar = json.loads((folder / f"{name}.json").read_text())
        assert sidecar["UsePhilipsFloatNotDisplayScaling"] == 1
        assert sidecar["EchoTime"] == pytest.approx(echo.echo_time_ms / 1000.0)


def test_dcm2niix_enhanced_and_classic_agree(converted: dict[str, Path], series: ScannedSeries) -> None:
    for echo in series.echoes:
        name = f"{series.series_number}_{echo.echo_number}.nii"
        enhanced = load_nifti(converted["enhanced"] / name)
        classic = load_nifti(converted["classic"] / name)
        np.testing.assert_allclose(enhanced.affine, classic.affine, atol=AFFINE_TOLERANCE_MM)
        # Same stored integers, same float32 scl_slope/scl_inter: identical voxels.
        np.testing.assert_array_equal(enhanced.get_fdata(), classic.get_fdata())
