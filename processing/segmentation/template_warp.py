"""A nonlinear refinement of the MNI template's affine registration: symmetric-forces demons.

After the affine (``prior_registration``), the template's ventricles and sulci are still those of a
non-atrophic brain, and its deep-grey nuclei not where the subject's are. Here the template T1,
affinely resampled onto the subject's T1 grid, is registered to the subject's T1 by SimpleITK's
fast symmetric-forces demons at ``BIN_MM`` (both images binned, smoothed, masked to the warped
intracranial volume dilated ``MASK_MARGIN_MM``, the template's histogram matched to the subject's,
so the two contrasts meet), the displacement field smoothed by ``FIELD_SD_MM`` (its
regularisation). The result is a transform from T1 points to the template's: the displacement,
then the affine.
"""

from __future__ import annotations

import logging

import SimpleITK as sitk

log = logging.getLogger(__name__)

BIN_MM = 2
ITERATIONS = 40
FIELD_SD_MM = 2.0
MASK_MARGIN_MM = 4.0
HISTOGRAM_LEVELS = 128
MATCH_POINTS = 7


def refine_with_demons(
    t1: sitk.Image, template: sitk.Image, affine: sitk.Transform, intracranial: sitk.Image
) -> sitk.Transform:
    """``affine`` maps T1 points to template points; ``intracranial`` the warped template mask (0-1)
    on the T1 grid. Returns the composite (displacement, then affine)."""
    voxels = [max(1, round(BIN_MM / spacing)) for spacing in t1.GetSpacing()]
    fixed = sitk.SmoothingRecursiveGaussian(
        sitk.BinShrink(sitk.Cast(t1, sitk.sitkFloat32), voxels), BIN_MM / 2
    )
    moving = sitk.Resample(template, fixed, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = sitk.Resample(intracranial, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32) > 0.5
    radius = [max(1, round(MASK_MARGIN_MM / spacing)) for spacing in fixed.GetSpacing()]
    mask = sitk.Cast(
        sitk.BinaryDilate(sitk.Cast(mask, sitk.sitkUInt8), radius, sitk.sitkBall), sitk.sitkFloat32
    )
    fixed, moving = fixed * mask, moving * mask
    moving = sitk.HistogramMatching(moving, fixed, HISTOGRAM_LEVELS, MATCH_POINTS, True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(ITERATIONS)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(FIELD_SD_MM)
    field = demons.Execute(fixed, moving)
    log.info("demons: %d iterations, RMS change %.3g", demons.GetElapsedIterations(), demons.GetRMSChange())
    displacement = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([affine, displacement])
