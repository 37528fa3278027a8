"""The default classification rules on the simulator's series and on real Philips naming."""

from __future__ import annotations

import subprocess
import sys

import pytest

from node.classify import SeriesSummary, classify_folder, classify_series
from simulator.session import SimulatedSession
from sodium_node.config import Role, default_config_path, load_config

EXPECTED = {
    "T1W_3D_TFE": Role.T1_3D,
    "PD_T2_TSE": Role.HEAD_COIL_PDT2,
    "T1W_SE": Role.T1_2D,
    "Na_3DCONES": Role.SODIUM,
    "PD_T2_TSE_BODY": Role.BODY_COIL_PDT2,
}


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_default_rules_classify_the_simulated_session(
    kind: str, simulated_sessions: dict[str, SimulatedSession]
) -> None:
    rules = load_config(default_config_path()).classification.rules
    found, problems = classify_folder(simulated_sessions[kind].dicom_folder, rules)
    assert not problems
    roles = {item.summary.series_description: item.classification.role for item in found}
    segmentations = [item for item in found if item.summary.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"]
    assert [item.classification.role for item in segmentations] == [Role.LESION_SEG]
    assert {d: r for d, r in roles.items() if d in EXPECTED} == EXPECTED


def philips(
    description: str,
    coil: str,
    *,
    nucleus: str = "1H",
    mhz: float = 127.77,
    kind: str = "2D",
    echoes: int = 1,
) -> SeriesSummary:
    return SeriesSummary(
        series_instance_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        series_number=301,
        series_description=description,
        protocol_name=description,
        imaged_nucleus=nucleus,
        imaging_frequency_mhz=mhz,
        receive_coil_name=coil,
        transmit_coil_name="B",
        mr_acquisition_type=kind,
        echo_count=echoes,
    )


@pytest.mark.parametrize(
    ("summary", "role"),
    [
        (philips("sT1W_3D_TFE", "dS Head 32ch", kind="3D"), Role.T1_3D),
        (philips("3D_T1", "SENSE-Head-8", kind="3D"), Role.T1_3D),
        (philips("PD/T2 TSE", "dS Head 32ch", echoes=2), Role.HEAD_COIL_PDT2),
        (philips("DUAL_TSE", "Q-Body", echoes=2), Role.BODY_COIL_PDT2),
        (philips("PD_T2_TSE", "B", echoes=2), Role.BODY_COIL_PDT2),
        (philips("PD_T2_TSE", "SENSE-Head-32", echoes=1), Role.IGNORED),  # one echo only: not dual echo
        (philips("T1W_TSE", "dS Head 32ch"), Role.T1_2D),
        (philips("Na_3DCONES", "NA_TXRX_VOLUME", nucleus="23NA", mhz=33.796, kind="3D"), Role.SODIUM),
        (philips("sodium", "NA_VOLUME", nucleus="", mhz=33.8, kind="3D"), Role.SODIUM),
        (philips("SURVEY", "dS Head 32ch"), Role.IGNORED),
    ],
)
def test_default_rules_on_philips_naming(summary: SeriesSummary, role: Role) -> None:
    rules = load_config(default_config_path()).classification.rules
    assert classify_series(summary, rules).role is role


def test_classify_command_prints_a_role_per_series(classic_session: SimulatedSession) -> None:
    command = [sys.executable, "-m", "sodium_node.cli", "classify", str(classic_session.dicom_folder)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(classic_session.series_files)
    for description, role in EXPECTED.items():
        assert any(line.endswith(f" {description}") and f" {role.value} " in line for line in lines), (
            description
        )
