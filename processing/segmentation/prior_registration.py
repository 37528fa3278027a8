"""MNI priors onto the subject's 3D T1: an affine registration of the MNI T1 template (SimpleITK).

Fixed: the subject's T1 (whole head), moving: the MNI T1 template; 12 degrees of freedom, Mattes
mutual information, start from the centres of mass, two resolution levels (4 and 2 mm). The QC is
the mutual information at the final transform: a T1 that is not a head (or not a T1) does not
reach ``MIN_MUTUAL_INFORMATION`` and stops the job with a ``SegmentationError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from processing.segmentation.mni_priors import MniPriors
from processing.volume import Volume, volume_from_sitk
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

MIN_MUTUAL_INFORMATION = 0.2
"""Nats. Simulated heads reach ~0.5; a non-head image well below 0.2."""
HISTOGRAM_BINS = 32
SAMPLING_FRACTION = 0.05
RANDOM_SEED = 7
MASK_MARGIN_MM = 4.0


@dataclass(frozen=True)
class PriorsInT1Space:
    grey: Volume
    white: Volume
    intracranial: Volume
    deep_grey_region: Volume
    mutual_information: float


def _method() -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, RANDOM_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _head_mask(priors: MniPriors) -> sitk.Image:
    """The template's intracranial volume and skull (dilated ``MASK_MARGIN_MM``): the scalp differs
    between heads and from the template's, the brain and its outline are what must match."""
    inside = np.asarray(priors.intracranial.data) > 0.05
    distance = ndimage.distance_transform_edt(~inside, sampling=priors.intracranial.voxel_size_mm)
    mask = priors.intracranial.with_data(
        (distance <= MASK_MARGIN_MM).astype(np.float32), scaling=priors.intracranial.scaling, unit="mask"
    )
    image: sitk.Image = sitk.Cast(mask.to_sitk(), sitk.sitkUInt8)
    return image


def register_priors(t1: Volume, priors: MniPriors, *, t1_name: str) -> PriorsInT1Space:
    fixed, moving = t1.to_sitk(), priors.t1.to_sitk()
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = _method()
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=150, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    method.SetMetricMovingMask(_head_mask(priors))
    try:
        transform = method.Execute(fixed, moving)
    except RuntimeError as error:
        raise SegmentationError(f"3D T1 {t1_name}: MNI template registration failed: {error}") from error
    check = _method()
    check.SetInitialTransform(transform, inPlace=False)
    information = -float(check.MetricEvaluate(fixed, moving))
    log.info("MNI template -> %s: mutual information %.3f nats", t1_name, information)
    if not information >= MIN_MUTUAL_INFORMATION:
        raise SegmentationError(
            f"3D T1 {t1_name}: does not match the MNI head template (mutual information "
            f"{information:.3f} nats "
            f"< {MIN_MUTUAL_INFORMATION}): not a T1-weighted image of a head"
        )

    def warp(prior: Volume) -> Volume:
        image = sitk.Resample(prior.to_sitk(), fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return volume_from_sitk(image, like=t1, space="t1", unit="fraction")

    return PriorsInT1Space(
        grey=warp(priors.grey),
        white=warp(priors.white),
        intracranial=warp(priors.intracranial),
        deep_grey_region=warp(priors.deep_grey_region),
        mutual_information=information,
    )


def as_array(volume: Volume) -> npt.NDArray[np.float32]:
    return np.asarray(volume.data, dtype=np.float32)
