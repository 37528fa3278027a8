"""Each QC check gives its verdicts on deliberate faults of a simulated session (the shared classic
session of conftest), and a clean session passes. The faults are put into the inputs of one check at a
time (a perturbed transform, noise added to the sodium image, tissue maps without CSF, a moved field of
view) and the check's metric is recomputed: no fault re-runs the pipeline. The limits and the values
they were measured at are in docs/processing.md (Quality control); ``bench/qc_faults.py`` prints them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from processing.calibration import Calibration, calibrate
from processing.dicom_series import load_series
from processing.head_sharpness import FWHM_PER_SIGMA, extra_blur_fwhm_mm
from processing.measurements import QualityCheck, Verdict
from processing.nifti_io import read_volume
from processing.pipeline import fov_coverage
from processing.psf_resampling import resample_masks_to_sodium
from processing.quality import (
    REGISTRATION_GAIN,
    calibration_checks,
    fov_check,
    head_sharpness_check,
    motion_check,
    optimality_check,
    receive_field_check,
    volume_checks,
)
from processing.receive_field import VialReference, estimate_receive_field
from processing.registration import RegistrationSettings
from processing.registration_qc import (
    StepKind,
    image_centre_lps,
    motion,
    optimality,
    perturbed,
    rigid_motion,
)
from processing.segmentation.tissue_maps import TissueMaps, brain_volumes, compartments
from processing.transforms import RigidTransform
from processing.volume import Scaling, Volume
from simulator.physics import add_rician_noise
from simulator.session import SimulatedSession
from sodium_node.errors import CalibrationError

PSF_FWHM_MM = 1.6 * 3.0
"""The study acquisition's PSF: 1.6 x the sodium image's 3 mm voxels."""


@pytest.fixture(scope="module")
def sodium(classic_session: SimulatedSession) -> Volume:
    return load_series(classic_session.series_files["sodium"]).echo(1)


@pytest.fixture(scope="module")
def clean_calibration(sodium: Volume) -> Calibration:
    return calibrate(sodium, concentrations_mM=(40.0, 80.0), psf_fwhm_mm=PSF_FWHM_MM)


def _verdict(check: QualityCheck, expected: Verdict) -> None:
    assert check.verdict is expected, check
    assert (check.note == "") == (expected is Verdict.PASS), check


# --- registration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "rotation_deg", "translation_mm", "expected"),
    [
        ("found", (0, 0, 0), (0, 0, 0), Verdict.PASS),
        ("5 mm along x", (0, 0, 0), (5, 0, 0), Verdict.FAIL),
        ("10 mm along z", (0, 0, 0), (0, 0, 10), Verdict.FAIL),
        ("40 mm along x", (0, 0, 0), (40, 0, 0), Verdict.FAIL),
        ("5 deg about z", (0, 0, 5), (0, 0, 0), Verdict.FAIL),
        ("10 deg about x", (10, 0, 0), (0, 0, 0), Verdict.FAIL),
    ],
)
def test_registration_optimality_sees_misregistrations(
    classic_session: SimulatedSession,
    sodium: Volume,
    fault: str,
    rotation_deg: tuple[float, float, float],
    translation_mm: tuple[float, float, float],
    expected: Verdict,
) -> None:
    """Sodium -> body-coil PD, whose true transform is the identity (one exam, one position): the
    metric at the truth passes, and the truth moved by 5-40 mm or 5-10 deg fails (the Mattes MI
    alone still read 0.10-0.35 nats there, all above its 0.05 floor)."""
    body_pd = load_series(classic_session.series_files["pd_t2_body"]).echo(1)
    truth = RigidTransform(np.eye(4), "sodium", "body_pd")
    fault_motion = rigid_motion(
        rotation_deg=rotation_deg, translation_mm=translation_mm, centre=image_centre_lps(sodium)
    )
    transform = perturbed(truth, fault_motion)
    best = optimality(sodium, body_pd, transform, RegistrationSettings())
    moved = motion(transform, centre=image_centre_lps(sodium))
    optimum_check = optimality_check("sodium_to_body_pd", best, picture=None)
    print(
        f"{fault}: moves the head by up to {moved.max_displacement_mm:.1f} mm; MI "
        f"{best.mutual_information:.3f}, best neighbour gain {best.best_neighbour_gain:+.4f}"
    )
    _verdict(optimum_check, expected)
    if expected is Verdict.PASS:
        assert best.best_neighbour_gain <= REGISTRATION_GAIN.warn


def test_transform_plausibility(classic_session: SimulatedSession) -> None:
    """The coil change the simulator made passes; the same transform 20 cm off fails; within one coil
    session, 10 mm warns and 20 mm (or 15 deg) fails."""
    head_pd = load_series(classic_session.series_files["pd_t2_head"]).echo(1)
    centre = image_centre_lps(head_pd)
    coil_change = RigidTransform(
        np.array(classic_session.ground_truth["t1_to_sodium_scanner_lps"]), "head_pd", "body_pd"
    )

    def verdict(kind: StepKind, transform: RigidTransform) -> Verdict:
        check = motion_check("step", kind, motion(transform, centre=centre))
        assert (check.note == "") == (check.verdict is Verdict.PASS)
        return check.verdict

    def moved(
        transform: RigidTransform, *, rotation_deg: float = 0.0, shift_mm: float = 0.0
    ) -> RigidTransform:
        return perturbed(
            transform,
            rigid_motion(rotation_deg=(0, 0, rotation_deg), translation_mm=(shift_mm, 0, 0), centre=centre),
        )

    identity = RigidTransform(np.eye(4), "head_pd", "t1")
    assert verdict(StepKind.COIL_CHANGE, coil_change) is Verdict.PASS
    assert verdict(StepKind.COIL_CHANGE, moved(coil_change, shift_mm=200.0)) is Verdict.FAIL
    assert verdict(StepKind.SAME_POSITION, identity) is Verdict.PASS
    assert verdict(StepKind.SAME_POSITION, moved(identity, shift_mm=10.0)) is Verdict.WARN
    assert verdict(StepKind.SAME_POSITION, moved(identity, shift_mm=20.0)) is Verdict.FAIL
    assert verdict(StepKind.SAME_POSITION, moved(identity, rotation_deg=15.0)) is Verdict.FAIL
    assert motion(moved(identity, shift_mm=20.0), centre=centre).max_displacement_mm == pytest.approx(20.0)


# --- calibration -----------------------------------------------------------------------------------


def _noisier(sodium: Volume, *, sigma: float, total_over_original: float) -> Volume:
    """``sodium`` with Rician noise added until its noise SD is ``total_over_original`` x ``sigma``."""
    extra = sigma * (total_over_original**2 - 1.0) ** 0.5
    data = add_rician_noise(np.random.default_rng(5), np.asarray(sodium.data, np.float32), sigma=extra)
    return sodium.with_data(data, scaling=sodium.scaling, unit=sodium.unit)


def test_clean_calibration_passes(clean_calibration: Calibration) -> None:
    offset, snr = calibration_checks(clean_calibration, picture=None)
    _verdict(offset, Verdict.PASS)
    _verdict(snr, Verdict.PASS)
    print(f"clean: zero offset {offset.metric_value:.2f} mM, lowest vial SNR {snr.metric_value:.2f}")


def test_swapped_vials_warn(sodium: Volume) -> None:
    swapped = calibrate(sodium, concentrations_mM=(80.0, 40.0), psf_fwhm_mm=PSF_FWHM_MM)
    offset, _ = calibration_checks(swapped, picture=None)
    _verdict(offset, Verdict.WARN)
    assert "configured the other way round" in offset.note


@pytest.mark.parametrize(("noise_factor", "expected"), [(1.7, Verdict.WARN), (2.5, Verdict.FAIL)])
def test_low_snr_vials(
    sodium: Volume, clean_calibration: Calibration, noise_factor: float, expected: Verdict
) -> None:
    noisy = _noisier(sodium, sigma=clean_calibration.noise_sigma, total_over_original=noise_factor)
    _, snr = calibration_checks(
        calibrate(noisy, concentrations_mM=(40.0, 80.0), psf_fwhm_mm=PSF_FWHM_MM), picture=None
    )
    print(f"noise x{noise_factor}: lowest vial SNR {snr.metric_value:.2f}")
    _verdict(snr, expected)


def _vial_scaled(sodium: Volume, calibration: Calibration, scale: float) -> Volume:
    region = ndimage.binary_dilation(calibration.vial_rois[1], iterations=6)
    data = np.where(region, scale * np.asarray(sodium.data), sodium.data)
    return sodium.with_data(data, scaling=sodium.scaling, unit=sodium.unit)


@pytest.mark.parametrize(("scale", "expected"), [(0.95, Verdict.WARN), (0.9, Verdict.FAIL)])
def test_a_vial_off_its_concentration_moves_the_zero(
    sodium: Volume, clean_calibration: Calibration, scale: float, expected: Verdict
) -> None:
    """The 80 mM vial reading 5 or 10 % low (a vial that is not the study's, or a field that differs
    between the vials): the line's zero moves by ~4 and ~9 mM."""
    faulty = calibrate(
        _vial_scaled(sodium, clean_calibration, scale),
        concentrations_mM=(40.0, 80.0),
        psf_fwhm_mm=PSF_FWHM_MM,
    )
    offset, _ = calibration_checks(faulty, picture=None)
    print(f"80 mM vial x{scale}: zero offset {offset.metric_value:.2f} mM")
    _verdict(offset, expected)


def test_a_missing_vial_is_a_refusal(sodium: Volume, clean_calibration: Calibration) -> None:
    """Two vials define the line; with one, nothing is calibrated and the job stops with the reason."""
    region = ndimage.binary_dilation(clean_calibration.vial_rois[0], iterations=6)
    air = _noisier(
        sodium.with_data(np.zeros(sodium.shape), scaling=sodium.scaling, unit=sodium.unit),
        sigma=clean_calibration.noise_sigma,
        total_over_original=2.0**0.5,
    )
    without = sodium.with_data(np.where(region, air.data, sodium.data), scaling=sodium.scaling, unit="")
    with pytest.raises(CalibrationError, match=r"found 1 calibration vial\(s\), expected 2"):
        calibrate(without, concentrations_mM=(40.0, 80.0), psf_fwhm_mm=PSF_FWHM_MM)


# --- segmentation, field of view, motion ------------------------------------------------------------


def _truth_maps(session: SimulatedSession, *, csf_missing: float = 0.0) -> TissueMaps:
    """The true tissue maps in T1 space, with ``csf_missing`` of the CSF taken for grey matter."""
    folder = session.folder / "ground_truth" / "t1_space"

    def load(*names: str) -> Volume:
        volumes = [read_volume(folder / f"prob_{name}.nii.gz", space="t1", unit="fraction") for name in names]
        data = np.sum([np.asarray(v.data) for v in volumes], axis=0)
        return volumes[0].with_data(data, scaling=Scaling.DERIVED, unit="fraction")

    csf = load("csf")
    grey = load("cgm", "dgm")
    return TissueMaps(
        grey=grey.with_data(
            np.asarray(grey.data) + csf_missing * csf.data, scaling=Scaling.DERIVED, unit="fraction"
        ),
        deep_grey=load("dgm"),
        white=load("nawm", "lesion_t1_iso", "lesion_t1_hypo"),
        csf=csf.with_data(
            (1.0 - csf_missing) * np.asarray(csf.data), scaling=Scaling.DERIVED, unit="fraction"
        ),
        source="truth",
    )


@pytest.mark.parametrize(("csf_missing", "expected"), [(0.0, Verdict.PASS), (0.5, Verdict.FAIL)])
def test_segmentation_missing_csf_fails_the_bpf(
    classic_session: SimulatedSession, csf_missing: float, expected: Verdict
) -> None:
    """Half the CSF taken for grey matter: BPF 0.89 on the builtin maps of this session, outside every
    group of the study (0.73-0.77); all of it: the segmenter's own BPF bound refuses the maps."""
    volumes = brain_volumes(
        _truth_maps(classic_session, csf_missing=csf_missing),
        t2_lesions=None,
        t1_lesions=None,
        t1_series="truth",
    )
    bpf, tiv = volume_checks(volumes)
    print(f"CSF missing {csf_missing:.0%}: BPF {bpf.metric_value:.3f}, TIV {tiv.metric_value:.0f} ml")
    _verdict(bpf, expected)
    _verdict(tiv, Verdict.PASS)


def _cut_at_the_vertex(sodium: Volume, cut_mm: float) -> Volume:
    superior = int(np.argmax(np.abs(sodium.affine_lps[2, :3])))
    slices = round(cut_mm / sodium.voxel_size_mm[superior])
    keep = [slice(None)] * 3
    affine = np.array(sodium.affine_ras)
    if sodium.affine_lps[2, superior] > 0:
        keep[superior] = slice(0, sodium.shape[superior] - slices)
    else:
        keep[superior] = slice(slices, None)
        affine[:3, 3] += affine[:3, superior] * slices
    return replace(sodium, data=np.ascontiguousarray(sodium.data[tuple(keep)]), affine_ras=affine)


@pytest.mark.parametrize(
    ("cut_mm", "expected"), [(0.0, Verdict.PASS), (45.0, Verdict.WARN), (55.0, Verdict.FAIL)]
)
def test_brain_outside_the_sodium_fov(
    classic_session: SimulatedSession, sodium: Volume, cut_mm: float, expected: Verdict
) -> None:
    """The sodium field of view cut short at the vertex (the masks aligned): the coverage falls."""
    model = compartments(_truth_maps(classic_session), t2_lesions=None, lesion_dilation_mm=0.0)
    t1_to_sodium = RigidTransform(
        np.array(classic_session.ground_truth["t1_to_sodium_scanner_lps"]), "t1", "sodium"
    )
    grid = _cut_at_the_vertex(sodium, cut_mm) if cut_mm else sodium
    in_sodium = resample_masks_to_sodium(
        model, sodium_grid=grid, t1_to_sodium=t1_to_sodium, psf_fwhm_mm=PSF_FWHM_MM
    )
    check = fov_check(fov_coverage(model, in_sodium))
    print(f"cut {cut_mm:g} mm: coverage {check.metric_value:.3f}")
    _verdict(check, expected)


@pytest.mark.parametrize(
    ("blur_mm", "expected"), [(0.0, Verdict.PASS), (5.5, Verdict.WARN), (9.0, Verdict.FAIL)]
)
def test_motion_blurred_head(classic_session: SimulatedSession, blur_mm: float, expected: Verdict) -> None:
    """The true PSF-blurred TSC against the true fractions scaled by the same PSF: no extra blur; the
    head blurred further (motion; the vials, fixed to the coil, left sharp) shows it."""
    folder = classic_session.folder / "ground_truth" / "sodium_space"
    tsc = read_volume(folder / "tsc_psf_mM.nii.gz", space="sodium", unit="mM")
    sigma = PSF_FWHM_MM / FWHM_PER_SIGMA / np.asarray(tsc.voxel_size_mm)
    fractions = {}
    for name in ("cgm", "dgm", "nawm", "csf"):
        fraction = read_volume(folder / f"prob_{name}.nii.gz", space="sodium", unit="fraction")
        fractions[name] = fraction.with_data(
            ndimage.gaussian_filter(np.asarray(fraction.data, np.float64), sigma),
            scaling=Scaling.DERIVED,
            unit="fraction",
        )
    vials = np.zeros(tsc.shape, bool)
    for path in folder.glob("prob_vial_*.nii.gz"):
        vials |= np.asarray(read_volume(path, space="sodium", unit="fraction").data) > 0.01
    outside_vials = ~ndimage.binary_dilation(vials, iterations=3)
    data = np.asarray(tsc.data, np.float64)
    if blur_mm:
        data = np.where(
            outside_vials,
            ndimage.gaussian_filter(data, blur_mm / FWHM_PER_SIGMA / np.asarray(tsc.voxel_size_mm)),
            data,
        )
    blurred = tsc.with_data(data, scaling=Scaling.DERIVED, unit="mM")
    extra = extra_blur_fwhm_mm(blurred, fractions, head=outside_vials)
    check = head_sharpness_check(extra)
    print(f"head blurred {blur_mm:g} mm: extra blur {extra:.2f} mm")
    _verdict(check, expected)


# --- receive field ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("domed", "expected"), [(False, Verdict.PASS), (True, Verdict.WARN)])
def test_receive_field_beyond_the_bound_warns(
    classic_session: SimulatedSession, sodium: Volume, domed: bool, expected: Verdict
) -> None:
    """The session's own +-10 % field is applied (PASS); an extra radial field that halves the signal
    15 cm from the brain's centre is supported by the data but would change every tissue by more than
    10 %: a lower degree is applied and the check warns."""
    model = compartments(_truth_maps(classic_session), t2_lesions=None, lesion_dilation_mm=0.0)
    t1_to_sodium = RigidTransform(
        np.array(classic_session.ground_truth["t1_to_sodium_scanner_lps"]), "t1", "sodium"
    )
    fractions = resample_masks_to_sodium(
        model, sodium_grid=sodium, t1_to_sodium=t1_to_sodium, psf_fwhm_mm=PSF_FWHM_MM
    )
    image = sodium
    if domed:
        index = np.stack(np.meshgrid(*[np.arange(n) for n in sodium.shape], indexing="ij"), axis=-1)
        points = index @ sodium.affine_lps[:3, :3].T + sodium.affine_lps[:3, 3]
        intracranial = sum(np.asarray(v.data, dtype=np.float64) for v in fractions.values())
        centre = points[np.asarray(intracranial) > 0.5].mean(axis=0)
        radial = np.exp(-np.log(2.0) * np.sum((points - centre) ** 2, axis=-1) / 150.0**2)
        image = sodium.with_data(np.asarray(sodium.data) * radial, scaling=sodium.scaling, unit=sodium.unit)
    calibration = calibrate(image, concentrations_mM=(40.0, 80.0), psf_fwhm_mm=PSF_FWHM_MM)
    vials = [
        VialReference(roi, vial.concentration_mM)
        for roi, vial in zip(calibration.vial_rois, calibration.vials, strict=True)
    ]
    estimate = estimate_receive_field(image, fractions, vials, noise_sigma=calibration.noise_sigma)
    check = receive_field_check(estimate)
    print(
        f"domed {domed}: gain change {estimate.selection.gain_change:+.3f}, "
        f"bounded {estimate.selection.bounded}"
    )
    _verdict(check, expected)
