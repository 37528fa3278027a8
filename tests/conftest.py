"""Shared, session-scoped simulated sessions: each costs ~15 s, so every test module reuses them.

They use the acquisition the default configuration describes (``study_acquisition``): the tests that
share them check methods against that known set-up; drawn vials, PSFs and fields have their own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.population import Group
from simulator.session import SimulatedSession, SimulationOptions, simulate_session, study_acquisition

CLASSIC_SEED = 11
ENHANCED_SEED = 12
DRAWN_SEED = 21


def _simulate(factory: pytest.TempPathFactory, name: str, options: SimulationOptions) -> SimulatedSession:
    return simulate_session(factory.mktemp(name) / "session", options)


@pytest.fixture(scope="session")
def classic_session(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    """RRMS subject, classic MR Image Storage, sodium exam in a new study."""
    return _simulate(
        tmp_path_factory,
        "classic",
        study_acquisition(CLASSIC_SEED, Group.RRMS, new_study_for_sodium=True),
    )


@pytest.fixture(scope="session")
def enhanced_session(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    """SPMS subject, Enhanced MR Image Storage, sodium exam in the same study."""
    return _simulate(
        tmp_path_factory,
        "enhanced",
        study_acquisition(ENHANCED_SEED, Group.SPMS, enhanced=True, new_study_for_sodium=False),
    )


@pytest.fixture(scope="session")
def simulated_sessions(
    classic_session: SimulatedSession, enhanced_session: SimulatedSession
) -> dict[str, SimulatedSession]:
    return {"classic": classic_session, "enhanced": enhanced_session}


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def drawn_session(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    """HC subject with everything drawn as the simulator draws it for seed 21: tilted vials of their
    own sizes at the temples (80 mM on the patient's right, where the config expects 40), eyes, a
    coil-shaped 20 % receive field, a 5.8 mm PSF."""
    return _simulate(tmp_path_factory, "drawn", SimulationOptions(seed=DRAWN_SEED, group=Group.HC))
