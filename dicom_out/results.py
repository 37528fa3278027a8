"""A processed session's results folder and its source sodium series, loaded for the writers.

The TSC map and the masks are NIfTI files (``[i, j, k]``, RAS affine) on the sodium grid. The
writers need them in DICOM frame order (``[frame, row, column]``, frames in the order of the source
sodium series' frames), so that every output frame sits exactly where a sodium frame sits.
``load_results`` checks that the NIfTI grid is the sodium series' grid (up to a permutation or flip
of the voxel axes) and raises an ``ExportError`` naming the folder and the series otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_out.birth_date import conform_birth_dates
from processing.measurements import Measurements, MeasurementsError, Tissue, read_measurements
from processing.nifti_io import read_volume
from processing.volume import LPS_TO_RAS
from sodium_node.errors import ExportError, LoadError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

TSC_MAP_FILE = "tsc_mM.nii.gz"
POSITION_TOLERANCE_MM = 0.01
"""Frame positions and voxel centres must agree this closely (DS values carry ~1e-6 mm)."""


@dataclass(frozen=True)
class SodiumSeries:
    """The source sodium series: its datasets (headers) and the geometry of its frames."""

    datasets: tuple[Dataset, ...]
    """Classic: one per frame, sorted along the slice normal. Enhanced: the one multi-frame file."""
    frame_positions_lps: FloatArray
    """Image Position (Patient) of each frame, in source frame order, ``(frames, 3)``."""
    row_direction: FloatArray
    column_direction: FloatArray
    pixel_spacing_mm: tuple[float, float]
    """(between rows, between columns), as Pixel Spacing stores it."""
    slice_thickness_mm: float
    rows: int
    columns: int

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def series_instance_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)

    @property
    def frame_count(self) -> int:
        return int(self.frame_positions_lps.shape[0])

    @property
    def is_enhanced(self) -> bool:
        return len(self.datasets) == 1 and int(self.first.get("NumberOfFrames", 1)) > 1

    @property
    def slice_spacing_mm(self) -> float:
        if self.frame_count < 2:
            return self.slice_thickness_mm
        normal = np.cross(self.row_direction, self.column_direction)
        offsets = np.sort(self.frame_positions_lps @ normal)
        return float(np.median(np.diff(offsets)))


@dataclass(frozen=True)
class Results:
    folder: Path
    measurements: Measurements
    sodium: SodiumSeries
    tsc_mM: Float32Array
    """Calibrated TSC, ``[frame, row, column]`` in source frame order."""
    masks: dict[Tissue, Float32Array]
    """Tissue probabilities 0..1, same layout; lesion absent when there are no lesions."""
    qc_pictures: tuple[Path, ...]


def _shared_item(dataset: Dataset, sequence: str, frame: int) -> Dataset | None:
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = dataset.get(groups)
        if not items:
            continue
        item = items[frame] if groups.startswith("PerFrame") else items[0]
        if sequence in item:
            return item[sequence][0]  # type: ignore[no-any-return]
    return None


def load_sodium_series(paths: Sequence[Path]) -> SodiumSeries:
    """Read the headers of the sodium series' files (classic single-frame or one Enhanced MR file).

    The headers' Patient Birth Date is made a conformant DA here (``dicom_out.birth_date``), so
    that every writer copies a value it can write.
    """
    if not paths:
        raise ExportError("no sodium series files given")
    datasets: list[Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError) as error:
            raise ExportError(f"{path}: cannot read the sodium series file ({error})") from error
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(series_uids) != 1:
        raise ExportError(f"{paths[0].parent}: files of {len(series_uids)} series given as the sodium series")
    conform_birth_dates(datasets, series_instance_uid=series_uids.pop())
    first = datasets[0]
    if len(datasets) == 1 and int(first.get("NumberOfFrames", 1)) > 1:
        frames = int(first.NumberOfFrames)
        orientation = _shared_item(first, "PlaneOrientationSequence", 0)
        measures = _shared_item(first, "PixelMeasuresSequence", 0)
        if orientation is None or measures is None:
            raise ExportError(
                f"sodium series {first.SeriesInstanceUID}: no plane orientation or pixel measures"
            )
        positions = []
        for frame in range(frames):
            position = _shared_item(first, "PlanePositionSequence", frame)
            if position is None:
                raise ExportError(
                    f"sodium series {first.SeriesInstanceUID}: frame {frame + 1} has no position"
                )
            positions.append([float(v) for v in position.ImagePositionPatient])
        iop = [float(v) for v in orientation.ImageOrientationPatient]
        spacing = [float(v) for v in measures.PixelSpacing]
        thickness = float(measures.get("SliceThickness", spacing[0]))
    else:
        iop = [float(v) for v in first.ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])
        datasets.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
        positions = [[float(v) for v in ds.ImagePositionPatient] for ds in datasets]
        spacing = [float(v) for v in first.PixelSpacing]
        thickness = float(first.get("SliceThickness", spacing[0]))
    return SodiumSeries(
        datasets=tuple(datasets),
        frame_positions_lps=np.asarray(positions, dtype=np.float64),
        row_direction=np.asarray(iop[:3], dtype=np.float64),
        column_direction=np.asarray(iop[3:], dtype=np.float64),
        pixel_spacing_mm=(spacing[0], spacing[1]),
        slice_thickness_mm=thickness,
        rows=int(first.Rows),
        columns=int(first.Columns),
    )


def frame_index_affine_lps(sodium: SodiumSeries) -> FloatArray:
    """Maps (column, row, frame index along the normal from the lowest frame, 1) to LPS millimetres."""
    normal = np.cross(sodium.row_direction, sodium.column_direction)
    lowest = sodium.frame_positions_lps[int(np.argmin(sodium.frame_positions_lps @ normal))]
    affine = np.eye(4)
    affine[:3, 0] = sodium.row_direction * sodium.pixel_spacing_mm[1]
    affine[:3, 1] = sodium.column_direction * sodium.pixel_spacing_mm[0]
    affine[:3, 2] = normal * sodium.slice_spacing_mm
    affine[:3, 3] = lowest
    return affine


def to_frames(
    data_ijk: npt.NDArray[np.floating], affine_ras: FloatArray, sodium: SodiumSeries, *, name: str
) -> Float32Array:
    """A NIfTI array on the sodium grid as ``[frame, row, column]`` in source frame order."""
    dicom_affine = frame_index_affine_lps(sodium)
    nifti_to_dicom = np.linalg.inv(LPS_TO_RAS @ affine_ras) @ dicom_affine
    linear, offset = nifti_to_dicom[:3, :3], nifti_to_dicom[:3, 3]
    permutation = np.abs(linear).argmax(axis=0)
    signs = np.sign(linear[permutation, [0, 1, 2]])
    target_shape = (sodium.columns, sodium.rows, sodium.frame_count)
    expected = np.zeros((3, 3))
    expected[permutation, [0, 1, 2]] = signs
    shape_ok = tuple(data_ijk.shape[p] for p in permutation) == target_shape
    expected_offset = np.array(
        [0.0 if s > 0 else data_ijk.shape[p] - 1 for p, s in zip(permutation, signs, strict=True)]
    )
    if (
        sorted(permutation.tolist()) != [0, 1, 2]
        or not np.allclose(linear, expected, atol=1e-3)
        or not shape_ok
        or not np.allclose(offset[permutation], expected_offset, atol=POSITION_TOLERANCE_MM / 3.0)
    ):
        raise ExportError(
            f"{name}: grid (shape {data_ijk.shape}, affine {np.round(affine_ras, 3).tolist()}) is not "
            f"the grid of sodium series {sodium.series_instance_uid} ({sodium.columns} x {sodium.rows} x "
            f"{sodium.frame_count}); the results must be on the sodium series' grid"
        )
    volume = np.transpose(np.asarray(data_ijk, dtype=np.float32), permutation)
    for axis, sign in enumerate(signs):
        if sign < 0:
            volume = np.flip(volume, axis=axis)
    normal = np.cross(sodium.row_direction, sodium.column_direction)
    heights = (sodium.frame_positions_lps - dicom_affine[:3, 3]) @ normal
    frame_indices = np.rint(heights / sodium.slice_spacing_mm).astype(int)
    centres = dicom_affine[:3, 3] + np.outer(frame_indices, dicom_affine[:3, 2])
    if not np.allclose(centres, sodium.frame_positions_lps, atol=POSITION_TOLERANCE_MM):
        raise ExportError(f"sodium series {sodium.series_instance_uid}: frames are not evenly spaced")
    return np.ascontiguousarray(volume.transpose(2, 1, 0)[frame_indices], dtype=np.float32)


def _read_nifti(path: Path) -> tuple[npt.NDArray[np.float32], FloatArray]:
    try:
        volume = read_volume(path, space="sodium")
    except LoadError as error:
        raise ExportError(str(error)) from error
    return volume.data, volume.affine_ras


def load_results(folder: Path, sodium_files: Sequence[Path]) -> Results:
    """Load a results folder (see ``processing.measurements``) against its source sodium series."""
    try:
        measurements = read_measurements(folder)
    except MeasurementsError as error:
        raise ExportError(str(error)) from error
    sodium = load_sodium_series(sodium_files)
    if measurements.session.sodium_series_instance_uid != sodium.series_instance_uid:
        raise ExportError(
            f"{folder}: results are of sodium series {measurements.session.sodium_series_instance_uid}, "
            f"the files given are of series {sodium.series_instance_uid}"
        )
    tsc_path = folder / measurements.files.get("tsc_map", TSC_MAP_FILE)
    data, affine = _read_nifti(tsc_path)
    tsc = to_frames(data, affine, sodium, name=str(tsc_path))
    masks: dict[Tissue, Float32Array] = {}
    for tissue in Tissue:
        path = folder / measurements.files.get(f"mask_{tissue.value}", f"mask_{tissue.value}.nii.gz")
        if not path.is_file():
            continue
        mask, mask_affine = _read_nifti(path)
        masks[tissue] = np.clip(to_frames(mask, mask_affine, sodium, name=str(path)), 0.0, 1.0)
    qc_pictures = tuple(sorted((folder / "qc").glob("*.png")))
    log.debug("%s: results of sodium series %s loaded", folder, sodium.series_instance_uid)
    return Results(folder, measurements, sodium, tsc, masks, qc_pictures)
