"""What the processing pipeline needs to know, as one frozen value (mapped from ``[processing]``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from processing.measurements import PvcMethod
from processing.registration import RegistrationSettings
from sodium_node.config_models import ProcessingConfig


class SegmentationSource(enum.Enum):
    """Where the tissue maps come from (mirrors ``processing.segmentation``)."""

    BUILTIN = "builtin"
    EXTERNAL = "external"


class PsfSource(enum.Enum):
    """Where the PSF width of the tissue maps comes from (mirrors ``processing.psf_source``)."""

    VIALS = "vials"
    """The width the vial fit measures on the session's own image (``Calibration.fitted_psf_fwhm_mm``)."""
    CONFIGURED = "configured"
    """``psf_fwhm_factor`` x the nominal voxel size."""


class ReceiveFieldSource(enum.Enum):
    """How the sodium coil's receive field is corrected (mirrors ``processing.receive_field_correction``)."""

    ESTIMATE = "estimate"
    MAP = "map"
    NONE = "none"


@dataclass(frozen=True)
class ProcessingSettings:
    phantom_concentrations_mM: tuple[float, float] = (40.0, 80.0)
    phantom_erosion_voxels: int = 2
    psf_fwhm_factor: float = 1.6
    """PSF full width at half maximum as a multiple of the sodium image's nominal voxel size: the
    tissue maps' PSF with ``psf_source`` configured, else where the vial fit starts."""
    psf_source: PsfSource = PsfSource.VIALS
    csf_tsc_mM: float = 140.0
    pvc_method: PvcMethod = PvcMethod.GTM
    segmentation: SegmentationSource = SegmentationSource.BUILTIN
    segmentation_command: tuple[str, ...] | None = None
    lesion_dilation_mm: float = 0.0
    receive_field_correction: ReceiveFieldSource = ReceiveFieldSource.NONE
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)


def settings_from_config(config: ProcessingConfig) -> ProcessingSettings:
    registration = config.registration
    return ProcessingSettings(
        phantom_concentrations_mM=(
            float(config.phantom_concentrations_mM[0]),
            float(config.phantom_concentrations_mM[1]),
        ),
        phantom_erosion_voxels=config.phantom_erosion_voxels,
        psf_fwhm_factor=config.psf_fwhm_factor,
        psf_source=PsfSource(config.psf_source.value),
        csf_tsc_mM=config.csf_tsc_mM,
        pvc_method=PvcMethod(config.pvc_method.value),
        segmentation=SegmentationSource(config.segmentation.value),
        segmentation_command=config.segmentation_command,
        lesion_dilation_mm=config.lesion_dilation_mm,
        receive_field_correction=ReceiveFieldSource(config.receive_field_correction.value),
        registration=RegistrationSettings(
            histogram_bins=registration.histogram_bins,
            sampling_fraction=registration.sampling_fraction,
            random_seed=registration.random_seed,
            shrink_factors=tuple(registration.shrink_factors),
            smoothing_sigmas_mm=tuple(registration.smoothing_sigmas_mm),
            max_iterations=registration.max_iterations,
            qc_min_mutual_information=registration.qc_min_mutual_information,
        ),
    )
