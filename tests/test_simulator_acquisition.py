"""The sodium acquisition's per-subject draws: eyes, vials, receive field, Philips intercept, PSF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from peers import load_nifti

from processing.dicom_series import load_series
from processing.scaling import FrameScaling
from simulator.acquire import AcquiredVolume, store_echoes
from simulator.eyes import LENS_TSC_RANGE_MM, VITREOUS_TSC_MM
from simulator.physics import ReceiveFieldShape, smooth_receive_field
from simulator.population import TRUNCATION_SD
from simulator.session import PSF_FWHM_FACTOR_RANGE, RECEIVE_FIELD_AMPLITUDES, SimulatedSession
from simulator.vial_placement import CLEARANCE_RANGE_MM, MAX_TILT_DEG

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sodium_map(session: SimulatedSession, name: str) -> np.ndarray:
    path = session.folder / "ground_truth" / "sodium_space" / f"{name}.nii.gz"
    return np.asarray(load_nifti(path).get_fdata()).transpose(2, 1, 0)


def sodium_points_lps(session: SimulatedSession) -> np.ndarray:
    grid = session.ground_truth["series"]["sodium"]["grid"]
    affine_lps = LPS_TO_RAS @ np.array(grid["affine_ras"])
    shape_kji = grid["shape_ijk"][::-1]
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape_kji), indexing="ij")
    return np.stack([i, j, k, np.ones_like(i)], axis=-1) @ affine_lps.T[:, :3]


def test_eyes_carry_their_drawn_tsc_and_show_in_the_sodium_image(
    simulated_sessions: dict[str, SimulatedSession],
) -> None:
    """Vitreous and lens TSC come from their stated ranges; the sodium image is bright there.

    Volume: two globes of the recorded radius less the lenses (~0.15 ml each), within 10 % (1 mm
    soft edges and resampling to the T1 grid). Brightness: the PSF-blurred truth at the globe's
    centre is within 10 % of the vitreous TSC (the globe's radius is > 2 PSF FWHM).
    """
    for session in simulated_sessions.values():
        truth = session.ground_truth
        vitreous, lens = truth["tissues"]["vitreous"], truth["tissues"]["lens"]
        assert abs(vitreous["tsc_true_mM"] - VITREOUS_TSC_MM.mean) <= TRUNCATION_SD * VITREOUS_TSC_MM.sd
        assert LENS_TSC_RANGE_MM[0] <= lens["tsc_true_mM"] <= LENS_TSC_RANGE_MM[1]
        assert len(truth["eyes"]) == 2
        globes_ml = sum(4.0 / 3.0 * np.pi * eye["radius_mm"] ** 3 for eye in truth["eyes"]) / 1000.0
        assert vitreous["volume_t1_space_ml"] + lens["volume_t1_space_ml"] == pytest.approx(
            globes_ml, rel=0.1
        )
        assert 0.1 < lens["volume_t1_space_ml"] < 0.6
        subject_to_sodium = np.array(truth["exams"]["sodium"]["subject_to_scanner_lps"])
        tsc_psf = sodium_map(session, "tsc_psf_mM")
        points = sodium_points_lps(session)
        for eye in truth["eyes"]:
            centre = subject_to_sodium @ np.array([*eye["centre_subject_lps_mm"], 1.0])
            nearest = np.unravel_index(
                np.argmin(np.sum((points - centre[:3]) ** 2, axis=-1)), points.shape[:3]
            )
            assert tsc_psf[nearest] == pytest.approx(vitreous["tsc_true_mM"], rel=0.1), eye["side"]


def test_eyes_lie_outside_the_intracranial_volume(classic_session: SimulatedSession) -> None:
    folder = classic_session.folder / "ground_truth" / "t1_space"
    vitreous = np.asarray(load_nifti(folder / "prob_vitreous.nii.gz").get_fdata())
    csf = np.asarray(load_nifti(folder / "prob_csf.nii.gz").get_fdata())
    # Resampling softens both edges by ~1 mm; the globes keep 2 mm from the intracranial volume.
    assert float((vitreous * csf).sum()) < 1e-3 * float(vitreous.sum())


def test_vial_geometry_in_the_truth_matches_the_image(
    simulated_sessions: dict[str, SimulatedSession], drawn_session: SimulatedSession
) -> None:
    """Each vial's fraction map integrates to pi r^2 L within 2 % (1 mm soft edges are symmetric,
    the sodium grid samples it at 3 mm), its centroid is the recorded centre within 1 mm, and the
    DICOM signal over its core is the PSF-blurred truth (noise: ~5 % over >= 8 voxels at SNR >= 8)."""
    for session in (*simulated_sessions.values(), drawn_session):
        truth = session.ground_truth
        voxel_ml = float(np.prod(truth["series"]["sodium"]["grid"]["voxel_size_mm"])) / 1000.0
        points = sodium_points_lps(session)
        loaded = load_series(session.series_files["sodium"]).volumes[0]
        signal = np.asarray(loaded.data).transpose(2, 1, 0)
        field = sodium_map(session, "receive_field")
        tsc_psf = sodium_map(session, "tsc_psf_mM")
        per_mM = truth["parameters"]["sodium_signal_per_mM"]
        sides = set()
        for index, vial in enumerate(truth["phantoms"]):
            fraction = sodium_map(session, f"prob_vial_{index}")
            nominal_ml = np.pi * vial["radius_mm"] ** 2 * vial["length_mm"] / 1000.0
            assert vial["volume_ml"] == pytest.approx(nominal_ml)
            assert float(fraction.sum()) * voxel_ml == pytest.approx(nominal_ml, rel=0.02)
            centroid = np.tensordot(fraction, points, axes=3) / fraction.sum()
            np.testing.assert_allclose(centroid, vial["centre_scanner_lps_mm"], atol=1.0)
            axis = np.array(vial["axis_lps"])
            assert np.linalg.norm(axis) == pytest.approx(1.0)
            assert np.degrees(np.arccos(axis[2])) <= MAX_TILT_DEG + 1e-6
            if vial["clearance_from_head_mm"] is not None:  # drawn vials (the coil's own are fixed)
                assert vial["clearance_from_head_mm"] >= CLEARANCE_RANGE_MM[0]
            offset = points - np.array(vial["centre_scanner_lps_mm"])
            axial = offset @ axis
            radial = np.linalg.norm(offset - axial[..., None] * axis, axis=-1)
            core = (radial < max(vial["radius_mm"] - 4.0, 2.5)) & (np.abs(axial) < vial["length_mm"] / 2 - 6)
            assert core.sum() >= 8, f"vial {index}: core outside the sodium FOV"
            measured = float(np.median(signal[core] / field[core] / per_mM))
            assert measured == pytest.approx(float(np.median(tsc_psf[core])), rel=0.05), f"vial {index}"
            sides.add(vial["side"])
        assert sides == {"left", "right"}


def test_drawn_sodium_settings_are_recorded(simulated_sessions: dict[str, SimulatedSession]) -> None:
    for session in simulated_sessions.values():
        parameters = session.ground_truth["parameters"]
        assert PSF_FWHM_FACTOR_RANGE[0] <= parameters["psf_fwhm_factor"] <= PSF_FWHM_FACTOR_RANGE[1]
        assert parameters["sodium_receive_field_amplitude"] in RECEIVE_FIELD_AMPLITUDES
        assert parameters["sodium_receive_field_shape"] in {s.value for s in ReceiveFieldShape}
        field = sodium_map(session, "receive_field")
        if parameters["sodium_receive_field_amplitude"] == 0.0:
            assert np.all(field == 1.0)


@pytest.mark.parametrize("shape", list(ReceiveFieldShape))
def test_receive_field_amplitude_zero_is_exactly_flat(shape: ReceiveFieldShape) -> None:
    points = np.stack(np.meshgrid(*(np.linspace(-120, 120, 9),) * 3, indexing="ij"), axis=-1)
    field = smooth_receive_field(np.random.default_rng(1), points, amplitude=0.0, shape=shape)
    assert field.dtype == np.float32
    assert np.all(field == 1.0)


@pytest.mark.parametrize("shape", list(ReceiveFieldShape))
def test_receive_field_spans_its_amplitude(shape: ReceiveFieldShape) -> None:
    """The 99th percentile of |log field| is log(1 + amplitude) (float32: 1e-5)."""
    points = np.stack(np.meshgrid(*(np.linspace(-120, 120, 21),) * 3, indexing="ij"), axis=-1)
    field = smooth_receive_field(np.random.default_rng(2), points, amplitude=0.2, shape=shape)
    spread = float(np.percentile(np.abs(np.log(field.astype(np.float64))), 99.0))
    assert spread == pytest.approx(np.log1p(0.2), rel=1e-4)


@pytest.mark.parametrize("shape", [ReceiveFieldShape.GAUSSIANS, ReceiveFieldShape.COIL])
def test_non_quadratic_fields_are_not_quadratics(shape: ReceiveFieldShape) -> None:
    """Least-squares quadratic fit of log field over a head-sized box leaves > 5 % of its variance
    for at least one of five draws (the quadratic shape leaves 0)."""
    axis = np.linspace(-90, 90, 13)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    x, y, z = (points[:, a] / 100.0 for a in range(3))
    design = np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
    residual_shares = []
    for seed in range(5):
        log_field = np.log(
            smooth_receive_field(np.random.default_rng(seed), points, amplitude=0.2, shape=shape)
        )
        coefficients, *_ = np.linalg.lstsq(design, log_field, rcond=None)
        residual = log_field - design @ coefficients
        residual_shares.append(float(residual.var() / log_field.var()))
    assert max(residual_shares) > 0.05, residual_shares


def test_store_echoes_with_an_intercept_round_trips_through_the_processing_scaling() -> None:
    """SV = FP x SS + SI, RI = -SI x RS: processing's FP = (SV RS + RI) / (RS SS) gives FP back to
    the quantisation step (0.5 / SS)."""
    rng = np.random.default_rng(5)
    values = rng.uniform(0.0, 300.0, size=(4, 5, 6)).astype(np.float32)
    echo = store_echoes(rng, [AcquiredVolume(0.22, values, values)], scale_intercept=137)[0]
    scaling = echo.scaling
    assert scaling.rescale_intercept != 0.0
    assert scaling.scale_intercept == pytest.approx(137.0, abs=1e-9)
    processed = FrameScaling(
        float(f"{scaling.rescale_slope:.8g}"), float(f"{scaling.rescale_intercept:.8g}"), scaling.scale_slope
    ).apply(echo.stored_kji)
    assert np.max(np.abs(processed - values)) <= 0.5 / scaling.scale_slope * (1 + 1e-6)


def test_sodium_series_intercept_loads_back_to_the_receiver_signal(
    simulated_sessions: dict[str, SimulatedSession],
) -> None:
    """The sodium series has a non-zero RescaleIntercept; processing's loader undoes it.

    Bright voxels: mean FP / noise-free signal is 1 within 2 % (Rician bias < 2 % at SNR > 5).
    Background (noise-free < 0.5 % of its maximum): the mean is the Rician floor sigma sqrt(pi/2)
    within 15 %; an ignored intercept would add SI / SS there, more than half a noise SD (over three
    times that tolerance).
    """
    for session in simulated_sessions.values():
        truth = session.ground_truth
        scaling = truth["series"]["sodium"]["scaling"][0]
        assert scaling["rescale_intercept"] < 0.0 and scaling["scale_intercept"] > 0.0
        loaded = load_series(session.series_files["sodium"]).volumes[0]
        signal = np.asarray(loaded.data).transpose(2, 1, 0)
        free = sodium_map(session, "signal_noise_free")
        bright = free > 0.3 * free.max()
        assert signal[bright].mean() / free[bright].mean() == pytest.approx(1.0, abs=0.02)
        background = free < 0.005 * free.max()
        sigma = truth["parameters"]["sodium_noise_sigma"]
        assert signal[background].mean() == pytest.approx(sigma * np.sqrt(np.pi / 2.0), rel=0.15)
        assert scaling["scale_intercept"] / scaling["scale_slope"] > 0.5 * sigma


def test_cli_forces_the_acquisition_options(tmp_path: Path) -> None:
    from sodium_node.cli import main

    out_dir = tmp_path / "session"
    arguments = ["simulate", str(out_dir), "--seed", "3", "--group", "HC", "--quiet", "--default-vials"]
    arguments += ["--receive-field", "0", "--psf-fwhm-factor", "1.6", "--no-eyes"]
    assert main(arguments) == 0
    import json

    truth = json.loads((out_dir / "ground_truth" / "ground_truth.json").read_text())
    assert truth["parameters"]["sodium_receive_field_amplitude"] == 0.0
    assert truth["parameters"]["psf_fwhm_factor"] == 1.6
    assert truth["eyes"] == [] and "vitreous" not in truth["tissues"]
    assert [p["centre_scanner_lps_mm"] for p in truth["phantoms"]] == [
        [-84.0, -88.0, 0.0],
        [84.0, -88.0, 0.0],
    ]
    field = np.asarray(load_nifti(out_dir / "ground_truth" / "sodium_space" / "receive_field.nii.gz").dataobj)
    assert np.all(field == 1.0)
