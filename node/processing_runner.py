"""The node's job runner: the processing pipeline on a job folder, results in ``<job>/results``."""

from __future__ import annotations

import logging
from pathlib import Path

from node.jobs import JobSession
from processing.pipeline import process_session
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings
from sodium_node.config_models import Role
from sodium_node.errors import SessionError

log = logging.getLogger(__name__)

RESULTS_FOLDER = "results"
REQUIRED_ROLES = (Role.SODIUM, Role.BODY_COIL_PDT2, Role.HEAD_COIL_PDT2, Role.T1_3D)


def session_series_of(session: JobSession) -> SessionSeries:
    missing = [role.value for role in REQUIRED_ROLES if role not in session.series]
    if missing:
        raise SessionError(f"job {session.job_id}: no series for role(s) {', '.join(missing)}")

    def paths(role: Role) -> tuple[Path, ...]:
        series = session.series.get(role)
        return () if series is None else tuple(instance.path for instance in series.instances)

    return SessionSeries(
        sodium=paths(Role.SODIUM),
        body_coil_pdt2=paths(Role.BODY_COIL_PDT2),
        head_coil_pdt2=paths(Role.HEAD_COIL_PDT2),
        t1_3d=paths(Role.T1_3D),
        lesion_seg=paths(Role.LESION_SEG),
    )


class ProcessingRunner:
    """Runs ``process_session`` on a job's series; any error fails the job (the worker records it)."""

    def __init__(self, settings: ProcessingSettings) -> None:
        self.settings = settings

    def run(self, job_folder: Path, session: JobSession) -> None:
        measurements = process_session(session_series_of(session), job_folder / RESULTS_FOLDER, self.settings)
        log.info("job %s: %d tissue(s) measured", session.job_id, len(measurements.tissues))
