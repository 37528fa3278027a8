"""The scan protocol of the virtual Achieva: what each series is and how it is planned.

Names follow Philips conventions (SeriesDescription = protocol name as on the scanner console).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from simulator.geometry import AXIAL_AXES_LPS, SAGITTAL_AXES_LPS
from simulator.series import AcquisitionParameters, Coils, Nucleus

HYDROGEN_FREQUENCY_MHZ = 127.768
SODIUM_FREQUENCY_MHZ = 33.796
"""23Na Larmor frequency at the same field: 127.768 MHz x (11.262 / 42.577)."""

HEAD_COIL = Coils(receive_coil_name="SENSE-Head-32", transmit_coil_name="B")
BODY_COIL = Coils(receive_coil_name="BODY", transmit_coil_name="B")
SODIUM_COIL = Coils(receive_coil_name="NA_TXRX_VOLUME", transmit_coil_name="NA_TXRX_VOLUME")


class ExamKind(enum.Enum):
    HEAD_COIL = "head_coil"
    SODIUM = "sodium"


class Contrast(enum.Enum):
    INVERSION_RECOVERY = "inversion_recovery"
    SPIN_ECHO = "spin_echo"
    SODIUM_DENSITY = "sodium_density"


@dataclass(frozen=True)
class SeriesProtocol:
    key: str
    exam: ExamKind
    series_number: int
    description: str
    nucleus: Nucleus
    coils: Coils
    acquisition: AcquisitionParameters
    contrast: Contrast
    fov_mm: tuple[float, float, float]
    """Along the row, column and slice directions."""
    voxel_mm: tuple[float, float, float]
    axes_lps: npt.NDArray[np.float64]
    angulated: bool
    """Planned along the subject's AC-PC line: tilted about the left-right axis."""
    snr: float
    """Signal-to-noise ratio in white matter (1H) of the noise-free image."""
    receive_field_amplitude: float
    minutes_after_exam_start: float
    shot_interval_ms: float = 0.0

    @property
    def imaging_frequency_mhz(self) -> float:
        return SODIUM_FREQUENCY_MHZ if self.nucleus is Nucleus.SODIUM else HYDROGEN_FREQUENCY_MHZ


T1_3D = SeriesProtocol(
    key="t1_3d",
    exam=ExamKind.HEAD_COIL,
    series_number=301,
    description="T1W_3D_TFE",
    nucleus=Nucleus.HYDROGEN,
    coils=HEAD_COIL,
    acquisition=AcquisitionParameters(
        scanning_sequence=("GR", "IR"),
        sequence_variant=("SS", "SP", "MP"),
        scan_options=(),
        mr_acquisition_type="3D",
        sequence_name="T1TFE",
        repetition_time_ms=8.1,
        echo_times_ms=(3.7,),
        inversion_time_ms=1000.0,
        flip_angle_deg=8.0,
        echo_train_length=240,
        pixel_bandwidth_hz=191.0,
        number_of_averages=1.0,
        image_type_philips="FFE",
    ),
    contrast=Contrast.INVERSION_RECOVERY,
    shot_interval_ms=2000.0,
    fov_mm=(240.0, 240.0, 176.0),
    voxel_mm=(1.0, 1.0, 1.0),
    axes_lps=SAGITTAL_AXES_LPS,
    angulated=False,
    snr=40.0,
    receive_field_amplitude=0.15,
    minutes_after_exam_start=3.0,
)

PD_T2_HEAD = SeriesProtocol(
    key="pd_t2_head",
    exam=ExamKind.HEAD_COIL,
    series_number=401,
    description="PD_T2_TSE",
    nucleus=Nucleus.HYDROGEN,
    coils=HEAD_COIL,
    acquisition=AcquisitionParameters(
        scanning_sequence=("SE",),
        sequence_variant=("SK",),
        scan_options=(),
        mr_acquisition_type="2D",
        sequence_name="TSE",
        repetition_time_ms=3500.0,
        echo_times_ms=(19.0, 85.0),
        inversion_time_ms=None,
        flip_angle_deg=90.0,
        echo_train_length=10,
        pixel_bandwidth_hz=217.0,
        number_of_averages=1.0,
        image_type_philips="SE",
    ),
    contrast=Contrast.SPIN_ECHO,
    fov_mm=(230.0, 230.0, 156.0),
    voxel_mm=(1.0, 1.0, 3.0),
    axes_lps=AXIAL_AXES_LPS,
    angulated=True,
    snr=30.0,
    receive_field_amplitude=0.15,
    minutes_after_exam_start=10.0,
)

T1_2D = replace(
    PD_T2_HEAD,
    key="t1_2d",
    series_number=501,
    description="T1W_SE",
    acquisition=replace(
        PD_T2_HEAD.acquisition,
        sequence_name="SE",
        repetition_time_ms=625.0,
        echo_times_ms=(10.0,),
        echo_train_length=1,
    ),
    minutes_after_exam_start=16.0,
)

SODIUM_3D = SeriesProtocol(
    key="sodium",
    exam=ExamKind.SODIUM,
    series_number=601,
    description="Na_3DCONES",
    nucleus=Nucleus.SODIUM,
    coils=SODIUM_COIL,
    acquisition=AcquisitionParameters(
        scanning_sequence=("GR",),
        sequence_variant=("SP",),
        scan_options=(),
        mr_acquisition_type="3D",
        sequence_name="CONES3D",
        repetition_time_ms=50.0,
        echo_times_ms=(0.22,),
        inversion_time_ms=None,
        flip_angle_deg=90.0,
        echo_train_length=1,
        pixel_bandwidth_hz=500.0,
        number_of_averages=4.0,
        image_type_philips="FFE",
    ),
    contrast=Contrast.SODIUM_DENSITY,
    fov_mm=(240.0, 240.0, 180.0),
    voxel_mm=(3.0, 3.0, 3.0),
    axes_lps=AXIAL_AXES_LPS,
    angulated=False,
    snr=8.0,
    receive_field_amplitude=0.10,
    minutes_after_exam_start=3.0,
)

PD_T2_BODY = replace(
    PD_T2_HEAD,
    key="pd_t2_body",
    exam=ExamKind.SODIUM,
    series_number=701,
    description="PD_T2_TSE_BODY",
    coils=BODY_COIL,
    acquisition=replace(
        PD_T2_HEAD.acquisition, repetition_time_ms=3000.0, echo_times_ms=(15.0, 90.0), echo_train_length=8
    ),
    fov_mm=(240.0, 240.0, 180.0),
    voxel_mm=(2.0, 2.0, 5.0),
    angulated=False,
    snr=15.0,
    receive_field_amplitude=0.05,
    minutes_after_exam_start=25.0,
)

PROTOCOL: tuple[SeriesProtocol, ...] = (T1_3D, PD_T2_HEAD, T1_2D, SODIUM_3D, PD_T2_BODY)
