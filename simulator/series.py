"""What the virtual scanner acquired: patient, exams and series, ready to be written as DICOM."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from simulator.geometry import VolumeGrid


class Nucleus(enum.Enum):
    HYDROGEN = "1H"
    SODIUM = "23NA"


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    issuer_of_patient_id: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class Exam:
    """One visit in the scanner with one coil set-up: it shares a pose and a frame of reference."""

    study_instance_uid: str
    study_id: str
    accession_number: str
    study_description: str
    frame_of_reference_uid: str
    start: dt.datetime


@dataclass(frozen=True)
class PhilipsScaling:
    """Philips' two scalings of the stored integers SV (see shared/reference/philips_scaling.md).

    display value DV = SV * rescale_slope + rescale_intercept;
    floating value FP = (SV - scale_intercept) / scale_slope, with
    scale_intercept = -rescale_intercept / rescale_slope.
    """

    rescale_slope: float
    rescale_intercept: float
    scale_slope: float

    @property
    def scale_intercept(self) -> float:
        return -self.rescale_intercept / self.rescale_slope

    def floating_value(self, stored: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
        return (stored.astype(np.float64) - self.scale_intercept) / self.scale_slope

    def display_value(self, stored: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
        return stored.astype(np.float64) * self.rescale_slope + self.rescale_intercept


@dataclass(frozen=True)
class AcquisitionParameters:
    """The MR sequence header fields of a series."""

    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    mr_acquisition_type: str
    sequence_name: str
    repetition_time_ms: float
    echo_times_ms: tuple[float, ...]
    inversion_time_ms: float | None
    flip_angle_deg: float
    echo_train_length: int
    pixel_bandwidth_hz: float
    number_of_averages: float
    image_type_philips: str
    """Philips' third/fifth Image Type value, e.g. ``SE`` gives ``ORIGINAL\\PRIMARY\\M_SE\\M\\SE``."""


@dataclass(frozen=True)
class Coils:
    receive_coil_name: str
    transmit_coil_name: str


@dataclass(frozen=True)
class EchoImage:
    """One echo of a series: stored integers on the series grid and their scaling."""

    echo_number: int
    echo_time_ms: float
    stored_kji: npt.NDArray[np.uint16]
    scaling: PhilipsScaling

    @cached_property
    def display_window(self) -> tuple[float, float]:
        """Window centre and width over display values: the echo's 1st to 99.5th percentile."""
        low, high = np.percentile(self.stored_kji, [1.0, 99.5])
        display_low = low * self.scaling.rescale_slope + self.scaling.rescale_intercept
        display_high = high * self.scaling.rescale_slope + self.scaling.rescale_intercept
        width = max(float(display_high - display_low), 1.0)
        return float(display_low) + width / 2.0, width


@dataclass(frozen=True)
class ScannedSeries:
    """One series as the scanner reconstructed it."""

    key: str
    """Stable short name used in file names and ground truth, e.g. ``t1_3d``."""
    exam: Exam
    series_instance_uid: str
    series_number: int
    series_description: str
    protocol_name: str
    nucleus: Nucleus
    imaging_frequency_mhz: float
    coils: Coils
    acquisition: AcquisitionParameters
    grid: VolumeGrid
    echoes: tuple[EchoImage, ...]
    acquired: dt.datetime

    @property
    def body_part_examined(self) -> str:
        return "HEAD"
