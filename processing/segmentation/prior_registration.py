"""MNI priors onto the subject's 3D T1: an affine registration of the MNI T1 template (SimpleITK).

Fixed: the subject's T1 (whole head); moving: the MNI T1 template; Mattes mutual information over
the template's intracranial volume dilated ``MASK_MARGIN_MM`` (the scalp differs between heads and
from the template's; the brain and its outline are what must match). In three stages:

1. a pyramid, built once: both images averaged over 8, 4 and 2 mm bins, then smoothed
   (``SMOOTHING_PER_BIN``). ``ImageRegistrationMethod`` would rebuild it from the 1 mm images (and
   the template's gradient) at every ``Execute``, ~2 s each, which several starts cannot afford;
2. a similarity (rotation, translation, one scale) at 8 then 4 mm from each of ``START_SCALES``,
   centred on the images' centres of mass; the end with the highest mutual information over the
   whole head (no mask) at 4 mm wins. One start from the template's size is not enough: subjects
   are smaller than MNI (the simulator's heads 0.79-0.95 of it linearly), and from scale 1 the
   smallest end with the template's brain on their skull and scalp. Seed 301 (0.80) did: 1451 ml
   warped for a TIV of 1079 ml, mutual information 0.49 instead of ~0.65, and the EM then took the
   scalp in. A start usually reaches the right scale from within ~0.15 of it, not always (seed
   7005 not from 1.15), hence five starts 0.1 apart; on 14 simulated subjects each was reached from
   at least three of them, and ends at a wrong scale had a clearly lower whole-head mutual
   information (<= 0.64 against 0.70-0.77 nats at 4 mm);
3. the affine (12 degrees of freedom) from the winner, at 4 then 2 mm.

The optimiser's first step is set to one bin of the level (``estimateLearningRate=Once``) rather
than a fixed learning rate in parameter units: on the pre-binned images the latter made the
affine's first step collapse the matrix.

The QC is the mutual information at the final transform on the 1 mm images: a T1 that is not a
head (or not a T1) does not reach ``MIN_MUTUAL_INFORMATION`` and stops the job with a
``SegmentationError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from processing.segmentation.mni_priors import MniPriors
from processing.volume import Volume, volume_from_sitk
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

MIN_MUTUAL_INFORMATION = 0.2
"""Nats, on the 1 mm images. Simulated heads reach ~0.6; a non-head image well below 0.2."""
HISTOGRAM_BINS = 32
SAMPLING_FRACTION = 0.05
RANDOM_SEED = 7
MASK_MARGIN_MM = 4.0
START_SCALES = (0.95, 1.05, 1.15, 1.25, 1.35)
"""Isotropic scales of the similarity's starts, subject -> template mm (1.15: a head 0.87 of MNI's);
they cover heads from 1.05 to 0.74 of MNI's linear size, and a margin beyond."""
SIMILARITY_BINS_MM = (8, 4)
AFFINE_BINS_MM = (4, 2)
CHOICE_BIN_MM = 4
SMOOTHING_PER_BIN = 0.6
"""Gaussian sigma after binning, in bins (1.2 mm at the 2 mm level). The scale at which the mutual
information peaks grows with the blur: against 0.6, the warped intracranial volume is -0.5 % at 0.5
and +0.7 % at 0.75 (mean over 12 simulated subjects), and the builtin pipeline's TSC follows it
(seed 11: CGM -2.0 / +2.4 mM). 0.6 gives the volumes of the single-start registration that this
replaced on the subjects it registered well (mean ratio 1.000, -1.1 to +0.8 %), and the same Dice
against the truth (intracranial 0.983, brain 0.982)."""
SIMILARITY_ITERATIONS = 100
AFFINE_ITERATIONS = 150
MIN_STEP = 1e-3


@dataclass(frozen=True)
class PriorsInT1Space:
    grey: Volume
    white: Volume
    intracranial: Volume
    deep_grey_region: Volume
    mutual_information: float


@dataclass(frozen=True)
class _Level:
    """The T1 (fixed) and the template (moving) averaged over ``bin_mm`` bins."""

    bin_mm: int
    t1: sitk.Image
    template: sitk.Image


def _pyramid(t1: sitk.Image, template: sitk.Image, bins_mm: set[int]) -> dict[int, _Level]:
    def binned(image: sitk.Image, bin_mm: int) -> sitk.Image:
        voxels = [max(1, round(bin_mm / spacing_mm)) for spacing_mm in image.GetSpacing()]
        smoothed: sitk.Image = sitk.SmoothingRecursiveGaussian(
            sitk.BinShrink(image, voxels), SMOOTHING_PER_BIN * bin_mm
        )
        return smoothed

    return {size: _Level(size, binned(t1, size), binned(template, size)) for size in bins_mm}


def _metric() -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, RANDOM_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _head_mask(priors: MniPriors) -> sitk.Image:
    """The template's intracranial volume and the inner skull: dilated ``MASK_MARGIN_MM``."""
    inside = sitk.Cast(priors.intracranial.to_sitk() > 0.05, sitk.sitkUInt8)
    radius = [max(1, round(MASK_MARGIN_MM / spacing)) for spacing in inside.GetSpacing()]
    mask: sitk.Image = sitk.BinaryDilate(inside, radius, sitk.sitkBall)
    return mask


def _optimised(
    level: _Level, initial: sitk.Transform, *, mask: sitk.Image, iterations: int, t1_name: str
) -> sitk.Transform:
    method = _metric()
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=MIN_STEP,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        estimateLearningRate=method.Once,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    method.SetMetricMovingMask(mask)
    try:
        result = method.Execute(level.t1, level.template).Downcast()
    except RuntimeError as error:
        raise SegmentationError(
            f"3D T1 {t1_name}: MNI template registration failed at {level.bin_mm} mm: {error}"
        ) from error
    if isinstance(result, sitk.CompositeTransform):
        result = result.GetNthTransform(0).Downcast()
    optimised: sitk.Transform = result
    return optimised


def _mutual_information(t1: sitk.Image, template: sitk.Image, transform: sitk.Transform) -> float:
    """Over the whole head (no mask); the gradient filters are for optimising, not evaluating."""
    check = _metric()
    check.MetricUseFixedImageGradientFilterOff()
    check.MetricUseMovingImageGradientFilterOff()
    check.SetInitialTransform(transform, inPlace=False)
    return -float(check.MetricEvaluate(t1, template))


def _best_similarity(
    pyramid: dict[int, _Level], centred: sitk.Similarity3DTransform, *, mask: sitk.Image, t1_name: str
) -> sitk.Similarity3DTransform:
    ends: list[tuple[float, sitk.Similarity3DTransform]] = []
    for start_scale in START_SCALES:
        transform = sitk.Similarity3DTransform(centred)
        transform.SetScale(start_scale)
        for bin_mm in SIMILARITY_BINS_MM:
            transform = sitk.Similarity3DTransform(
                _optimised(
                    pyramid[bin_mm], transform, mask=mask, iterations=SIMILARITY_ITERATIONS, t1_name=t1_name
                )
            )
        choice = pyramid[CHOICE_BIN_MM]
        information = _mutual_information(choice.t1, choice.template, transform)
        log.debug(
            "%s: similarity from scale %.2f ends at %.3f, mutual information %.3f nats at %d mm",
            t1_name,
            start_scale,
            transform.GetScale(),
            information,
            CHOICE_BIN_MM,
        )
        ends.append((information, transform))
    information, best = max(ends, key=lambda end: end[0])
    log.info("%s: template scale %.3f (of starts %s)", t1_name, best.GetScale(), START_SCALES)
    return best


def _affine_from(similarity: sitk.Similarity3DTransform) -> sitk.AffineTransform:
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    return affine


def register_priors(t1: Volume, priors: MniPriors, *, t1_name: str) -> PriorsInT1Space:
    fixed, moving = t1.to_sitk(), priors.t1.to_sitk()
    mask = _head_mask(priors)
    pyramid = _pyramid(fixed, moving, {*SIMILARITY_BINS_MM, *AFFINE_BINS_MM, CHOICE_BIN_MM})
    centred = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    transform: sitk.Transform = _affine_from(_best_similarity(pyramid, centred, mask=mask, t1_name=t1_name))
    for bin_mm in AFFINE_BINS_MM:
        transform = _optimised(
            pyramid[bin_mm], transform, mask=mask, iterations=AFFINE_ITERATIONS, t1_name=t1_name
        )
    information = _mutual_information(fixed, moving, transform)
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
