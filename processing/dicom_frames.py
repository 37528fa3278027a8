"""DICOM files to frames: one 2D image each, with its position, orientation, echo and scaling.

Classic MR Image Storage gives one frame per file; Enhanced MR Image Storage gives one frame per
item of the Per-frame Functional Groups, each read with its own (or the shared) functional groups.
``dicom_series`` stacks the frames into volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage

from processing.scaling import FrameScaling, classic_scaling, enhanced_frame_scaling
from sodium_node.errors import LoadError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Frame:
    """One 2D image: ``pixels`` holds physical values, ``[row, column]``."""

    pixels: FloatArray
    position_lps_mm: tuple[float, float, float]
    orientation: tuple[float, ...]
    """Image Orientation (Patient): row direction then column direction (LPS unit vectors)."""
    pixel_spacing_mm: tuple[float, float]
    """Pixel Spacing: between rows, then between columns."""
    echo_number: int | None
    echo_time_ms: float | None
    temporal_index: int
    image_type: str
    scaling: FrameScaling
    in_stack_position: int | None
    """Enhanced MR In-Stack Position Number: 1..N along the stack, when present."""
    source: str
    """Where the frame comes from, for error messages: ``file`` or ``file frame n``."""


def _floats(value: object, count: int, what: str, source: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as error:
        raise LoadError(f"{source}: {what} is not numeric ({value!r})") from error
    if len(numbers) != count:
        raise LoadError(f"{source}: {what} has {len(numbers)} values, expected {count}")
    return numbers


def _optional_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


def _optional_int(value: object) -> int | None:
    if value is None or value == "":
        return None
    return int(str(value))


def is_enhanced(dataset: Dataset) -> bool:
    return str(dataset.get("SOPClassUID", "")) == EnhancedMRImageStorage


def classic_frames(dataset: Dataset, path: Path) -> list[Frame]:
    """The one frame of a classic (single-frame) image file."""
    source = str(path)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in dataset:
            raise LoadError(f"{source}: no {keyword}; the file cannot be placed in space")
    scaling = classic_scaling(dataset)
    pixels = np.asarray(dataset.pixel_array)
    if pixels.ndim != 2:
        raise LoadError(f"{source}: expected one 2D grey-scale frame, got pixel array shape {pixels.shape}")
    position = _floats(dataset.ImagePositionPatient, 3, "Image Position (Patient)", source)
    spacing = _floats(dataset.PixelSpacing, 2, "Pixel Spacing", source)
    return [
        Frame(
            pixels=scaling.apply(pixels),
            position_lps_mm=(position[0], position[1], position[2]),
            orientation=_floats(dataset.ImageOrientationPatient, 6, "Image Orientation (Patient)", source),
            pixel_spacing_mm=(spacing[0], spacing[1]),
            echo_number=_optional_int(dataset.get("EchoNumbers")),
            echo_time_ms=_optional_float(dataset.get("EchoTime")),
            temporal_index=_optional_int(dataset.get("TemporalPositionIdentifier")) or 1,
            image_type="\\".join(str(v) for v in dataset.get("ImageType", [])),
            scaling=scaling,
            in_stack_position=None,
            source=source,
        )
    ]


def _group(frame_groups: Dataset, shared: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of a functional group, per-frame first, else shared."""
    for groups in (frame_groups, shared):
        if groups is not None and keyword in groups and len(groups[keyword].value) > 0:
            item: Dataset = groups[keyword].value[0]
            return item
    return None


def enhanced_frames(dataset: Dataset, path: Path) -> list[Frame]:
    """Every frame of an Enhanced MR image, each with its own functional groups and scaling."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        raise LoadError(f"{path}: Enhanced MR image without Per-frame Functional Groups")
    shared = (
        dataset.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in dataset else None
    )
    pixels = np.asarray(dataset.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] != len(per_frame):
        raise LoadError(
            f"{path}: pixel data hold {pixels.shape[0] if pixels.ndim == 3 else '?'} grey-scale frames "
            f"but there are {len(per_frame)} per-frame functional group items"
        )
    frames: list[Frame] = []
    for index, groups in enumerate(per_frame):
        source = f"{path} frame {index + 1}"
        position = _group(groups, shared, "PlanePositionSequence")
        orientation = _group(groups, shared, "PlaneOrientationSequence")
        measures = _group(groups, shared, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise LoadError(f"{source}: no plane position, plane orientation or pixel measures")
        content = _group(groups, shared, "FrameContentSequence")
        echo = _group(groups, shared, "MREchoSequence")
        frame_type = _group(groups, shared, "MRImageFrameTypeSequence")
        image_type = (
            frame_type.FrameType
            if frame_type is not None and "FrameType" in frame_type
            else dataset.get("ImageType", [])
        )
        xyz = _floats(position.ImagePositionPatient, 3, "Image Position (Patient)", source)
        spacing = _floats(measures.PixelSpacing, 2, "Pixel Spacing", source)
        scaling = enhanced_frame_scaling(groups, shared)
        frames.append(
            Frame(
                pixels=scaling.apply(pixels[index]),
                position_lps_mm=(xyz[0], xyz[1], xyz[2]),
                orientation=_floats(orientation.ImageOrientationPatient, 6, "Image Orientation", source),
                pixel_spacing_mm=(spacing[0], spacing[1]),
                echo_number=None,
                echo_time_ms=None if echo is None else _optional_float(echo.get("EffectiveEchoTime")),
                temporal_index=(
                    None if content is None else _optional_int(content.get("TemporalPositionIndex"))
                )
                or 1,
                image_type="\\".join(str(v) for v in image_type),
                scaling=scaling,
                in_stack_position=None
                if content is None
                else _optional_int(content.get("InStackPositionNumber")),
                source=source,
            )
        )
    return frames


def frames_of(dataset: Dataset, path: Path) -> list[Frame]:
    return enhanced_frames(dataset, path) if is_enhanced(dataset) else classic_frames(dataset, path)
