"""Phantom calibration against the simulator's truth, and QC that stops a wrong calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from processing.calibration import Calibration, calibrate
from processing.dicom_series import load_series
from processing.nifti_io import read_volume
from processing.volume import Volume
from simulator.session import SimulatedSession
from sodium_node.errors import CalibrationError

CONCENTRATIONS_mM = (40.0, 80.0)
"""The simulator's vials, right (LPS x = -84 mm) to left (+84 mm), as the config lists them."""
CORE_MARGIN_MM = 6.0
"""The true vial core: 2 sodium voxels inside the true surface, where the PSF (sigma 2 mm) leaves
less than 0.2 % partial volume."""
VIAL_TOLERANCE_mM = 1.0
"""The issue's requirement for the calibrated TSC in each vial, asserted on the noise-free image: in
the noisy one, a vial core's median carries ~1 mM of noise of its own (SNR 6 at 40 mM)."""
MAP_RELATIVE_TOLERANCE = 0.01
"""The issue's requirement for the calibrated noise-free map."""
CENTRE_TOLERANCE_MM = 1.0
"""A third of a sodium voxel: the detected vial centre against the simulator's."""
AMPLITUDE_STANDARD_ERRORS = 4.0
AMPLITUDE_METHOD_BIAS = 0.002
"""The vial model's amplitude against the simulator's (signal per mM x concentration, true field):
within 4 of its standard errors (1.0 % at 40 mM, 0.5 % at 80 mM; Monte Carlo SD over noise draws
1.03 % and 0.52 %, so 4 reported SEs is ~3.5 true SDs) plus 0.2 % for the method itself (measured
-0.04 % on noise-free images: the simulator's 1 mm edge ramp and the discretisation)."""
MISJUDGED_PSF_TOLERANCE = 0.003
"""Noise-free image, configured PSF 20 % too narrow or too wide: the model fits its own width, and
each amplitude stays within 0.3 % of the truth (measured < 0.1 %). A model with the PSF fixed at the
misjudged width is off by -3.5 % / +3.2 %: this tolerance tells the two apart."""
NOISE_SIGMA_TOLERANCE = 0.05
"""Fitted noise SD against the simulator's: measured 0.98-0.99 (from ~2,000 voxels of air and vial,
statistical SE ~1.5 %)."""
MIN_PRECISION_GAIN = 1.3
"""The model's standard error against the eroded-core median's: measured ~2x (1.0 % vs 2.1 % at
40 mM); 1.3 still fails a model that uses little more than the core."""


def _sodium(session: SimulatedSession) -> Volume:
    return load_series(session.series_files["sodium"]).volumes[0]


def _truth_map(session: SimulatedSession, name: str) -> Volume:
    return read_volume(session.folder / "ground_truth" / "sodium_space" / f"{name}.nii.gz", space="sodium")


def _points_lps(volume: Volume) -> np.ndarray:
    i, j, k = np.indices(volume.shape)
    affine = volume.affine_lps
    return np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]


def _vial_cores(session: SimulatedSession, volume: Volume) -> list[tuple[float, np.ndarray]]:
    points = _points_lps(volume)
    cores = []
    for phantom in sorted(session.ground_truth["phantoms"], key=lambda p: p["concentration_mM"]):
        offset = points - np.array(phantom["centre_scanner_lps_mm"])
        radial = np.hypot(offset[..., 0], offset[..., 1])
        core = (radial < phantom["radius_mm"] - CORE_MARGIN_MM) & (
            np.abs(offset[..., 2]) < phantom["length_mm"] / 2 - CORE_MARGIN_MM
        )
        cores.append((float(phantom["concentration_mM"]), core))
    return cores  # (lower concentration, higher), as Calibration.vials


@pytest.fixture(scope="module")
def calibrations(
    simulated_sessions: dict[str, SimulatedSession], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Calibration]:
    folder = tmp_path_factory.mktemp("calibration_qc")
    return {
        kind: calibrate(
            _sodium(session), concentrations_mM=CONCENTRATIONS_mM, qc_picture_path=folder / f"{kind}.png"
        )
        for kind, session in simulated_sessions.items()
    }


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_vials_are_found_where_the_simulator_put_them(
    kind: str, simulated_sessions: dict[str, SimulatedSession], calibrations: dict[str, Calibration]
) -> None:
    truth = sorted(simulated_sessions[kind].ground_truth["phantoms"], key=lambda p: p["concentration_mM"])
    for measured, phantom in zip(calibrations[kind].vials, truth, strict=True):
        assert measured.concentration_mM == phantom["concentration_mM"]
        np.testing.assert_allclose(
            measured.centre_lps_mm, phantom["centre_scanner_lps_mm"], atol=CENTRE_TOLERANCE_MM
        )
    picture = calibrations[kind].qc.picture
    assert picture is not None
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > 100


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_calibrated_tsc_in_each_vial_reads_its_concentration_within_the_noise(
    kind: str, simulated_sessions: dict[str, SimulatedSession], calibrations: dict[str, Calibration]
) -> None:
    """The calibrated (noisy) map, median over the TRUE vial cores (simulator geometry, not our ROI).

    The line comes from the vial model, so this median is a measurement independent of it: it differs
    from the concentration by its own noise (the core median's standard error, ~2 % of the 40 mM
    vial's signal at SNR 6) and the line's at that vial (the model amplitude's); 3 standard errors of
    the two together are allowed. (When the line went through the core medians themselves, this read
    within 0.2 mM by construction, and the 1 mM of the issue was asserted here; seed 12's 40 mM core
    median is 1.6 of its standard errors high, +1.2 mM.)"""
    session = simulated_sessions[kind]
    calibration = calibrations[kind]
    tsc = calibration.tsc_mM
    for measured, (concentration, core) in zip(calibration.vials, _vial_cores(session, tsc), strict=True):
        assert core.sum() > 50
        standard_error_mM = (
            float(np.hypot(measured.signal_standard_error, measured.amplitude_standard_error))
            / calibration.slope_per_mM
        )
        assert float(np.median(tsc.data[core])) == pytest.approx(concentration, abs=3 * standard_error_mM), (
            kind,
            concentration,
        )


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_noisy_calibration_applied_to_the_noise_free_image_is_within_its_noise(
    kind: str, simulated_sessions: dict[str, SimulatedSession], calibrations: dict[str, Calibration]
) -> None:
    """The line fitted on the noisy image, applied to the noise-free one, in the true vial cores.

    Its error at each vial is that vial's amplitude error: the model's standard error (1.0-1.2 % at
    40 mM, ~0.6 % at 80 mM, i.e. ~0.45 mM each) and no Rician bias; we allow 3 standard errors plus
    the method's 0.2 %. (The core median's line was 0.8-1.0 mM noisier and 0.6 mM Rician-biased.)
    """
    session = simulated_sessions[kind]
    calibration = calibrations[kind]
    noise_free = _truth_map(session, "signal_noise_free")
    calibrated = (noise_free.data - calibration.intercept) / calibration.slope_per_mM
    for measured, (concentration, core) in zip(
        calibration.vials, _vial_cores(session, noise_free), strict=True
    ):
        standard_error = measured.amplitude_standard_error / calibration.slope_per_mM
        error = abs(float(np.median(calibrated[core])) - concentration)
        tolerance = 3 * standard_error + AMPLITUDE_METHOD_BIAS * concentration
        assert error <= tolerance, (kind, concentration, error)


@pytest.fixture(scope="module")
def noise_free_calibration(classic_session: SimulatedSession) -> Calibration:
    """The noise-free sodium signal, corrected with the true receive field through the B1- hook."""
    return calibrate(
        _truth_map(classic_session, "signal_noise_free"),
        concentrations_mM=CONCENTRATIONS_mM,
        receive_field=_truth_map(classic_session, "receive_field"),
    )


def test_noise_free_calibration_reproduces_the_true_tsc_map_within_1_percent(
    classic_session: SimulatedSession, noise_free_calibration: Calibration
) -> None:
    truth = _truth_map(classic_session, "tsc_psf_mM").data
    intracranial = sum(
        _truth_map(classic_session, f"prob_{tissue}").data for tissue in ("cgm", "dgm", "nawm", "csf")
    )
    assert isinstance(intracranial, np.ndarray)
    inside = (intracranial > 0.5) & (truth > 5.0)
    assert inside.sum() > 10_000
    relative = np.abs(noise_free_calibration.tsc_mM.data[inside] - truth[inside]) / truth[inside]
    assert float(relative.max()) < MAP_RELATIVE_TOLERANCE
    for concentration, core in _vial_cores(classic_session, noise_free_calibration.tsc_mM):
        assert float(np.median(noise_free_calibration.tsc_mM.data[core])) == pytest.approx(
            concentration, abs=VIAL_TOLERANCE_mM
        )
    assert noise_free_calibration.receive_field_corrected


def test_without_receive_field_correction_the_noise_free_map_is_off(
    classic_session: SimulatedSession,
) -> None:
    """The hook matters: uncorrected, the +-10 % receive field shows in the map (so the 1 % test can fail)."""
    calibration = calibrate(
        _truth_map(classic_session, "signal_noise_free"), concentrations_mM=CONCENTRATIONS_mM
    )
    truth = _truth_map(classic_session, "tsc_psf_mM").data
    inside = truth > 20.0
    relative = np.abs(calibration.tsc_mM.data[inside] - truth[inside]) / truth[inside]
    assert float(np.percentile(relative, 95)) > MAP_RELATIVE_TOLERANCE


def _without_vial(session: SimulatedSession, sodium: Volume, index: int) -> Volume:
    """The sodium image with one vial replaced by air (noise drawn from the image's own air)."""
    phantom: dict[str, Any] = session.ground_truth["phantoms"][index]
    offset = _points_lps(sodium) - np.array(phantom["centre_scanner_lps_mm"])
    around = (np.hypot(offset[..., 0], offset[..., 1]) < phantom["radius_mm"] + 12) & (
        np.abs(offset[..., 2]) < phantom["length_mm"] / 2 + 12
    )
    air = sodium.data[:8, :8, :].ravel()
    data = np.array(sodium.data)
    data[around] = np.random.default_rng(0).choice(air, size=int(around.sum()))
    return sodium.with_data(data, scaling=sodium.scaling, unit=sodium.unit)


@pytest.mark.parametrize("missing", [0, 1])
def test_a_missing_vial_fails_qc(classic_session: SimulatedSession, tmp_path: Path, missing: int) -> None:
    sodium = _without_vial(classic_session, _sodium(classic_session), missing)
    picture = tmp_path / "qc.png"
    with pytest.raises(CalibrationError, match=r"found 1 calibration vial\(s\), expected 2") as caught:
        calibrate(
            sodium, concentrations_mM=CONCENTRATIONS_mM, qc_picture_path=picture, series_name="series 601"
        )
    assert "series 601" in str(caught.value) and str(picture) in str(caught.value)
    assert picture.is_file()


def test_vials_swapped_in_config_are_identified_by_signal_with_a_warning(
    classic_session: SimulatedSession, calibrations: dict[str, Calibration]
) -> None:
    """The configuration puts 80 mM on the patient's right, the simulator on the left: the vials are
    identified by their signal, so the line and the map are exactly those of the right configuration,
    and QC says what it found."""
    swapped = calibrate(_sodium(classic_session), concentrations_mM=(80.0, 40.0))
    expected = calibrations["classic"]
    assert swapped.qc.swapped and not expected.qc.swapped
    assert len(swapped.qc.warnings) == 1 and "configured the other way round" in swapped.qc.warnings[0]
    assert not expected.qc.warnings
    assert [v.concentration_mM for v in swapped.vials] == [40.0, 80.0]
    assert swapped.slope_per_mM == pytest.approx(expected.slope_per_mM, rel=1e-9)
    assert swapped.intercept == pytest.approx(expected.intercept, rel=1e-9, abs=1e-9)


def test_erosion_below_two_voxels_is_refused(classic_session: SimulatedSession) -> None:
    with pytest.raises(CalibrationError, match="at least 2"):
        calibrate(_sodium(classic_session), concentrations_mM=CONCENTRATIONS_mM, erosion_voxels=1)


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_vial_model_amplitudes_match_the_simulators_signal(
    kind: str, simulated_sessions: dict[str, SimulatedSession]
) -> None:
    """The new measurement against the truth: with the true receive field, each vial's amplitude is
    the simulator's signal per mM times its concentration; and it is more precise than the core."""
    session = simulated_sessions[kind]
    parameters = session.ground_truth["parameters"]
    calibration = calibrate(
        _sodium(session),
        concentrations_mM=CONCENTRATIONS_mM,
        receive_field=_truth_map(session, "receive_field"),
        psf_fwhm_mm=parameters["psf_fwhm_mm"],
    )
    for vial in calibration.vials:
        expected = parameters["sodium_signal_per_mM"] * vial.concentration_mM
        tolerance = (
            AMPLITUDE_STANDARD_ERRORS * vial.amplitude_standard_error + AMPLITUDE_METHOD_BIAS * expected
        )
        assert vial.amplitude == pytest.approx(expected, abs=tolerance), (kind, vial.concentration_mM)
        assert vial.amplitude_standard_error * MIN_PRECISION_GAIN < vial.signal_standard_error
        assert vial.fitted_radius_mm == pytest.approx(10.0, abs=0.5)
    assert calibration.noise_sigma == pytest.approx(
        parameters["sodium_noise_sigma"], rel=NOISE_SIGMA_TOLERANCE
    )


@pytest.mark.parametrize("psf_factor", [0.8, 1.2])
def test_vial_model_is_robust_to_a_misjudged_psf(
    classic_session: SimulatedSession, psf_factor: float
) -> None:
    parameters = classic_session.ground_truth["parameters"]
    calibration = calibrate(
        _truth_map(classic_session, "signal_noise_free"),
        concentrations_mM=CONCENTRATIONS_mM,
        receive_field=_truth_map(classic_session, "receive_field"),
        psf_fwhm_mm=psf_factor * parameters["psf_fwhm_mm"],
    )
    for vial in calibration.vials:
        expected = parameters["sodium_signal_per_mM"] * vial.concentration_mM
        assert vial.amplitude == pytest.approx(expected, rel=MISJUDGED_PSF_TOLERANCE), vial.concentration_mM
    assert calibration.fitted_psf_fwhm_mm == pytest.approx(parameters["psf_fwhm_mm"], rel=0.05)


def test_a_psf_far_from_the_configuration_fails_qc(classic_session: SimulatedSession) -> None:
    """The vials' edges measure the PSF: configured at twice the simulator's, QC stops the job."""
    with pytest.raises(CalibrationError, match=r"PSF of FWHM 4\.\d mm, not the configured 9\.6 mm"):
        calibrate(
            _sodium(classic_session),
            concentrations_mM=CONCENTRATIONS_mM,
            psf_fwhm_mm=2 * classic_session.ground_truth["parameters"]["psf_fwhm_mm"],
        )


def test_a_vial_whose_core_is_not_its_level_fails_qc(classic_session: SimulatedSession) -> None:
    """The 80 mM vial's core 20 % brighter than the rest of it (a non-uniform vial): the model, fitted
    to the whole vial, and the core median disagree by ~15 %, beyond 4 standard errors + 1 %."""
    sodium = _sodium(classic_session)
    core = _vial_cores(classic_session, sodium)[1][1]
    data = np.array(sodium.data)
    data[core] *= 1.2
    with pytest.raises(
        CalibrationError, match=r"vial of 80 mM: the vial model \(.* over the core\) disagrees"
    ):
        calibrate(
            sodium.with_data(data, scaling=sodium.scaling, unit=sodium.unit),
            concentrations_mM=CONCENTRATIONS_mM,
        )
