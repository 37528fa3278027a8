"""The files of one session, by what they are for: the pipeline's input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SessionSeries:
    """DICOM files per role (one series each), plus optional NIfTI inputs from the import folder."""

    sodium: tuple[Path, ...]
    body_coil_pdt2: tuple[Path, ...]
    head_coil_pdt2: tuple[Path, ...]
    t1_3d: tuple[Path, ...]
    lesion_seg: tuple[Path, ...] = ()
    """The site's WM-lesion DICOM Segmentation on the 3D T1 (none for healthy controls)."""
    lesion_mask_nifti: Path | None = None
    """Alternatively, a T2-lesion mask as NIfTI on the 3D-T1 grid."""
    segmentation_folder: Path | None = None
    """External tissue maps already computed, in a format ``segmentation.external_formats``
    recognises; used when segmentation is external (before any command)."""
    receive_field_nifti: Path | None = None
    """Relative receive sensitivity on the sodium grid, for ``receive_field_correction``."""

    def dicom_inputs(self) -> dict[str, tuple[Path, ...]]:
        return {
            "sodium": self.sodium,
            "body_coil_pdt2": self.body_coil_pdt2,
            "head_coil_pdt2": self.head_coil_pdt2,
            "t1_3d": self.t1_3d,
            "lesion_seg": self.lesion_seg,
        }
