"""Small synthetic scanned series for writer and loader tests: known geometry, pixels and scaling."""

from __future__ import annotations

import datetime as dt

import numpy as np

from simulator.dicom_common import derived_uid
from simulator.geometry import VolumeGrid, centred_grid, rotation_matrix
from simulator.series import (
    AcquisitionParameters,
    Coils,
    EchoImage,
    Exam,
    Nucleus,
    Patient,
    PhilipsScaling,
    ScannedSeries,
)

ACQUIRED = dt.datetime(2024, 3, 14, 9, 26, 53, 589000)
CREATED = dt.datetime(2024, 3, 14, 9, 41, 2, 0)
MAX_STORED = 4095
"""Largest 12-bit stored value, as the classic and enhanced writers declare Bits Stored 12."""

DUAL_ECHO_SCALINGS: tuple[PhilipsScaling, ...] = (
    PhilipsScaling(rescale_slope=1.21587301587302, rescale_intercept=0.0, scale_slope=0.00372539),
    PhilipsScaling(rescale_slope=2.56410256410256, rescale_intercept=-102.5, scale_slope=0.0141875),
)
"""Two echoes with different display and floating scalings, one with a non-zero intercept."""


def synthetic_patient() -> Patient:
    return Patient(
        name="Synthetic^Sodium",
        patient_id="SYN-0001",
        issuer_of_patient_id="SODIUM-NODE-TEST",
        birth_date="19800101",
        sex="O",
    )


def synthetic_exam() -> Exam:
    return Exam(
        study_instance_uid=derived_uid("synthetic", "study"),
        study_id="1",
        accession_number="ACC0001",
        study_description="Synthetic sodium test",
        frame_of_reference_uid=derived_uid("synthetic", "frame-of-reference"),
        start=ACQUIRED - dt.timedelta(minutes=10),
    )


def oblique_grid(
    *,
    columns: int = 32,
    rows: int = 24,
    n_slices: int = 6,
    spacing_ijk_mm: tuple[float, float, float] = (3.5, 4.0, 5.0),
    angles_deg: tuple[float, float, float] = (12.0, -17.0, 23.0),
    centre_lps_mm: tuple[float, float, float] = (4.5, -11.25, 20.0),
) -> VolumeGrid:
    """A grid rotated about all three axes, off-centre, with three different spacings."""
    fov_mm = (columns * spacing_ijk_mm[0], rows * spacing_ijk_mm[1], n_slices * spacing_ijk_mm[2])
    return centred_grid(
        fov_mm=fov_mm,
        spacing_ijk_mm=spacing_ijk_mm,
        axes_lps=rotation_matrix(angles_deg),
        centre_lps_mm=centre_lps_mm,
    )


def dual_echo_acquisition(echo_times_ms: tuple[float, ...]) -> AcquisitionParameters:
    return AcquisitionParameters(
        scanning_sequence=("GR",),
        sequence_variant=("SP",),
        scan_options=(),
        mr_acquisition_type="3D",
        sequence_name="T1FFE",
        repetition_time_ms=100.0,
        echo_times_ms=echo_times_ms,
        inversion_time_ms=None,
        flip_angle_deg=80.0,
        echo_train_length=len(echo_times_ms),
        pixel_bandwidth_hz=434.0,
        number_of_averages=4.0,
        image_type_philips="FFE",
    )


def random_echoes(
    *,
    grid: VolumeGrid,
    echo_times_ms: tuple[float, ...],
    scalings: tuple[PhilipsScaling, ...],
    seed: int = 20240314,
) -> tuple[EchoImage, ...]:
    """Independent uniform random 12-bit pixels per echo, so any flip or swap of axes shows up."""
    rng = np.random.default_rng(seed)
    return tuple(
        EchoImage(
            echo_number=number,
            echo_time_ms=echo_time_ms,
            stored_kji=rng.integers(0, MAX_STORED + 1, size=grid.shape_kji, dtype=np.uint16),
            scaling=scaling,
        )
        for number, (echo_time_ms, scaling) in enumerate(zip(echo_times_ms, scalings, strict=True), start=1)
    )


def dual_echo_sodium_series(
    *,
    grid: VolumeGrid | None = None,
    echo_times_ms: tuple[float, float] = (0.5, 5.0),
    scalings: tuple[PhilipsScaling, ...] = DUAL_ECHO_SCALINGS,
) -> ScannedSeries:
    """A dual-echo 3D sodium series on an oblique grid (32 x 24 pixels, 6 slices by default)."""
    grid = oblique_grid() if grid is None else grid
    return ScannedSeries(
        key="sodium_dual_echo",
        exam=synthetic_exam(),
        series_instance_uid=derived_uid("synthetic", "series", "sodium_dual_echo"),
        series_number=501,
        series_description="Na 3D dual echo",
        protocol_name="WIP Na_3D_DE",
        nucleus=Nucleus.SODIUM,
        imaging_frequency_mhz=33.786,
        coils=Coils(receive_coil_name="Na-H HEAD", transmit_coil_name="Na-H HEAD"),
        acquisition=dual_echo_acquisition(echo_times_ms),
        grid=grid,
        echoes=random_echoes(grid=grid, echo_times_ms=echo_times_ms, scalings=scalings),
        acquired=ACQUIRED,
    )
