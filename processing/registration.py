"""Rigid registration by Mattes mutual information, and the paper's three-step chain to the 3D T1.

Chain (Brownlee et al.): sodium -> body-coil PD (same position, different nucleus), body-coil PD
-> head-coil PD (the coil change: the head moved), head-coil PD -> 3D T1 (same position). Each
step registers a fixed image with a moving image and returns ``fixed_to_moving``; the chain
composes them into ``sodium_to_t1`` and its inverse ``t1_to_sodium``.

Each step: 6 degrees of freedom (Euler), Mattes mutual information, regular-step gradient descent
with scales from physical shifts, multi-resolution (shrink factors and smoothing in mm). Images that
share a frame of reference start from identity (their geometry is already right); others start
from the centres of mass (moments). The mutual information at the final transform (full resolution)
must reach ``qc_min_mutual_information``, or the images have no anatomy in common: the step stops the
chain with a ``RegistrationError`` naming the step and its QC picture (checkerboard and edge overlay).
Above that floor the MI cannot tell a correct registration from one 40 mm off; the verdicts come from
``registration_qc`` (is the transform the metric's optimum, is it a motion a patient makes).
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from processing.qc_pictures import checkerboard, edge_overlay, save_panels
from processing.transforms import RigidTransform, matrix_from_sitk
from processing.volume import Volume
from sodium_node.errors import RegistrationError

log = logging.getLogger(__name__)

LEARNING_RATE = 1.0
"""First step of the optimizer, in mm (scales from physical shift make one unit ~ 1 mm)."""
MIN_STEP = 1e-3
RELAXATION = 0.5
GRADIENT_TOLERANCE = 1e-8


@dataclass(frozen=True)
class RegistrationSettings:
    """``processing.registration`` of the configuration."""

    histogram_bins: int = 50
    sampling_fraction: float = 0.25
    random_seed: int = 1
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    max_iterations: int = 200
    qc_min_mutual_information: float = 0.05


class Initialisation(enum.Enum):
    IDENTITY = "identity"
    """Same frame of reference: the scanner geometry is the starting point."""
    MOMENTS = "moments"
    """Centres of mass (and principal axes' centre) aligned: after the patient moved."""


@dataclass(frozen=True)
class RegistrationStep:
    name: str
    transform: RigidTransform
    """Fixed-space points to moving-space points."""
    initialisation: Initialisation
    mutual_information: float
    """Mattes MI (nats) at the final transform, full resolution."""
    iterations: int
    seconds: float
    qc_picture: Path | None


@dataclass(frozen=True)
class RegistrationChain:
    steps: tuple[RegistrationStep, ...]
    sodium_to_t1: RigidTransform
    t1_to_sodium: RigidTransform
    seconds: float


def _method(settings: RegistrationSettings) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.random_seed)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def mutual_information(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, settings: RegistrationSettings
) -> float:
    """Mattes MI (nats, >= 0) of the two images under ``transform``, at full resolution."""
    method = _method(settings)
    method.SetInitialTransform(transform, inPlace=False)
    return -float(method.MetricEvaluate(fixed, moving))


def _initial(fixed: sitk.Image, moving: sitk.Image, initialisation: Initialisation) -> sitk.Euler3DTransform:
    if initialisation is Initialisation.MOMENTS:
        transform = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        return sitk.Euler3DTransform(transform)
    transform = sitk.Euler3DTransform()
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    transform.SetCenter(centre)
    return transform


def _qc_picture(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, path: Path, title: str, lines: list[str]
) -> Path:
    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    fixed_kji = sitk.GetArrayFromImage(fixed)
    moving_kji = sitk.GetArrayFromImage(resampled)
    panels = []
    k = fixed_kji.shape[0] // 2
    axial_fixed, axial_moving = fixed_kji[k].T, moving_kji[k].T
    panels.append(checkerboard(axial_fixed, axial_moving))
    panels.append(edge_overlay(axial_fixed, axial_moving))
    j = fixed_kji.shape[1] // 2
    coronal_fixed, coronal_moving = fixed_kji[::-1, j, :].T, moving_kji[::-1, j, :].T
    panels.append(edge_overlay(coronal_fixed, coronal_moving))
    return save_panels(panels, path, title=title, lines=lines)


def register_rigid(
    fixed: Volume,
    moving: Volume,
    *,
    name: str,
    settings: RegistrationSettings,
    initialisation: Initialisation,
    qc_picture_path: Path | None = None,
) -> RegistrationStep:
    """Register ``moving`` to ``fixed``; the result maps fixed-space points to moving-space points."""
    start = time.perf_counter()
    if len(settings.shrink_factors) != len(settings.smoothing_sigmas_mm):
        raise RegistrationError(f"{name}: one smoothing sigma per shrink factor is needed")
    fixed_image, moving_image = fixed.to_sitk(), moving.to_sitk()
    method = _method(settings)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=LEARNING_RATE,
        minStep=MIN_STEP,
        numberOfIterations=settings.max_iterations,
        relaxationFactor=RELAXATION,
        gradientMagnitudeTolerance=GRADIENT_TOLERANCE,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(_initial(fixed_image, moving_image, initialisation), inPlace=False)
    iterations = 0

    def count() -> None:
        nonlocal iterations
        iterations += 1

    method.AddCommand(sitk.sitkIterationEvent, count)
    try:
        final = method.Execute(fixed_image, moving_image)
    except RuntimeError as error:
        raise RegistrationError(f"{name}: SimpleITK registration failed: {error}") from error
    information = mutual_information(fixed_image, moving_image, final, settings)
    transform = RigidTransform(matrix_from_sitk(final), fixed.space, moving.space)
    seconds = time.perf_counter() - start
    passed = information >= settings.qc_min_mutual_information
    lines = [
        f"mutual information {information:.3f} nats (QC minimum {settings.qc_min_mutual_information:g})",
        f"{initialisation.value} start, {iterations} iterations, {seconds:.1f} s; "
        f"stop: {method.GetOptimizerStopConditionDescription()[:80]}",
    ]
    picture = None
    if qc_picture_path is not None:
        title = f"{name}: fixed {fixed.space} / moving {moving.space}: {'passed' if passed else 'FAILED'}"
        picture = _qc_picture(fixed_image, moving_image, final, qc_picture_path, title, lines)
    log.info("%s: MI %.3f nats, %d iterations, %.1f s", name, information, iterations, seconds)
    if not passed:
        where = f"; QC picture: {picture}" if picture is not None else ""
        raise RegistrationError(
            f"{name}: registration QC failed: mutual information {information:.3f} nats at the final "
            f"transform is below {settings.qc_min_mutual_information:g} (the images do not overlap "
            f"as the same anatomy){where}"
        )
    return RegistrationStep(name, transform, initialisation, information, iterations, seconds, picture)


def _start(fixed: Volume, moving: Volume) -> Initialisation:
    same = fixed.frame_of_reference_uid and fixed.frame_of_reference_uid == moving.frame_of_reference_uid
    return Initialisation.IDENTITY if same else Initialisation.MOMENTS


def register_chain(
    *,
    sodium: Volume,
    body_pd: Volume,
    head_pd: Volume,
    t1: Volume,
    settings: RegistrationSettings,
    qc_folder: Path | None = None,
) -> RegistrationChain:
    """sodium -> body-coil PD -> head-coil PD -> 3D T1, composed into ``sodium_to_t1``.

    The body- and head-coil PD images are the first (proton density) echoes of the PD/T2 series.
    The coil-change step registers the head-coil PD (fixed: a slab shorter than the body-coil
    field of view) with the body-coil PD (moving: covers the whole head), so every fixed sample
    falls inside the moving image; the other way round, samples outside the slab drag the
    optimizer into local optima (3-6 mm errors in 4 of 10 simulated sessions). It starts from
    moments: the patient left the scanner in between. Its inverse enters the chain.
    """
    start = time.perf_counter()
    sodium, body_pd = sodium.with_space("sodium"), body_pd.with_space("body_pd")
    head_pd, t1 = head_pd.with_space("head_pd"), t1.with_space("t1")
    plan = (
        ("sodium_to_body_pd", sodium, body_pd, _start(sodium, body_pd)),
        ("head_pd_to_body_pd", head_pd, body_pd, Initialisation.MOMENTS),
        ("head_pd_to_t1", head_pd, t1, _start(head_pd, t1)),
    )
    steps = [
        register_rigid(
            fixed,
            moving,
            name=name,
            settings=settings,
            initialisation=initialisation,
            qc_picture_path=None if qc_folder is None else qc_folder / f"{name}.png",
        )
        for name, fixed, moving, initialisation in plan
    ]
    body_pd_to_head_pd = steps[1].transform.inverse()
    sodium_to_t1 = steps[0].transform.then(body_pd_to_head_pd).then(steps[2].transform)
    return RegistrationChain(tuple(steps), sodium_to_t1, sodium_to_t1.inverse(), time.perf_counter() - start)
