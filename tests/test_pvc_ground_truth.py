"""PSF resampling + partial-volume correction against the simulator's truth, with its segmentation.

One RRMS session (seed 11) simulated without receive field (``sodium_receive_field_amplitude=0``:
the pipeline does not correct the field, and its +-10 % would add a bias of its own that this test
is not about; bench/accuracy.py reports it). Masks are the ground-truth T1-space fractions, moved
into sodium space through the true ``t1_to_sodium`` and through the registered chain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from processing.calibration import calibrate
from processing.dicom_series import load_series
from processing.measurements import PvcMethod, Tissue, TissueMeasurement
from processing.nifti_io import read_volume
from processing.partial_volume import compartment_design, gtm_fit_region
from processing.psf_resampling import psf_kernel, resample_masks_to_sodium
from processing.registration import RegistrationSettings, register_chain
from processing.tissue_tsc import measure_tissues
from processing.transforms import RigidTransform
from processing.volume import Scaling, Volume
from simulator.population import Group
from simulator.session import SimulatedSession, simulate_session, study_acquisition

PSF_FWHM_MM = 1.6 * 3.0
GTM_TOLERANCE_MM = 0.5
"""The issue's requirement for gtm with the true segmentation. Measured on the noise-free map:
<= 0.11 mM (true transform) and <= 0.08 mM (registered, ~0.5 mm off) for CGM, DGM and NAWM; the
remainder is the single extracranial compartment standing for skull, scalp and air."""
NAIVE_CGM_MIN_BIAS_MM = 3.0
"""``none`` must visibly overestimate cortical GM (CSF at 140 mM spills in; measured ~ +17 mM)."""
NOISE_STANDARD_ERRORS = 3.0
"""On the noisy image the GTM estimate may further differ from its noise-free expectation by its
own noise: 3 standard errors (from sigma and the transfer matrix) is a 0.3 % false-alarm rate."""
MAIN_TISSUES = (Tissue.CORTICAL_GM, Tissue.DEEP_GM, Tissue.NAWM)
T1_MAPS = {
    "cgm": ("cgm",),
    "dgm": ("dgm",),
    "nawm": ("nawm",),
    "lesion": ("lesion_t1_iso", "lesion_t1_hypo"),
    "csf": ("csf",),
}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    options = study_acquisition(11, Group.RRMS, sodium_receive_field_amplitude=0.0, new_study_for_sodium=True)
    return simulate_session(tmp_path_factory.mktemp("pvc") / "session", options)


def truth_maps_in_t1_space(folder: Path) -> dict[str, Volume]:
    maps = {}
    for name, parts in T1_MAPS.items():
        volumes = [
            read_volume(folder / f"ground_truth/t1_space/prob_{part}.nii.gz", space="t1") for part in parts
        ]
        total = np.sum([v.data for v in volumes], axis=0)
        maps[name] = volumes[0].with_data(total, scaling=Scaling.DERIVED, unit="fraction")
    return maps


def true_tsc_mM(session: SimulatedSession) -> dict[Tissue, float]:
    tissues = session.ground_truth["tissues"]
    truth = {tissue: float(tissues[tissue.value]["tsc_true_mM"]) for tissue in MAIN_TISSUES}
    truth[Tissue.LESION] = float(session.ground_truth["lesions"]["tsc_all_t2_lesions_mM"])
    truth[Tissue.CSF] = float(tissues["csf"]["tsc_true_mM"])
    return truth


@pytest.fixture(scope="module")
def loaded(session: SimulatedSession) -> dict[str, Volume]:
    files = session.series_files
    return {
        "sodium": load_series(files["sodium"]).echo(1),
        "body_pd": load_series(files["pd_t2_body"]).echo(1),
        "head_pd": load_series(files["pd_t2_head"]).echo(1),
        "t1": load_series(files["t1_3d"]).echo(1),
    }


@pytest.fixture(scope="module")
def transforms(session: SimulatedSession, loaded: dict[str, Volume]) -> dict[str, RigidTransform]:
    chain = register_chain(
        sodium=loaded["sodium"],
        body_pd=loaded["body_pd"],
        head_pd=loaded["head_pd"],
        t1=loaded["t1"],
        settings=RegistrationSettings(),
    )
    truth = RigidTransform(np.array(session.ground_truth["t1_to_sodium_scanner_lps"]), "t1", "sodium")
    return {"true": truth, "registered": chain.t1_to_sodium}


def by_tissue(measurements: tuple[TissueMeasurement, ...]) -> dict[Tissue, TissueMeasurement]:
    return {m.tissue: m for m in measurements}


def test_kernel_is_psf_minus_source_box() -> None:
    kernel = psf_kernel(psf_fwhm_mm=PSF_FWHM_MM, source_voxel_size_mm=(1.0, 1.0, 2.0))
    psf_sigma = PSF_FWHM_MM / np.sqrt(8 * np.log(2))
    assert kernel.sigma_mm[0] == pytest.approx(np.sqrt(psf_sigma**2 - 1 / 12), rel=1e-9)
    assert kernel.sigma_mm[2] == pytest.approx(np.sqrt(psf_sigma**2 - 4 / 12), rel=1e-9)


def test_resampled_masks_match_the_truth_in_sodium_space(
    session: SimulatedSession, transforms: dict[str, RigidTransform]
) -> None:
    """Total intracranial fraction: PSF-scaled masks vs the simulator's block-averaged fractions.

    Their volumes must agree within 0.5 % (smoothing preserves mass; linear sampling of a smooth map
    loses almost nothing), and a nearest-neighbour-like pick would not be smooth: the PSF-scaled
    cortex must have many voxels between 0.2 and 0.8 (partial volume)."""
    folder = session.folder
    sodium = read_volume(folder / "ground_truth/sodium_space/tsc_psf_mM.nii.gz", space="sodium")
    masks = resample_masks_to_sodium(
        truth_maps_in_t1_space(folder),
        sodium_grid=sodium,
        t1_to_sodium=transforms["true"],
        psf_fwhm_mm=PSF_FWHM_MM,
    )
    names = ("cgm", "dgm", "nawm", "lesion_t1_iso", "lesion_t1_hypo", "csf")
    block_ml = sum(
        float(np.sum(read_volume(folder / f"ground_truth/sodium_space/prob_{n}.nii.gz", space="s").data))
        for n in names
    )
    psf_scaled_ml = sum(float(np.sum(m.data, dtype=np.float64)) for m in masks.values())
    assert psf_scaled_ml == pytest.approx(block_ml, rel=0.005)
    cortex = np.asarray(masks["cgm"].data)
    assert np.count_nonzero((cortex > 0.2) & (cortex < 0.8)) > 0.5 * np.count_nonzero(cortex >= 0.8)


@pytest.mark.parametrize("transform_name", ["true", "registered"])
def test_gtm_recovers_true_tsc_from_the_psf_blurred_map(
    session: SimulatedSession, transforms: dict[str, RigidTransform], transform_name: str
) -> None:
    """Noise-free, perfectly calibrated sodium map (``tsc_psf_mM``): what remains is the method."""
    folder = session.folder
    tsc = read_volume(folder / "ground_truth/sodium_space/tsc_psf_mM.nii.gz", space="sodium", unit="mM")
    masks = resample_masks_to_sodium(
        truth_maps_in_t1_space(folder),
        sodium_grid=tsc,
        t1_to_sodium=transforms[transform_name],
        psf_fwhm_mm=PSF_FWHM_MM,
    )
    truth = true_tsc_mM(session)
    results = {
        method: by_tissue(measure_tissues(tsc, masks, method=method, csf_tsc_mM=140.0))
        for method in PvcMethod
    }
    for method, measured in results.items():
        print(
            f"{transform_name} {method.value}: "
            + ", ".join(f"{t.value} {measured[t].mean_mM - truth[t]:+.2f} mM" for t in measured)
        )
    gtm, naive = results[PvcMethod.GTM], results[PvcMethod.NONE]
    for tissue in MAIN_TISSUES:
        assert gtm[tissue].mean_mM == pytest.approx(truth[tissue], abs=GTM_TOLERANCE_MM), tissue
        assert gtm[tissue].method is PvcMethod.GTM and gtm[tissue].voxel_count > 0
    assert gtm[Tissue.CSF].mean_mM == pytest.approx(140.0, abs=1.0)
    assert naive[Tissue.CORTICAL_GM].mean_mM - truth[Tissue.CORTICAL_GM] > NAIVE_CGM_MIN_BIAS_MM
    paper_cgm_bias = abs(results[PvcMethod.PAPER][Tissue.CORTICAL_GM].mean_mM - truth[Tissue.CORTICAL_GM])
    assert paper_cgm_bias < naive[Tissue.CORTICAL_GM].mean_mM - truth[Tissue.CORTICAL_GM]


def expected_noise_floor_corrected(amplitude: np.ndarray, sigma: float, corrected_sigma: float) -> np.ndarray:
    """E[sqrt(max(M^2 - s^2, 0))] for M the magnitude of ``amplitude`` with complex Gaussian noise
    ``sigma`` and s = ``corrected_sigma`` (what the calibrated map holds), by quadrature of the Rice
    density on a table of SNRs (exact, unlike the correction's second-order argument)."""
    snr_table = np.linspace(0.0, 60.0, 601)
    magnitude = np.linspace(0.0, 70.0, 7001)
    density = stats.rice.pdf(magnitude[None, :], snr_table[:, None])
    corrected = np.sqrt(np.maximum(magnitude**2 - (corrected_sigma / sigma) ** 2, 0.0))
    table = np.trapezoid(density * corrected, magnitude, axis=1)
    snr = np.abs(amplitude) / sigma
    if float(snr.max()) > snr_table[-1]:
        raise ValueError(f"SNR {float(snr.max()):.0f} beyond the table's {snr_table[-1]:.0f}")
    return np.asarray(sigma * np.interp(snr, snr_table, table))


def test_gtm_on_the_calibrated_noisy_image(
    session: SimulatedSession, loaded: dict[str, Volume], transforms: dict[str, RigidTransform]
) -> None:
    """The full path from DICOM: calibration, registered chain, GTM, on the noisy magnitude image.

    Expected value: the noise-free signal through the expectation of the noise-floor-corrected
    magnitude the calibrated map holds (``magnitude_noise``; the raw magnitude's Rician bias, ~0.8 mM
    at 40 mM and SNR 8, is gone from it) and through the fitted calibration line (its own noise), then
    GTM.
    The measured value may differ from it by 3 of its standard errors; and the whole error against
    the truth is printed (the bench's figure)."""
    folder = session.folder
    calibration = calibrate(loaded["sodium"], concentrations_mM=(40.0, 80.0))
    tsc = calibration.tsc_mM
    masks = resample_masks_to_sodium(
        truth_maps_in_t1_space(folder),
        sodium_grid=tsc,
        t1_to_sodium=transforms["registered"],
        psf_fwhm_mm=PSF_FWHM_MM,
    )
    sigma = float(session.ground_truth["parameters"]["sodium_noise_sigma"])
    noise_free = read_volume(folder / "ground_truth/sodium_space/signal_noise_free.nii.gz", space="sodium")
    expected_signal = expected_noise_floor_corrected(
        np.asarray(noise_free.data, dtype=np.float64), sigma, calibration.noise_sigma
    )
    expected_tsc = tsc.with_data(
        (expected_signal - calibration.intercept) / calibration.slope_per_mM,
        scaling=Scaling.DERIVED,
        unit="mM",
    )
    measured = by_tissue(measure_tissues(tsc, masks, method=PvcMethod.GTM, csf_tsc_mM=140.0))
    expected = by_tissue(measure_tissues(expected_tsc, masks, method=PvcMethod.GTM, csf_tsc_mM=140.0))
    names, full_design = compartment_design(masks)
    design = full_design[gtm_fit_region(names, full_design)]
    sigma_mM = sigma / calibration.slope_per_mM
    standard_errors = sigma_mM * np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
    truth = true_tsc_mM(session)
    for tissue in Tissue:
        standard_error = standard_errors[names.index(tissue.value)]
        print(
            f"{tissue.value}: measured {measured[tissue].mean_mM:.2f},"
            f" expected {expected[tissue].mean_mM:.2f}"
            f" (SE {standard_error:.2f}), truth {truth[tissue]:.2f} mM"
        )
        if tissue in MAIN_TISSUES:
            assert measured[tissue].mean_mM == pytest.approx(
                expected[tissue].mean_mM, abs=NOISE_STANDARD_ERRORS * standard_error
            ), tissue
