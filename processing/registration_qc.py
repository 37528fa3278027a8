"""Quality control of a registration step: is the transform found the metric's optimum, and is it a
motion a patient can make?

The mutual information at the final transform says whether the two images show the same anatomy, not
whether they are aligned: deliberate misregistrations of the sodium -> body-coil PD step by 10 to 40 mm
still gave 0.34 to 0.14 nats, far above any limit that a correct registration of another session always
passes (issue 13). Two checks replace it as the verdict (the MI floor stays a refusal: below it the
images have no anatomy in common, ``registration``):

- **Optimality** (``optimality``): the metric at the transform found against its 12 neighbours, the
  transform moved by +-``NEIGHBOUR_MM`` along each axis and turned by +-``NEIGHBOUR_DEG`` about each axis
  through the fixed image's centre. At a converged registration every neighbour scores lower; a
  transform a few mm or degrees off has a neighbour towards the optimum that scores higher. The figure
  of merit is the largest relative gain of a neighbour, ``(MI_neighbour - MI) / MI``: negative at an
  optimum. It cannot see a registration caught in a distant local optimum; the plausibility check and
  the QC picture are there for that.
- **Plausibility** (``motion``): the largest displacement the transform gives a point of a head-sized
  sphere (``HEAD_RADIUS_MM``) around the fixed image's centre, in mm: translation and rotation in one
  number. Series of one coil session share the patient's position (a few mm of motion); a coil change
  moves the head by some centimetres and degrees, not 20 cm.

Limits: ``docs/processing.md`` (Quality control) gives the faults they were measured on.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from processing.registration import RegistrationSettings, mutual_information
from processing.transforms import FloatArray, RigidTransform
from processing.volume import Volume

NEIGHBOUR_MM = 2.0
NEIGHBOUR_DEG = 2.0
HEAD_RADIUS_MM = 90.0
"""Half the length of an adult head: the largest displacement is measured over this sphere."""


class StepKind(enum.Enum):
    """What the patient can have done between the two series of a registration step."""

    SAME_POSITION = "same_position"
    """Same coil, same table position (sodium -> body-coil PD, head-coil PD -> 3D T1)."""
    COIL_CHANGE = "coil_change"
    """The patient left the scanner in between (body-coil PD -> head-coil PD)."""


@dataclass(frozen=True)
class Optimality:
    mutual_information: float
    """Mattes MI (nats) at the transform."""
    best_neighbour_gain: float
    """Largest (MI_neighbour - MI) / MI over the 12 neighbours: < 0 at an optimum."""
    best_neighbour: str
    """Which neighbour scored best, e.g. ``+x 2 mm`` or ``-rz 2 deg``."""


@dataclass(frozen=True)
class Motion:
    translation_mm: float
    """How far the fixed image's centre moves."""
    rotation_deg: float
    """The rotation's angle about its axis."""
    max_displacement_mm: float
    """The largest displacement of a point within ``HEAD_RADIUS_MM`` of the fixed image's centre."""


def image_centre_lps(volume: Volume) -> FloatArray:
    """The centre of ``volume``'s grid in LPS mm."""
    index = (np.asarray(volume.shape, dtype=np.float64) - 1.0) / 2.0
    return np.asarray(volume.affine_lps[:3, :3] @ index + volume.affine_lps[:3, 3])


def rigid_motion(
    *, rotation_deg: Sequence[float], translation_mm: Sequence[float], centre: FloatArray
) -> FloatArray:
    """4 x 4 LPS matrix of a rotation (Euler angles about x, y, z, SimpleITK's convention) about
    ``centre`` followed by a translation."""
    euler = sitk.Euler3DTransform()
    euler.SetCenter([float(v) for v in centre])
    euler.SetRotation(*[float(np.deg2rad(a)) for a in rotation_deg])
    euler.SetTranslation([float(v) for v in translation_mm])
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(euler.GetMatrix()).reshape(3, 3)
    matrix[:3, 3] = np.asarray(euler.TransformPoint([0.0, 0.0, 0.0]))
    return matrix


def perturbed(transform: RigidTransform, motion_in_source_lps: FloatArray) -> RigidTransform:
    """``transform`` applied after a motion of the source (fixed) space: the misregistration that
    moving the fixed image by ``motion_in_source_lps`` would have caused."""
    return RigidTransform(transform.matrix_lps @ motion_in_source_lps, transform.source, transform.target)


def _neighbours(centre: FloatArray) -> list[tuple[str, FloatArray]]:
    neighbours = []
    for axis, name in enumerate("xyz"):
        for sign in (1.0, -1.0):
            shift = [0.0, 0.0, 0.0]
            shift[axis] = sign * NEIGHBOUR_MM
            label = f"{'+' if sign > 0 else '-'}{name} {NEIGHBOUR_MM:g} mm"
            neighbours.append(
                (label, rigid_motion(rotation_deg=(0, 0, 0), translation_mm=shift, centre=centre))
            )
            angles = [0.0, 0.0, 0.0]
            angles[axis] = sign * NEIGHBOUR_DEG
            label = f"{'+' if sign > 0 else '-'}r{name} {NEIGHBOUR_DEG:g} deg"
            neighbours.append(
                (label, rigid_motion(rotation_deg=angles, translation_mm=(0, 0, 0), centre=centre))
            )
    return neighbours


def optimality(
    fixed: Volume, moving: Volume, transform: RigidTransform, settings: RegistrationSettings
) -> Optimality:
    """The metric at ``transform`` (fixed -> moving points) and at its 12 neighbours; module doc."""
    fixed_image, moving_image = fixed.to_sitk(), moving.to_sitk()
    at_transform = mutual_information(fixed_image, moving_image, transform.to_sitk(), settings)
    best_gain, best_name = -np.inf, ""
    for name, motion in _neighbours(image_centre_lps(fixed)):
        value = mutual_information(
            fixed_image, moving_image, perturbed(transform, motion).to_sitk(), settings
        )
        gain = (value - at_transform) / max(abs(at_transform), 1e-12)
        if gain > best_gain:
            best_gain, best_name = gain, name
    return Optimality(at_transform, float(best_gain), best_name)


def motion(transform: RigidTransform, *, centre: FloatArray) -> Motion:
    """How far ``transform`` moves the head around ``centre`` (LPS mm); module doc."""
    rotation, translation = transform.matrix_lps[:3, :3], transform.matrix_lps[:3, 3]
    moved_centre = rotation @ centre + translation
    shift = moved_centre - centre
    cosine = float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))
    angle = float(np.arccos(cosine))
    # A point centre + r u moves by shift + (R - I) r u; its largest norm over |u| <= 1 is bounded by
    # |shift| + r |R - I| (spectral norm 2 sin(angle / 2)): sampled on the sphere, that bound is reached.
    directions = _sphere_directions()
    displacements = shift[None, :] + HEAD_RADIUS_MM * directions @ (rotation - np.eye(3)).T
    return Motion(
        translation_mm=float(np.linalg.norm(shift)),
        rotation_deg=float(np.rad2deg(angle)),
        max_displacement_mm=float(np.max(np.linalg.norm(displacements, axis=1))),
    )


def _sphere_directions(count: int = 400) -> FloatArray:
    """Nearly uniform unit vectors (a Fibonacci sphere)."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * index / count)
    azimuth = np.pi * (1.0 + 5.0**0.5) * index
    return np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1)


STEP_KINDS = {
    "sodium_to_body_pd": StepKind.SAME_POSITION,
    "head_pd_to_body_pd": StepKind.COIL_CHANGE,
    "head_pd_to_t1": StepKind.SAME_POSITION,
}
"""The steps of ``registration.register_chain`` and what the patient can have done between their series."""


@dataclass(frozen=True)
class ChainQuality:
    """Per step of the chain, in its order: the optimality of the transform found and its motion."""

    optimality: tuple[Optimality, ...]
    motions: tuple[tuple[StepKind, Motion], ...]


def chain_quality(
    steps: Sequence[tuple[str, Volume, Volume, RigidTransform]], settings: RegistrationSettings
) -> ChainQuality:
    """``steps``: each step's name, fixed and moving volume and the transform found (fixed -> moving)."""
    return ChainQuality(
        optimality=tuple(
            optimality(fixed, moving, transform, settings) for _, fixed, moving, transform in steps
        ),
        motions=tuple(
            (STEP_KINDS[name], motion(transform, centre=image_centre_lps(fixed)))
            for name, fixed, _, transform in steps
        ),
    )
