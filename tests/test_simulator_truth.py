"""The simulated sessions carry what the ground truth says: TSC by group, phantoms, SNR, poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from peers import load_nifti

from simulator.population import FRACTIONS_TABLE2, LESION_LOAD, TRUNCATION_SD, TSC_TABLE2_MM, Group
from simulator.session import SimulatedSession, simulate_session, study_acquisition
from simulator.tissues import Tissue
from sodium_node.cli import main

MEASURED_TISSUES = (Tissue.CORTICAL_GM, Tissue.DEEP_GM, Tissue.NAWM)


def sodium_floating_values(session: SimulatedSession) -> np.ndarray:
    """The sodium series as FP = (SV - SI) / SS on the simulator's [k, j, i] grid (classic files)."""
    datasets = [pydicom.dcmread(p) for p in session.series_files["sodium"]]
    datasets.sort(key=lambda d: int(d.InstanceNumber))
    stored = np.stack([d.pixel_array.astype(np.float64) for d in datasets])
    block = datasets[0].private_block(0x2005, "Philips MR Imaging DD 001")
    return (stored - float(block[0x0D].value)) / float(block[0x0E].value)


def assert_tsc_drawn_from_table2(truth: dict, group: Group) -> None:
    for tissue in MEASURED_TISSUES:
        row = TSC_TABLE2_MM[group][tissue]
        value = truth["tissues"][tissue.value]["tsc_true_mM"]
        assert abs(value - row.mean) <= TRUNCATION_SD * row.sd + 1e-9, (
            f"{group.value} {tissue.value}: {value}"
        )
    assert truth["tissues"]["csf"]["tsc_true_mM"] == 140.0


def test_tsc_values_come_from_table2(simulated_sessions: dict[str, SimulatedSession]) -> None:
    for session in simulated_sessions.values():
        truth = session.ground_truth
        assert_tsc_drawn_from_table2(truth, Group(truth["group"]))


def test_anatomy_is_adult_sized_with_group_lesion_load(
    simulated_sessions: dict[str, SimulatedSession],
) -> None:
    for session in simulated_sessions.values():
        truth = session.ground_truth
        volumes = truth["volumes"]
        # Adult TIV is 1.2-1.8 l. GMF and WMF are drawn from Table 2 (truncated at 2 SD) and reached
        # exactly in subject space; resampling to the 3D T1 grid moves them by < 0.005.
        assert 1150.0 < volumes["tiv_ml"] < 1800.0
        fractions = FRACTIONS_TABLE2[Group(truth["group"])]
        for name, row in (("gmf", fractions.grey), ("wmf", fractions.white)):
            assert abs(volumes[name] - row.mean) <= TRUNCATION_SD * row.sd + 0.005, f"{name} {volumes[name]}"
        assert volumes["bpf"] == pytest.approx(volumes["gmf"] + volumes["wmf"])
        load = LESION_LOAD[Group(truth["group"])]
        # The drawn lesion volume is reached in white matter, then resampled to the T1 grid.
        assert load.min_volume_ml * 0.9 <= truth["lesions"]["t2_volume_ml"] <= load.max_volume_ml * 1.3
        assert truth["lesions"]["count"] >= 1


def test_patient_moves_at_the_coil_change(classic_session: SimulatedSession) -> None:
    exams = classic_session.ground_truth["exams"]
    head = np.array(exams["head_coil"]["subject_to_scanner_lps"])
    sodium = np.array(exams["sodium"]["subject_to_scanner_lps"])
    t1_to_sodium = np.array(classic_session.ground_truth["t1_to_sodium_scanner_lps"])
    np.testing.assert_allclose(t1_to_sodium, sodium @ np.linalg.inv(head), atol=1e-6)
    assert not np.allclose(head, sodium, atol=0.5), "the two exams should have different head poses"
    np.testing.assert_allclose(t1_to_sodium[:3, :3] @ t1_to_sodium[:3, :3].T, np.eye(3), atol=1e-6)


def test_coil_change_study_split(simulated_sessions: dict[str, SimulatedSession]) -> None:
    for kind, expected_studies in (("classic", 2), ("enhanced", 1)):
        series = simulated_sessions[kind].ground_truth["series"]
        assert len({s["study_instance_uid"] for s in series.values()}) == expected_studies, kind
        assert len({s["frame_of_reference_uid"] for s in series.values()}) == 2, kind


def test_sodium_image_shows_both_phantoms_at_their_concentrations(classic_session: SimulatedSession) -> None:
    """Vial signal / receive field, median over each vial's core (along its own axis): 80/40 = 2.

    Tolerance 5 %: each core holds >= 8 voxels (more for the larger vials) at an SNR of ~16 (80 mM)
    and ~8 (40 mM), its centre > 2 PSF sigmas from the edge (< 3 % blur loss); a vial missing or
    misplaced gives a ratio far from 2.
    """
    truth = classic_session.ground_truth
    grid = truth["series"]["sodium"]["grid"]
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.array(grid["affine_ras"])
    signal = sodium_floating_values(classic_session)
    field = load_nifti(classic_session.folder / "ground_truth" / "sodium_space" / "receive_field.nii.gz")
    field_kji = np.asarray(field.get_fdata()).transpose(2, 1, 0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in signal.shape), indexing="ij")
    points = np.stack([i, j, k, np.ones_like(i)], axis=-1) @ affine_lps.T
    medians = []
    for vial in truth["phantoms"]:
        offset = points[..., :3] - np.array(vial["centre_scanner_lps_mm"])
        axis = np.array(vial["axis_lps"])
        axial = offset @ axis
        radial = np.linalg.norm(offset - axial[..., None] * axis, axis=-1)
        core = (radial < max(vial["radius_mm"] - 4.0, 2.5)) & (np.abs(axial) < vial["length_mm"] / 2.0 - 6.0)
        assert core.sum() >= 8, f"vial {vial['concentration_mM']} mM lies outside the sodium FOV"
        medians.append(float(np.median(signal[core] / field_kji[core])))
    assert medians[1] / medians[0] == pytest.approx(80.0 / 40.0, rel=0.05)
    per_mM = truth["parameters"]["sodium_signal_per_mM"]
    assert medians[0] / per_mM == pytest.approx(40.0, rel=0.05)


def test_sodium_snr_in_grey_matter_is_as_requested(classic_session: SimulatedSession) -> None:
    """(noisy - noise-free) SD over grey matter vs the mean grey matter signal: SNR 8 within 10 %.

    ~2,000 grey matter voxels estimate the SD to ~2 %; the Rician bias at SNR 8 is < 1 %.
    """
    truth_dir = classic_session.folder / "ground_truth" / "sodium_space"
    noisy = sodium_floating_values(classic_session)
    free = np.asarray(load_nifti(truth_dir / "signal_noise_free.nii.gz").get_fdata()).transpose(2, 1, 0)
    grey = sum(
        np.asarray(load_nifti(truth_dir / f"prob_{name}.nii.gz").get_fdata()).transpose(2, 1, 0)
        for name in ("cgm", "dgm")
    )
    voxels = grey >= 0.5
    snr = free[voxels].mean() / (noisy[voxels] - free[voxels]).std()
    assert snr == pytest.approx(classic_session.ground_truth["parameters"]["snr_in_gm"], rel=0.1)


def test_t1_space_label_map_matches_the_t1_grid(classic_session: SimulatedSession) -> None:
    truth = classic_session.ground_truth
    labels = load_nifti(classic_session.folder / "ground_truth" / "t1_space" / "labels.nii.gz")
    grid = truth["series"]["t1_3d"]["grid"]
    np.testing.assert_allclose(labels.affine, np.array(grid["affine_ras"]), atol=1e-5)
    assert list(labels.shape) == grid["shape_ijk"]
    values = np.asarray(labels.dataobj)
    cgm_ml = float((values == truth["label_values"]["cgm"]).sum()) / 1000.0
    # Hard labels vs fractional volume: cortex is thin, so partial voxels shift it by up to ~15 %.
    assert cgm_ml == pytest.approx(truth["tissues"]["cgm"]["volume_t1_space_ml"], rel=0.15)


def test_same_seed_gives_the_same_session(classic_session: SimulatedSession, tmp_path: Path) -> None:
    truth = classic_session.ground_truth
    again = simulate_session(
        tmp_path / "again",
        study_acquisition(truth["seed"], Group(truth["group"]), new_study_for_sodium=True),
    )
    assert again.ground_truth == truth
    for key, paths in classic_session.series_files.items():
        for first, second in zip(paths, again.series_files[key], strict=True):
            assert first.read_bytes() == second.read_bytes(), f"{key}: {first.name} differs"


@pytest.mark.parametrize(("group", "seed"), [(Group.HC, 13), (Group.CIS, 14)])
def test_cli_simulates_hc_and_cis_sessions(group: Group, seed: int, tmp_path: Path) -> None:
    out_dir = tmp_path / "session"
    assert main(["simulate", str(out_dir), "--seed", str(seed), "--group", group.value, "--quiet"]) == 0
    import json

    truth = json.loads((out_dir / "ground_truth" / "ground_truth.json").read_text())
    assert truth["group"] == group.value
    assert_tsc_drawn_from_table2(truth, group)
    assert truth["lesions"]["t2_volume_ml"] <= LESION_LOAD[group].max_volume_ml * 1.3
    if group is Group.HC:
        assert truth["lesions"]["count"] == 0
        assert not truth["lesion_seg"]["present"]
        assert not any(p.name.endswith("_SEG") for p in (out_dir / "dicom").iterdir())


def test_cli_refuses_a_non_empty_output_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "keep.txt").write_text("a user's file")
    assert main(["simulate", str(tmp_path), "--seed", "1", "--group", "HC", "--quiet"]) == 1
    assert "output folder is not empty" in caplog.text
    assert (tmp_path / "keep.txt").read_text() == "a user's file"
