"""Classic MR Image Storage: one file per slice and echo, as a Philips Achieva exports them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import MRImageStorage

from simulator.dicom_common import (
    PHILIPS_PRIVATE_CREATOR,
    derived_uid,
    dicom_date,
    dicom_time,
    new_instance,
)
from simulator.series import EchoImage, Patient, ScannedSeries

BITS_STORED = 12


def philips_image_type(series: ScannedSeries) -> list[str]:
    kind = series.acquisition.image_type_philips
    return ["ORIGINAL", "PRIMARY", f"M_{kind}", "M", kind]


def add_mr_acquisition(dataset: Dataset, series: ScannedSeries) -> None:
    """MR Image module fields that do not depend on the echo or the slice."""
    acq = series.acquisition
    grid = series.grid
    dataset.ScanningSequence = list(acq.scanning_sequence)
    dataset.SequenceVariant = list(acq.sequence_variant)
    dataset.ScanOptions = list(acq.scan_options) if acq.scan_options else ""
    dataset.MRAcquisitionType = acq.mr_acquisition_type
    dataset.SequenceName = acq.sequence_name
    dataset.AngioFlag = "N"
    dataset.RepetitionTime = f"{acq.repetition_time_ms:.4g}"
    if acq.inversion_time_ms is not None:
        dataset.InversionTime = f"{acq.inversion_time_ms:.4g}"
    dataset.EchoTrainLength = acq.echo_train_length
    dataset.NumberOfAverages = f"{acq.number_of_averages:g}"
    dataset.ImagingFrequency = f"{series.imaging_frequency_mhz:.6f}"
    dataset.ImagedNucleus = series.nucleus.value
    dataset.MagneticFieldStrength = 3
    dataset.SpacingBetweenSlices = f"{grid.spacing_ijk_mm[2]:.6g}"
    dataset.NumberOfPhaseEncodingSteps = grid.rows
    dataset.PercentSampling = 100
    dataset.PercentPhaseFieldOfView = 100
    dataset.PixelBandwidth = f"{acq.pixel_bandwidth_hz:.6g}"
    dataset.ReceiveCoilName = series.coils.receive_coil_name
    dataset.TransmitCoilName = series.coils.transmit_coil_name
    dataset.AcquisitionMatrix = [0, grid.columns, grid.rows, 0]
    dataset.InPlanePhaseEncodingDirection = "COL"
    dataset.FlipAngle = f"{acq.flip_angle_deg:g}"
    dataset.PatientWeight = 70


def add_philips_scaling(dataset: Dataset, echo: EchoImage) -> None:
    """Rescale Slope/Intercept (display value) and Philips' private scale slope/intercept."""
    scaling = echo.scaling
    dataset.RescaleIntercept = f"{scaling.rescale_intercept:.8g}"
    dataset.RescaleSlope = f"{scaling.rescale_slope:.8g}"
    dataset.RescaleType = "normalized"
    block = dataset.private_block(0x2005, PHILIPS_PRIVATE_CREATOR, create=True)
    block.add_new(0x0D, "FL", float(scaling.scale_intercept))
    block.add_new(0x0E, "FL", float(scaling.scale_slope))


def classic_instance(
    *,
    patient: Patient,
    series: ScannedSeries,
    echo: EchoImage,
    slice_index: int,
    instance_number: int,
    created: dt.datetime,
) -> FileDataset:
    """One classic MR Image Storage instance: slice ``slice_index`` of ``echo``."""
    grid = series.grid
    sop_instance_uid = derived_uid(series.series_instance_uid, echo.echo_number, slice_index)
    dataset = new_instance(
        sop_class_uid=MRImageStorage,
        sop_instance_uid=sop_instance_uid,
        patient=patient,
        series=series,
        created=created,
    )

    dataset.ImageType = philips_image_type(series)
    dataset.InstanceNumber = instance_number
    dataset.AcquisitionNumber = 1
    dataset.ImagesInAcquisition = grid.n_slices * len(series.echoes)
    dataset.AcquisitionDate = dicom_date(series.acquired)
    dataset.AcquisitionTime = dicom_time(series.acquired)
    dataset.ContentDate = dicom_date(series.acquired)
    dataset.ContentTime = dicom_time(series.acquired)

    position = grid.slice_position_lps(slice_index)
    dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]
    dataset.ImageOrientationPatient = [f"{v:.8f}" for v in grid.image_orientation_patient()]
    dataset.PixelSpacing = [f"{grid.spacing_ijk_mm[1]:.6g}", f"{grid.spacing_ijk_mm[0]:.6g}"]
    dataset.SliceThickness = f"{grid.spacing_ijk_mm[2]:.6g}"
    slice_direction = grid.direction_matrix[:, 2]
    dataset.SliceLocation = f"{float(np.dot(position, slice_direction)):.6f}"

    add_mr_acquisition(dataset, series)
    dataset.EchoTime = f"{echo.echo_time_ms:.4g}"
    dataset.EchoNumbers = echo.echo_number

    pixels = np.ascontiguousarray(echo.stored_kji[slice_index], dtype=np.uint16)
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.BitsAllocated = 16
    dataset.BitsStored = BITS_STORED
    dataset.HighBit = BITS_STORED - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    centre, width = echo.display_window
    dataset.WindowCenter = f"{centre:.6g}"
    dataset.WindowWidth = f"{width:.6g}"
    add_philips_scaling(dataset, echo)
    return dataset


def write_classic_series(
    *, patient: Patient, series: ScannedSeries, folder: Path, created: dt.datetime
) -> list[Path]:
    """Write every slice of every echo; returns the files in instance-number order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    instance_number = 1
    for slice_index in range(series.grid.n_slices):
        for echo in series.echoes:
            dataset = classic_instance(
                patient=patient,
                series=series,
                echo=echo,
                slice_index=slice_index,
                instance_number=instance_number,
                created=created,
            )
            path = folder / f"IM_{instance_number:05d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)
            instance_number += 1
    return paths
