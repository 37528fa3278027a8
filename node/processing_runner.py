"""The node's job runner: the processing pipeline on a job folder, results in ``<job>/results``.

The pipeline runs in a child process (node/child_process.py) with ``processing.max_step_minutes``
per step and its log in ``<job>/processing.log``; export and delivery run here, in the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from node.child_process import StepReporter, run_in_child
from node.jobs import JobQuality, JobSession, record_job_quality
from processing.measurements import Verdict, read_measurements
from processing.pipeline import process_session
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings, settings_from_config
from sodium_node.config_models import PROCESSING_ROLES, NodeConfig, Role
from sodium_node.errors import SessionError

log = logging.getLogger(__name__)

RESULTS_FOLDER = "results"
EXPORT_FOLDER = "export"
PROCESSING_LOG = "processing.log"
DEFAULT_MAX_STEP_MINUTES = 30.0


def session_series_of(session: JobSession) -> SessionSeries:
    missing = [role.value for role in PROCESSING_ROLES if role not in session.series]
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

    def __init__(
        self,
        settings: ProcessingSettings,
        *,
        publish: Publish | None = None,
        max_step_minutes: float = DEFAULT_MAX_STEP_MINUTES,
    ) -> None:
        self.settings = settings
        self.publish = publish
        self.max_step_minutes = max_step_minutes

    @classmethod
    def from_config(cls, config: NodeConfig, *, publish: Publish | None = None) -> ProcessingRunner:
        return cls(
            settings_from_config(config.processing),
            publish=publish,
            max_step_minutes=config.processing.max_step_minutes,
        )

    def run(self, job_folder: Path, session: JobSession) -> None:
        series = session_series_of(session)
        results_dir = job_folder / RESULTS_FOLDER
        run_in_child(
            _process,
            (series, results_dir, self.settings),
            step_limit_s=self.max_step_minutes * 60,
            log_file=job_folder / PROCESSING_LOG,
            name=f"job {session.job_id}",
        )
        measurements = read_measurements(results_dir)
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


def _process(
    series: SessionSeries, results_dir: Path, settings: ProcessingSettings, *, on_step: StepReporter
) -> None:
    """The child process's task (module level: ``spawn`` imports it by name)."""
    process_session(series, results_dir, settings, on_step=on_step)
