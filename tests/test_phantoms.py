"""Vial detection on a synthetic sodium image that holds everything else bright a head can hold.

A 3 mm grid with an ellipsoidal head (brain at 40, scalp at 30), ventricles of CSF (140) inside it,
two eyes (vitreous spheres of 12 mm radius at 140, the brightest things in the image) in front of it,
and two tubes of 40 and 80 mM beside it: one thin and long, one wide, short and tilted by 12 degrees,
neither of the study's size. Blurred by a 4.8 mm FWHM Gaussian, with noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from processing.calibration import calibrate
from processing.phantoms import find_vials
from processing.volume import Scaling, Volume
from sodium_node.errors import CalibrationError

VOXEL_MM = 3.0
SHAPE = (80, 80, 60)
TUBES = (
    # centre (LPS mm), axis, radius, length, concentration
    ((-95.0, -30.0, 0.0), (0.0, 0.0, 1.0), 7.0, 75.0, 40.0),
    ((95.0, 10.0, 5.0), (0.0, np.sin(np.radians(12.0)), np.cos(np.radians(12.0))), 13.0, 45.0, 80.0),
)
EYES = ((-32.0, -85.0, -35.0), (32.0, -85.0, -35.0))
CENTRE_TOLERANCE_MM = 3.0


def _points() -> np.ndarray:
    ijk = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij"), axis=-1)
    return (ijk - (np.array(SHAPE) - 1) / 2.0) * VOXEL_MM


def _tube(
    points: np.ndarray, centre: tuple[float, ...], axis: tuple[float, ...], radius: float, length: float
) -> np.ndarray:
    offset = points - np.array(centre)
    along = offset @ np.array(axis)
    across = np.linalg.norm(offset - along[..., None] * np.array(axis), axis=-1)
    return (across <= radius) & (np.abs(along) <= length / 2.0)


def _image(*, tubes: tuple[tuple, ...] = TUBES, seed: int = 0) -> Volume:
    points = _points()
    tsc = np.zeros(SHAPE)
    head = np.sum((points / np.array([75.0, 95.0, 70.0])) ** 2, axis=-1) <= 1.0
    brain = np.sum((points / np.array([65.0, 85.0, 60.0])) ** 2, axis=-1) <= 1.0
    tsc[head] = 30.0
    tsc[brain] = 40.0
    for side in (-1.0, 1.0):  # lateral ventricles: elongated, bright, inside the brain
        tsc[_tube(points, (side * 12.0, 0.0, 10.0), (0.0, 1.0, 0.0), 6.0, 50.0)] = 140.0
    for eye in EYES:
        tsc[np.linalg.norm(points - np.array(eye), axis=-1) <= 12.0] = 140.0
    for centre, axis, radius, length, concentration in tubes:
        tsc[_tube(points, centre, axis, radius, length)] = concentration
    sigma_voxels = 4.8 / 2.3548 / VOXEL_MM
    signal = ndimage.gaussian_filter(tsc, sigma_voxels) * 10.0
    rng = np.random.default_rng(seed)
    noisy = np.hypot(signal + rng.normal(0, 20.0, SHAPE), rng.normal(0, 20.0, SHAPE))
    affine_lps = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine_lps[:3, 3] = -(np.array(SHAPE) - 1) / 2.0 * VOXEL_MM
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    return Volume(noisy.astype(np.float32), affine_ras, "sodium", scaling=Scaling.PHILIPS_FLOATING)


def test_the_tubes_are_found_not_the_eyes_nor_the_ventricles() -> None:
    vials = find_vials(_image(), count=2, erosion_voxels=2, signal_ratio=2.0)
    assert len(vials) == 2
    found = sorted(vials, key=lambda v: v.shape.centre_lps_mm[0])
    for vial, (centre, _, radius, length, _) in zip(found, TUBES, strict=True):
        np.testing.assert_allclose(vial.shape.centre_lps_mm, centre, atol=CENTRE_TOLERANCE_MM)
        assert vial.shape.diameter_mm == pytest.approx(2 * radius, rel=0.25)
        assert vial.shape.length_mm == pytest.approx(length, rel=0.25)


def test_without_tubes_neither_the_eyes_nor_the_ventricles_are_taken_for_vials() -> None:
    assert find_vials(_image(tubes=()), count=2, erosion_voxels=2, signal_ratio=2.0) == ()


def test_vials_of_one_concentration_cannot_be_told_apart() -> None:
    """Both tubes at 80 mM: the calibration cannot say which is the 40 mM one, and refuses."""
    same = tuple((c, a, r, length, 80.0) for c, a, r, length, _ in TUBES)
    with pytest.raises(CalibrationError, match=r"cannot be told apart by their signal"):
        calibrate(_image(tubes=same), concentrations_mM=(40.0, 80.0), psf_fwhm_mm=4.8)


def test_the_tubes_calibrate_at_their_own_size() -> None:
    calibration = calibrate(_image(), concentrations_mM=(40.0, 80.0), psf_fwhm_mm=4.8)
    for vial, (_, _, radius, length, concentration) in zip(calibration.vials, TUBES, strict=True):
        assert vial.concentration_mM == concentration
        assert vial.fitted_radius_mm == pytest.approx(radius, abs=0.7)
        assert vial.fitted_length_mm == pytest.approx(length, abs=4.0)
    assert calibration.slope_per_mM == pytest.approx(10.0, rel=0.03)
