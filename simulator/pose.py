"""Rigid head poses: where the subject's head sits in the scanner for each exam."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from simulator.geometry import rotation_matrix

FloatArray = npt.NDArray[np.float64]

ROTATION_SD_DEG = 4.0
ROTATION_LIMIT_DEG = 10.0
TRANSLATION_SD_MM = 4.0
TRANSLATION_LIMIT_MM = 10.0


@dataclass(frozen=True)
class HeadPose:
    """Subject space (LPS mm) to scanner space (LPS mm): x_scanner = R (x - head_centre) + t."""

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    head_centre_subject_mm: tuple[float, float, float]

    def subject_to_scanner_lps(self) -> FloatArray:
        rotation = rotation_matrix(self.rotation_deg)
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = np.asarray(self.translation_mm) - rotation @ np.asarray(self.head_centre_subject_mm)
        return matrix

    def scanner_to_subject_transform(self) -> sitk.AffineTransform:
        """The SimpleITK transform that resampling onto a scanner grid needs (output -> input)."""
        inverse = np.linalg.inv(self.subject_to_scanner_lps())
        transform = sitk.AffineTransform(3)
        transform.SetMatrix(inverse[:3, :3].flatten().tolist())
        transform.SetTranslation(inverse[:3, 3].tolist())
        return transform


def draw_pose(rng: np.random.Generator, head_centre_subject_mm: tuple[float, float, float]) -> HeadPose:
    rotation = np.clip(rng.normal(0.0, ROTATION_SD_DEG, 3), -ROTATION_LIMIT_DEG, ROTATION_LIMIT_DEG)
    translation = np.clip(rng.normal(0.0, TRANSLATION_SD_MM, 3), -TRANSLATION_LIMIT_MM, TRANSLATION_LIMIT_MM)
    return HeadPose(
        rotation_deg=(float(rotation[0]), float(rotation[1]), float(rotation[2])),
        translation_mm=(float(translation[0]), float(translation[1]), float(translation[2])),
        head_centre_subject_mm=head_centre_subject_mm,
    )
