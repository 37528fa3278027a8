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
"""The issue's requirement for the calibrated TSC in each vial."""
MAP_RELATIVE_TOLERANCE = 0.01
"""The issue's requirement for the calibrated noise-free map."""
CENTRE_TOLERANCE_MM = 1.0
"""A third of a sodium voxel: the detected vial centre against the simulator's."""


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
    for phantom in session.ground_truth["phantoms"]:
        offset = points - np.array(phantom["centre_scanner_lps_mm"])
        radial = np.hypot(offset[..., 0], offset[..., 1])
        core = (radial < phantom["radius_mm"] - CORE_MARGIN_MM) & (
            np.abs(offset[..., 2]) < phantom["length_mm"] / 2 - CORE_MARGIN_MM
        )
        cores.append((float(phantom["concentration_mM"]), core))
    return cores


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
    truth = simulated_sessions[kind].ground_truth["phantoms"]
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
def test_calibrated_tsc_in_each_vial_is_within_1_mM(
    kind: str, simulated_sessions: dict[str, SimulatedSession], calibrations: dict[str, Calibration]
) -> None:
    """The calibrated (noisy) map over the TRUE vial cores (simulator geometry, not our ROI)."""
    session = simulated_sessions[kind]
    tsc = calibrations[kind].tsc_mM
    for concentration, core in _vial_cores(session, tsc):
        assert core.sum() > 50
        assert float(np.median(tsc.data[core])) == pytest.approx(concentration, abs=VIAL_TOLERANCE_mM)


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_noisy_calibration_applied_to_the_noise_free_image_is_within_its_noise(
    kind: str, simulated_sessions: dict[str, SimulatedSession], calibrations: dict[str, Calibration]
) -> None:
    """The line fitted on the noisy image, applied to the noise-free one, in the true vial cores.

    Its error is the noise of the ROI median (standard error 1.25 sigma / sqrt(n), sigma from the
    ground truth) plus the Rician bias of a magnitude image (sigma^2 / 2S): at SNR 8 that is
    0.8-1.0 mM + 0.6 mM, so 1 mM cannot be promised here; we allow bias + 3 standard errors.
    """
    session = simulated_sessions[kind]
    calibration = calibrations[kind]
    sigma = session.ground_truth["parameters"]["sodium_noise_sigma"]
    noise_free = _truth_map(session, "signal_noise_free")
    calibrated = (noise_free.data - calibration.intercept) / calibration.slope_per_mM
    for measured, (concentration, core) in zip(
        calibration.vials, _vial_cores(session, noise_free), strict=True
    ):
        standard_error = 1.2533 * sigma / np.sqrt(measured.roi_voxels) / calibration.slope_per_mM
        rician_bias = sigma**2 / (2 * measured.median_signal) / calibration.slope_per_mM
        error = abs(float(np.median(calibrated[core])) - concentration)
        assert error <= rician_bias + 3 * standard_error, (kind, concentration, error)


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


def test_vials_swapped_in_config_fail_qc(classic_session: SimulatedSession) -> None:
    with pytest.raises(CalibrationError, match=r"signal ordering wrong.*swapped"):
        calibrate(_sodium(classic_session), concentrations_mM=(80.0, 40.0))


def test_erosion_below_two_voxels_is_refused(classic_session: SimulatedSession) -> None:
    with pytest.raises(CalibrationError, match="at least 2"):
        calibrate(_sodium(classic_session), concentrations_mM=CONCENTRATIONS_mM, erosion_voxels=1)
