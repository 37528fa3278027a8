"""The node's job runner: the processing pipeline on a job folder, results in ``<job>/results``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from node.jobs import JobQuality, JobSession, record_job_quality
from processing.measurements import Verdict
from processing.pipeline import process_session
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings
from sodium_node.config_models import Role
from sodium_node.errors import SessionError

log = logging.getLogger(__name__)

RESULTS_FOLDER = "results"
EXPORT_FOLDER = "export"
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


class Publish(Protocol):
    """Turns a results folder into DICOM objects in ``export_dir`` and queues them for delivery."""

    def __call__(
        self, results_dir: Path, sodium_files: Sequence[Path], export_dir: Path
    ) -> Sequence[object]: ...


class ProcessingRunner:
    """Runs ``process_session`` on a job's series, then ``publish`` (export + outbox) if given; any
    error fails the job (the worker records it and keeps the inputs). A result whose QC failed is a
    done job: its verdict, the checks that failed and how many objects were queued (none when
    ``output.send_failed_qc`` is false) go into ``job.json`` for ``sodium-node status``."""

    def __init__(self, settings: ProcessingSettings, *, publish: Publish | None = None) -> None:
        self.settings = settings
        self.publish = publish

    def run(self, job_folder: Path, session: JobSession) -> None:
        series = session_series_of(session)
        results_dir = job_folder / RESULTS_FOLDER
        measurements = process_session(series, results_dir, self.settings)
        verdict = measurements.qc_verdict
        failed = [check.step for check in measurements.checks_with(Verdict.FAIL)]
        log.log(
            logging.WARNING if verdict is Verdict.FAIL else logging.INFO,
            "job %s: %d tissue(s) measured, QC %s%s",
            session.job_id,
            len(measurements.tissues),
            verdict.value,
            f" ({', '.join(failed)})" if failed else "",
        )
        queued: Sequence[object] | None = None
        if self.publish is not None:
            queued = self.publish(results_dir, series.sodium, job_folder / EXPORT_FOLDER)
            log.info("job %s: %d objects queued for delivery", session.job_id, len(queued))
        record_job_quality(
            job_folder,
            JobQuality(
                verdict=verdict,
                failed_checks=tuple(failed),
                warned_checks=tuple(check.step for check in measurements.checks_with(Verdict.WARN)),
                objects_queued=None if queued is None else len(queued),
            ),
        )
