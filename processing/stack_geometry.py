"""Frames of one stack to a regular grid: sort along the slice normal, check, build the affine.

A stack that is not a regular grid is refused with the reason, never resampled silently: mixed
orientations, different pixel spacings or matrix sizes, duplicate positions, missing slices,
uneven slice spacing, and gantry tilt (slice positions that move within the image plane).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing.dicom_frames import Frame
from sodium_node.errors import LoadError

FloatArray = npt.NDArray[np.float64]

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between direction cosines of frames of one stack (about 0.006 degrees)."""
POSITION_TOLERANCE_MM = 0.01
"""Slice gaps and in-plane shifts beyond this are irregular: the affine must be right to 0.01 mm."""
RELATIVE_SPACING_TOLERANCE = 1e-3
"""Slice gaps may also differ by this fraction of the spacing (positions are rounded decimals)."""
MISSING_SLICE_FACTOR = 1.5
"""A gap this many times the typical spacing means slices are missing, not uneven spacing."""


@dataclass(frozen=True)
class Stack:
    """Frames sorted along the slice normal and the grid they form (LPS)."""

    frames: tuple[Frame, ...]
    affine_lps: FloatArray
    """Voxel (column i, row j, slice k) to LPS millimetres."""


def _orientation(frames: Sequence[Frame], what: str) -> FloatArray:
    reference = np.array(frames[0].orientation)
    for frame in frames[1:]:
        if np.max(np.abs(np.array(frame.orientation) - reference)) > ORIENTATION_TOLERANCE:
            raise LoadError(
                f"{what}: mixed orientations: {frames[0].source} has Image Orientation "
                f"{np.round(reference, 4).tolist()} but {frame.source} has "
                f"{np.round(frame.orientation, 4).tolist()}; a series must be one stack of parallel slices"
            )
    row, column = reference[:3], reference[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(column) - 1) > 1e-3
        or abs(row @ column) > 1e-3
    ):
        raise LoadError(f"{what}: Image Orientation {reference.tolist()} is not two orthonormal vectors")
    return reference


def _same_matrix(frames: Sequence[Frame], what: str) -> None:
    first = frames[0]
    for frame in frames[1:]:
        if frame.pixels.shape != first.pixels.shape:
            raise LoadError(
                f"{what}: mixed matrix sizes: {first.source} is {first.pixels.shape} (rows, columns), "
                f"{frame.source} is {frame.pixels.shape}"
            )
        if np.max(np.abs(np.subtract(frame.pixel_spacing_mm, first.pixel_spacing_mm))) > 1e-4:
            raise LoadError(
                f"{what}: mixed pixel spacings: {first.source} has {first.pixel_spacing_mm} mm, "
                f"{frame.source} has {frame.pixel_spacing_mm} mm"
            )


def _check_gaps(distances_mm: FloatArray, frames: Sequence[Frame], what: str) -> float:
    gaps = np.diff(distances_mm)
    duplicate = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
    if duplicate.size:
        a, b = frames[duplicate[0]], frames[duplicate[0] + 1]
        raise LoadError(
            f"{what}: two frames at the same slice position ({a.source} and {b.source}): duplicate "
            "or mixed series, or a dimension (time, image type) the loader cannot tell apart"
        )
    spacing = float(np.median(gaps))
    tolerance = max(POSITION_TOLERANCE_MM, RELATIVE_SPACING_TOLERANCE * spacing)
    large = np.flatnonzero(gaps > MISSING_SLICE_FACTOR * spacing)
    if large.size:
        index = int(large[0])
        missing = round(gaps[index] / spacing) - 1
        raise LoadError(
            f"{what}: missing slice(s): a gap of {gaps[index]:.3f} mm between {frames[index].source} and "
            f"{frames[index + 1].source} where slices are {spacing:.3f} mm apart (about {missing} missing); "
            "resend the complete series"
        )
    if np.max(np.abs(gaps - spacing)) > tolerance:
        raise LoadError(
            f"{what}: uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm "
            f"(more than {tolerance:.3f} mm apart); the slices do not form a regular grid"
        )
    return spacing


def _check_in_plane(positions: FloatArray, normal: FloatArray, what: str, frames: Sequence[Frame]) -> None:
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    shift = np.linalg.norm(in_plane, axis=1)
    worst = int(np.argmax(shift))
    if shift[worst] > POSITION_TOLERANCE_MM:
        along = abs(float(offsets[worst] @ normal))
        tilt_deg = float(np.degrees(np.arctan2(shift[worst], along)))
        raise LoadError(
            f"{what}: gantry tilt or sheared stack: {frames[worst].source} lies {shift[worst]:.2f} mm "
            f"within the image plane from the first slice (tilt {tilt_deg:.2f} degrees); slices are not "
            "stacked along their normal"
        )


def build_stack(frames: Sequence[Frame], *, what: str, default_spacing_mm: float = 1.0) -> Stack:
    """Sort ``frames`` along the slice normal and return their regular grid, or raise ``LoadError``.

    ``what`` names the series (and echo) in messages; ``default_spacing_mm`` is the slice spacing of
    a single-frame stack (Spacing Between Slices or Slice Thickness).
    """
    if not frames:
        raise LoadError(f"{what}: no frames")
    orientation = _orientation(frames, what)
    _same_matrix(frames, what)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    positions = np.array([frame.position_lps_mm for frame in frames], dtype=np.float64)
    order = np.argsort(positions @ normal, kind="stable")
    sorted_frames = tuple(frames[i] for i in order)
    positions = positions[order]
    if len(frames) > 1:
        spacing = _check_gaps(positions @ normal, sorted_frames, what)
        _check_in_plane(positions, normal, what, sorted_frames)
    else:
        spacing = default_spacing_mm
    row_spacing, column_spacing = sorted_frames[0].pixel_spacing_mm
    affine = np.eye(4)
    affine[:3, 0] = row * column_spacing
    affine[:3, 1] = column * row_spacing
    affine[:3, 2] = normal * spacing
    affine[:3, 3] = positions[0]
    return Stack(frames=sorted_frames, affine_lps=affine)
