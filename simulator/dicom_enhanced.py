"""Enhanced MR Image Storage: one multi-frame file per series, as a Philips Achieva (R5) exports it.

Every slice of every echo is a frame (slice-major, echo-minor, the order of the classic instance
numbers). What varies from frame to frame sits in the Per-frame Functional Groups: position,
dimension indices (in-stack position, effective echo time), echo time, the echo's display scaling
(Pixel Value Transformation) and Philips' floating-point scaling in the private per-frame
sequence (2005,140F), which is where dcm2niix reads the per-frame scale slope of Philips files.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage

from simulator.dicom_classic import BITS_STORED
from simulator.dicom_common import (
    PHILIPS_PRIVATE_CREATOR,
    derived_uid,
    dicom_date,
    dicom_datetime,
    dicom_time,
    new_instance,
)
from simulator.series import AcquisitionParameters, EchoImage, Patient, ScannedSeries

logger = logging.getLogger(__name__)

PHILIPS_PER_FRAME_CREATOR = "Philips MR Imaging DD 005"
"""Private creator of Philips' per-frame sequence (2005,140F): it must own block 0x14 of 2005."""
PHILIPS_PER_FRAME_BLOCK = 0x14
PHILIPS_SCALING_BLOCK = 0x10
"""Philips MR Imaging DD 001 owns block 0x10, so its scale slope lands at (2005,100E)."""
MAGNETIC_FIELD_STRENGTH_T = 3.0
"""The virtual Achieva's field strength, as the classic writer declares it."""
COIL_MANUFACTURER = "Philips"
IMAGE_TYPE = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
"""Enhanced MR Image Type and Frame Type: acquired magnitude volumes, no derived contrast."""
HEAD_CODE = ("69536005", "SCT", "Head")
"""Anatomic Region (CID 4031) of BodyPartExamined HEAD, the only region the simulator images."""
OPERATING_MODE_TYPES = ("STATIC FIELD", "RF", "GRADIENT")
"""IEC 60601-2-33 operating modes: the virtual scanner runs every series in normal mode."""
SAR_HEAD_W_PER_KG = 0.8
"""Declared head SAR of every series. The simulator does not model RF power (a real scanner
reports its own estimate): a nominal value inside the IEC normal-mode head limit of 3.2 W/kg."""


@dataclass(frozen=True)
class FramePlace:
    """Where one frame comes from: a slice of an echo, and its dimension index values."""

    slice_index: int
    echo: EchoImage
    echo_rank: int
    """1-based rank of the echo's time among the series' echo times: its dimension index value."""


def frame_places(series: ScannedSeries) -> list[FramePlace]:
    """Frames in file order: every echo of slice 0, then of slice 1, and so on."""
    echo_times = sorted({echo.echo_time_ms for echo in series.echoes})
    return [
        FramePlace(slice_index=k, echo=echo, echo_rank=echo_times.index(echo.echo_time_ms) + 1)
        for k in range(series.grid.n_slices)
        for echo in series.echoes
    ]


def item(**attributes: object) -> Dataset:
    """A sequence item from keyword attributes (in the order given; pydicom sorts on write)."""
    dataset = Dataset()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def echo_pulse_sequence(acq: AcquisitionParameters) -> str:
    spin = "SE" in acq.scanning_sequence
    gradient = "GR" in acq.scanning_sequence or ("EP" in acq.scanning_sequence and not spin)
    if spin and gradient:
        return "BOTH"
    return "GRADIENT" if gradient else "SPIN"


def acquisition_contrast(acq: AcquisitionParameters) -> str:
    """Acquisition Contrast (0008,9209) from the preparation: inversion time, else proton density.

    Without inversion, the simulator's series are density weighted: short TE sodium and 1H
    localisers; an inversion pulse gives STIR (short TI), T1 weighting or fluid attenuation (long TI).
    """
    inversion_ms = acq.inversion_time_ms
    if inversion_ms is None:
        return "PROTON_DENSITY"
    if inversion_ms < 300.0:
        return "STIR"
    return "FLUID_ATTENUATED" if inversion_ms > 1500.0 else "T1"


def add_image_description(dataset: Dataset, series: ScannedSeries, *, type_keyword: str) -> None:
    """The Common CT/MR Image Description macro, with Image Type or Frame Type."""
    setattr(dataset, type_keyword, list(IMAGE_TYPE))
    dataset.PixelPresentation = "MONOCHROME"
    dataset.VolumetricProperties = "VOLUME"
    dataset.VolumeBasedCalculationTechnique = "NONE"
    dataset.ComplexImageComponent = "MAGNITUDE"
    dataset.AcquisitionContrast = acquisition_contrast(series.acquisition)


def acquisition_duration_s(series: ScannedSeries) -> float:
    """Nominal scan time: TR x phase-encoding lines x averages, over the echo train length."""
    acq = series.acquisition
    grid = series.grid
    lines = grid.rows * (grid.n_slices if acq.mr_acquisition_type == "3D" else 1)
    shots = lines * acq.number_of_averages / max(acq.echo_train_length, 1)
    return acq.repetition_time_ms * shots / 1000.0


def pixel_measures(series: ScannedSeries) -> Dataset:
    spacing = series.grid.spacing_ijk_mm
    return item(
        PixelSpacing=[f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"],
        SliceThickness=f"{spacing[2]:.6g}",
        SpacingBetweenSlices=f"{spacing[2]:.6g}",
    )


def mr_timing(series: ScannedSeries) -> Dataset:
    acq = series.acquisition
    pulse = echo_pulse_sequence(acq)
    return item(
        RepetitionTime=float(acq.repetition_time_ms),
        FlipAngle=float(acq.flip_angle_deg),
        EchoTrainLength=acq.echo_train_length,
        RFEchoTrainLength=acq.echo_train_length if pulse != "GRADIENT" else 0,
        GradientEchoTrainLength=acq.echo_train_length if pulse != "SPIN" else 0,
        SpecificAbsorptionRateSequence=Sequence(
            [item(SpecificAbsorptionRateDefinition="IEC_HEAD", SpecificAbsorptionRateValue=SAR_HEAD_W_PER_KG)]
        ),
        OperatingModeSequence=Sequence(
            [item(OperatingModeType=kind, OperatingMode="IEC_NORMAL") for kind in OPERATING_MODE_TYPES]
        ),
    )


def mr_fov_geometry(series: ScannedSeries) -> Dataset:
    grid = series.grid
    geometry = item(
        InPlanePhaseEncodingDirection="COLUMN",
        MRAcquisitionFrequencyEncodingSteps=grid.columns,
        MRAcquisitionPhaseEncodingStepsInPlane=grid.rows,
        PercentSampling=100.0,
        PercentPhaseFieldOfView=100.0,
    )
    if series.acquisition.mr_acquisition_type == "3D":
        geometry.MRAcquisitionPhaseEncodingStepsOutOfPlane = grid.n_slices
    return geometry


def mr_modifier(acq: AcquisitionParameters) -> Dataset:
    modifier = item(
        InversionRecovery="NO" if acq.inversion_time_ms is None else "YES",
        FlowCompensation="NONE",
        T2Preparation="NO",
        SpectrallySelectedExcitation="NONE",
        SpatialPresaturation="NONE",
        PartialFourier="NO",
        ParallelAcquisition="NO",
    )
    if acq.inversion_time_ms is not None:
        modifier.InversionTimes = [float(acq.inversion_time_ms)]
    if echo_pulse_sequence(acq) != "SPIN":
        modifier.Spoiling = "RF" if "SP" in acq.sequence_variant else "NONE"
    return modifier


def mr_imaging_modifier(series: ScannedSeries) -> Dataset:
    acq = series.acquisition
    return item(
        MagnetizationTransfer="OFF_RESONANCE" if "MTC" in acq.sequence_variant else "NONE",
        BloodSignalNulling="NO",
        Tagging="NONE",
        TransmitterFrequency=float(series.imaging_frequency_mhz),
        PixelBandwidth=float(acq.pixel_bandwidth_hz),
    )


def coil_type(coil_name: str) -> str:
    """BODY for the body coil, else VOLUME: the simulator's head coils enclose the head."""
    return "BODY" if "BODY" in coil_name.upper() else "VOLUME"


def mr_receive_coil(series: ScannedSeries) -> Dataset:
    name = series.coils.receive_coil_name
    return item(
        ReceiveCoilName=name,
        ReceiveCoilManufacturerName=COIL_MANUFACTURER,
        ReceiveCoilType=coil_type(name),
        QuadratureReceiveCoil="YES",
    )


def mr_transmit_coil(series: ScannedSeries) -> Dataset:
    name = series.coils.transmit_coil_name
    return item(
        TransmitCoilName=name,
        TransmitCoilManufacturerName=COIL_MANUFACTURER,
        TransmitCoilType=coil_type(name),
    )


def frame_anatomy() -> Dataset:
    code_value, scheme, meaning = HEAD_CODE
    region = item(CodeValue=code_value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)
    return item(AnatomicRegionSequence=Sequence([region]), FrameLaterality="U")


def shared_functional_groups(series: ScannedSeries) -> Dataset:
    """Everything that is the same for every frame of the series."""
    frame_type = Dataset()
    add_image_description(frame_type, series, type_keyword="FrameType")
    groups = {
        "PixelMeasuresSequence": pixel_measures(series),
        "PlaneOrientationSequence": item(
            ImageOrientationPatient=[f"{v:.8f}" for v in series.grid.image_orientation_patient()]
        ),
        "MRImageFrameTypeSequence": frame_type,
        "MRTimingAndRelatedParametersSequence": mr_timing(series),
        "MRFOVGeometrySequence": mr_fov_geometry(series),
        "MRModifierSequence": mr_modifier(series.acquisition),
        "MRImagingModifierSequence": mr_imaging_modifier(series),
        "MRReceiveCoilSequence": mr_receive_coil(series),
        "MRTransmitCoilSequence": mr_transmit_coil(series),
        "MRAveragesSequence": item(NumberOfAverages=float(series.acquisition.number_of_averages)),
        "FrameAnatomySequence": frame_anatomy(),
    }
    return item(**{keyword: Sequence([group]) for keyword, group in groups.items()})


def philips_per_frame_scaling(echo: EchoImage) -> Dataset:
    """Philips' private per-frame item: (2005,140F) holding scale intercept and slope (FL).

    dcm2niix matches the Philips tags by number, not by creator, so each creator is reserved at
    the block Philips uses rather than at the first free one.
    """
    scaling_item = Dataset()
    scaling_item.add_new((0x2005, PHILIPS_SCALING_BLOCK), "LO", PHILIPS_PRIVATE_CREATOR)
    scaling = scaling_item.private_block(0x2005, PHILIPS_PRIVATE_CREATOR)
    scaling.add_new(0x0D, "FL", float(echo.scaling.scale_intercept))
    scaling.add_new(0x0E, "FL", float(echo.scaling.scale_slope))

    frame_item = Dataset()
    frame_item.add_new((0x2005, PHILIPS_PER_FRAME_BLOCK), "LO", PHILIPS_PER_FRAME_CREATOR)
    per_frame = frame_item.private_block(0x2005, PHILIPS_PER_FRAME_CREATOR)
    per_frame.add_new(0x0F, "SQ", Sequence([scaling_item]))
    return frame_item


def frame_functional_groups(series: ScannedSeries, place: FramePlace) -> Dataset:
    """What varies from frame to frame: position, indices, echo time and the echo's scalings."""
    scaling = place.echo.scaling
    centre, width = place.echo.display_window
    content = item(
        FrameAcquisitionNumber=1,
        FrameReferenceDateTime=dicom_datetime(series.acquired),
        FrameAcquisitionDateTime=dicom_datetime(series.acquired),
        FrameAcquisitionDuration=acquisition_duration_s(series) * 1000.0,
        DimensionIndexValues=[place.slice_index + 1, place.echo_rank],
        StackID="1",
        InStackPositionNumber=place.slice_index + 1,
    )
    position = series.grid.slice_position_lps(place.slice_index)
    frame = item(
        FrameContentSequence=Sequence([content]),
        PlanePositionSequence=Sequence([item(ImagePositionPatient=[f"{v:.6f}" for v in position])]),
        MREchoSequence=Sequence([item(EffectiveEchoTime=float(place.echo.echo_time_ms))]),
        PixelValueTransformationSequence=Sequence(
            [
                item(
                    RescaleIntercept=f"{scaling.rescale_intercept:.8g}",
                    RescaleSlope=f"{scaling.rescale_slope:.8g}",
                    RescaleType="normalized",
                )
            ]
        ),
        FrameVOILUTSequence=Sequence([item(WindowCenter=f"{centre:.6g}", WindowWidth=f"{width:.6g}")]),
    )
    frame.update(philips_per_frame_scaling(place.echo))
    return frame


def add_multiframe_dimension(dataset: Dataset, series: ScannedSeries) -> None:
    """Two dimensions: in-stack position (fastest) and effective echo time."""
    organization_uid = derived_uid(series.series_instance_uid, "dimension-organization")
    dataset.DimensionOrganizationSequence = Sequence([item(DimensionOrganizationUID=organization_uid)])
    dimensions = [
        ("InStackPositionNumber", "FrameContentSequence", "In-Stack Position"),
        ("EffectiveEchoTime", "MREchoSequence", "Effective Echo Time"),
    ]
    dataset.DimensionIndexSequence = Sequence(
        [
            item(
                DimensionOrganizationUID=organization_uid,
                DimensionIndexPointer=tag_for_keyword(index_keyword),
                FunctionalGroupPointer=tag_for_keyword(group_keyword),
                DimensionDescriptionLabel=label,
            )
            for index_keyword, group_keyword, label in dimensions
        ]
    )


def add_enhanced_mr_image(dataset: Dataset, series: ScannedSeries) -> None:
    """Enhanced MR Image module, plus the classic nucleus/frequency fields that Philips keeps."""
    add_image_description(dataset, series, type_keyword="ImageType")
    dataset.AcquisitionNumber = 1
    dataset.AcquisitionDateTime = dicom_datetime(series.acquired)
    dataset.AcquisitionDuration = acquisition_duration_s(series)
    dataset.ContentQualification = "PRODUCT"
    dataset.ResonantNucleus = series.nucleus.value
    dataset.KSpaceFiltering = "NONE"
    dataset.MagneticFieldStrength = MAGNETIC_FIELD_STRENGTH_T
    dataset.ApplicableSafetyStandardAgency = "IEC"
    dataset.BurnedInAnnotation = "NO"
    dataset.LossyImageCompression = "00"
    dataset.PresentationLUTShape = "IDENTITY"
    dataset.ImagingFrequency = f"{series.imaging_frequency_mhz:.6f}"
    dataset.ImagedNucleus = series.nucleus.value


def add_mr_pulse_sequence(dataset: Dataset, acq: AcquisitionParameters) -> None:
    """MR Pulse Sequence module, derived from the classic sequence header fields."""
    pulse = echo_pulse_sequence(acq)
    dataset.PulseSequenceName = acq.sequence_name
    dataset.MRAcquisitionType = acq.mr_acquisition_type
    dataset.EchoPulseSequence = pulse
    if pulse != "GRADIENT":
        dataset.MultipleSpinEcho = "YES" if acq.echo_train_length > 1 else "NO"
    dataset.MultiPlanarExcitation = "NO"
    dataset.PhaseContrast = "NO"
    dataset.TimeOfFlightContrast = "NO"
    dataset.SteadyStatePulseSequence = "FREE_PRECESSION" if "SS" in acq.sequence_variant else "NONE"
    dataset.EchoPlanarPulseSequence = "YES" if "EP" in acq.scanning_sequence else "NO"
    dataset.SaturationRecovery = "NO"
    dataset.SpectrallySelectedSuppression = "FAT" if "FS" in acq.scan_options else "NONE"
    dataset.OversamplingPhase = "NONE"
    dataset.GeometryOfKSpaceTraversal = "RECTILINEAR"
    dataset.RectilinearPhaseEncodeReordering = "LINEAR"
    segmented = (pulse != "GRADIENT" and acq.echo_train_length > 1) or "EP" in acq.scanning_sequence
    dataset.SegmentedKSpaceTraversal = "PARTIAL" if segmented else "SINGLE"
    dataset.NumberOfKSpaceTrajectories = 1
    if acq.mr_acquisition_type == "3D":
        dataset.CoverageOfKSpace = "FULL"


def add_pixel_data(dataset: Dataset, series: ScannedSeries, places: list[FramePlace]) -> None:
    frames = np.stack([place.echo.stored_kji[place.slice_index] for place in places])
    pixels = np.ascontiguousarray(frames, dtype=np.uint16)
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.NumberOfFrames = len(places)
    dataset.Rows = series.grid.rows
    dataset.Columns = series.grid.columns
    dataset.BitsAllocated = 16
    dataset.BitsStored = BITS_STORED
    dataset.HighBit = BITS_STORED - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()


def enhanced_instance(*, patient: Patient, series: ScannedSeries, created: dt.datetime) -> FileDataset:
    """The whole series as one Enhanced MR Image Storage instance."""
    sop_instance_uid = derived_uid(series.series_instance_uid, "enhanced-mr")
    dataset = new_instance(
        sop_class_uid=EnhancedMRImageStorage,
        sop_instance_uid=sop_instance_uid,
        patient=patient,
        series=series,
        created=created,
    )
    dataset.InstanceNumber = 1
    dataset.ContentDate = dicom_date(series.acquired)
    dataset.ContentTime = dicom_time(series.acquired)
    dataset.AcquisitionContextSequence = Sequence()
    add_enhanced_mr_image(dataset, series)
    add_mr_pulse_sequence(dataset, series.acquisition)
    add_multiframe_dimension(dataset, series)

    places = frame_places(series)
    dataset.SharedFunctionalGroupsSequence = Sequence([shared_functional_groups(series)])
    dataset.PerFrameFunctionalGroupsSequence = Sequence(
        [frame_functional_groups(series, place) for place in places]
    )
    add_pixel_data(dataset, series, places)
    return dataset


def write_enhanced_series(
    *, patient: Patient, series: ScannedSeries, folder: Path, created: dt.datetime
) -> list[Path]:
    """Write the series as one multi-frame file; returns it as a one-element list."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = enhanced_instance(patient=patient, series=series, created=created)
    path = folder / "IM_00001.dcm"
    dataset.save_as(path, enforce_file_format=True)
    logger.debug("wrote %s: series %s, %d frames", path, series.key, dataset.NumberOfFrames)
    return [path]
