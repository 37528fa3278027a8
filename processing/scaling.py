"""Stored integers to physical values: DICOM Rescale and Philips' private floating-point scale.

Philips MR images carry two scalings of the stored values SV (``../shared/reference/philips_scaling.md``):

- display value ``DV = SV * RS + RI`` (Rescale Slope/Intercept, (0028,1053)/(0028,1052));
- floating value ``FP = DV / (RS * SS)`` with SS the private scale slope (2005,100E).

We use FP whenever the private scale slope is present, and DV otherwise, and record which one each
volume holds. FP is what the receiver measured: it is proportional to the signal whatever display
gain the scanner chose for a file, an echo or a frame, so every frame of a series is on one scale.
The sodium calibration needs exactly that (its vials and the brain share a series, but Philips may
choose a scaling per file or per frame). It is also dcm2niix's default, so our NIfTI files agree
with the reference converter. Each frame is scaled with its own values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from processing.volume import Scaling

log = logging.getLogger(__name__)

PHILIPS_PRIVATE_GROUP = 0x2005
PHILIPS_SCALING_CREATOR = "Philips MR Imaging DD 001"
SCALE_SLOPE_ELEMENT = 0x0E
"""(2005,xx0E) in the block of ``Philips MR Imaging DD 001`` (usually xx = 10)."""
PHILIPS_PER_FRAME_CREATOR = "Philips MR Imaging DD 005"
PER_FRAME_SEQUENCE_ELEMENT = 0x0F
"""(2005,xx0F): Philips' private per-frame item of an Enhanced MR image (usually xx = 14)."""


@dataclass(frozen=True)
class FrameScaling:
    """The scaling values of one frame (or one classic file)."""

    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    philips_scale_slope: float | None = None

    @property
    def kind(self) -> Scaling:
        return Scaling.PHILIPS_FLOATING if self.philips_scale_slope is not None else Scaling.RESCALED

    def apply(self, stored: npt.NDArray[np.integer] | npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        display = stored.astype(np.float64) * self.rescale_slope + self.rescale_intercept
        if self.philips_scale_slope is None:
            return display
        return np.asarray(display / (self.rescale_slope * self.philips_scale_slope))


def _private_value(dataset: Dataset, creator: str, element: int) -> object | None:
    """A Philips private value, found through its creator, else at Philips' usual block."""
    try:
        block = dataset.private_block(PHILIPS_PRIVATE_GROUP, creator)
    except KeyError:
        block = None
    if block is not None and element in block:
        value: object = block[element].value
        return value
    return None


def philips_scale_slope(dataset: Dataset) -> float | None:
    """The private scale slope of a classic file or of a per-frame scaling item, if usable."""
    value = _private_value(dataset, PHILIPS_SCALING_CREATOR, SCALE_SLOPE_ELEMENT)
    if value is None:
        return None
    slope = float(value[0] if isinstance(value, list | tuple) else value)  # type: ignore[arg-type]
    if not np.isfinite(slope) or slope <= 0:
        log.warning("ignoring Philips private scale slope %r (not a positive number)", value)
        return None
    return slope


def rescale_values(dataset: Dataset) -> tuple[float, float]:
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def classic_scaling(dataset: Dataset) -> FrameScaling:
    slope, intercept = rescale_values(dataset)
    return FrameScaling(slope, intercept, philips_scale_slope(dataset))


def enhanced_frame_scaling(frame_groups: Dataset, shared_groups: Dataset | None) -> FrameScaling:
    """Scaling of one Enhanced MR frame: Pixel Value Transformation and Philips' per-frame item."""
    slope, intercept = 1.0, 0.0
    for groups in (frame_groups, shared_groups):
        if groups is not None and "PixelValueTransformationSequence" in groups:
            slope, intercept = rescale_values(groups.PixelValueTransformationSequence[0])
            break
    scale_slope: float | None = None
    for groups in (frame_groups, shared_groups):
        if groups is None:
            continue
        sequence = _private_value(groups, PHILIPS_PER_FRAME_CREATOR, PER_FRAME_SEQUENCE_ELEMENT)
        if sequence is not None and len(sequence) > 0:  # type: ignore[arg-type]
            scale_slope = philips_scale_slope(sequence[0])  # type: ignore[index]
            break
    return FrameScaling(slope, intercept, scale_slope)
