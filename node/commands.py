"""`sodium-node serve | import | classify | status | reprocess`: the node on the command line."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import signal
import threading
from pathlib import Path
from types import FrameType

from dicom_out.commands import outbox_status_lines
from dicom_out.publish import Publisher
from node.classify import classify_folder
from node.importer import import_folder
from node.index import InstanceState
from node.jobs import JobQuality, JobQueue, JobState, read_job_quality
from node.processing_runner import RESULTS_FOLDER, ProcessingRunner
from node.receive import Receiver
from node.retention import clean
from node.service import NodeService, open_index
from node.sessions import SessionState, all_session_ids, evaluate_session, set_session_state
from processing.measurements import MeasurementsError, Verdict, read_measurements
from sodium_node.cli import LOG_FORMAT
from sodium_node.config import NodeConfig, config_path, load_config
from sodium_node.config_commands import add_config_option
from sodium_node.paths import input_folder

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_SERVICE_DIED = 70
"""EX_SOFTWARE: a service thread died; the service manager restarts the node, recovery takes over."""
STATUS_TEXT_LIMIT = 64
"""Longest patient ID or series description ``status`` prints (the values come from the sender)."""
ERROR_TEXT_LIMIT = 300


def _config(args: argparse.Namespace) -> NodeConfig:
    return load_config(config_path(args.config))


def configure_log_file(config: NodeConfig) -> None:
    logging.getLogger().setLevel(config.logging.level.value)
    if config.logging.file is not None:
        config.logging.file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.FileHandler = (
            logging.handlers.TimedRotatingFileHandler(
                config.logging.file, when="midnight", backupCount=config.logging.keep_days
            )
            if config.logging.keep_days
            else logging.FileHandler(config.logging.file)
        )
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)


def serve(args: argparse.Namespace) -> int:
    config = _config(args)
    configure_log_file(config)
    runner = ProcessingRunner.from_config(config, publish=Publisher(config))
    service = NodeService(config, runner, port=args.port)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    service.start()
    print(
        f"sodium-node listening as {config.network.ae_title} on {config.network.host}:{service.port}",
        flush=True,
    )
    while not stop.wait(0.5):
        if service.supervisor.failed.is_set():
            break
    service.stop()
    if service.supervisor.failed.is_set():
        log.critical("node stopped because %s; exit %d", service.supervisor.failure, EXIT_SERVICE_DIED)
        return EXIT_SERVICE_DIED
    return EXIT_OK


def import_command(args: argparse.Namespace) -> int:
    config = _config(args)
    folder = input_folder(Path(args.folder), "DIR")
    index = open_index(config)
    receiver = Receiver(config, index)
    before = index.counts().get(InstanceState.QUARANTINED.value, 0)
    summary = import_folder(receiver, folder)
    receiver.drain()
    quarantined = index.counts().get(InstanceState.QUARANTINED.value, 0) - before
    print(
        f"{folder}: {summary.files} files, {summary.new_instances} new instances, "
        f"{summary.duplicates} duplicates, {quarantined} quarantined (see {config.storage.quarantine_dir})"
        + (f", {summary.not_taken} not readable (see the log)" if summary.not_taken else "")
    )
    return EXIT_OK if not summary.not_taken else EXIT_FAILURE


def classify_command(args: argparse.Namespace) -> int:
    config = _config(args)
    found, problems = classify_folder(input_folder(Path(args.folder), "DIR"), config.classification.rules)
    columns = ("series", "role", "rule", "n", "echoes", "nucleus", "coil", "description")
    print("{:>6}  {:<15} {:>4}  {:>4} {:>6}  {:<7} {:<16} {}".format(*columns))
    for item in found:
        summary = item.summary
        rule = str(item.classification.rule_index + 1) if item.classification.rule_index >= 0 else "-"
        number = "-" if summary.series_number is None else str(summary.series_number)
        print(
            f"{number:>6}  {item.classification.role.value:<15} {rule:>4}  {item.instance_count:>4} "
            f"{summary.echo_count:>6}  {summary.imaged_nucleus:<7} {summary.receive_coil_name[:16]:<16} "
            f"{summary.series_description}"
        )
    for problem in problems:
        print(f"unreadable: {problem}")
    return EXIT_OK


def describe_quality(quality: JobQuality, *, send_failed_qc: bool) -> str:
    """A job's QC for ``status``, e.g. ``QC FAIL (calibration, vial_snr): not sent (...)``."""
    listed = quality.failed_checks or quality.warned_checks
    text = f"QC {quality.verdict.value.upper()}" + (f" ({', '.join(listed)})" if listed else "")
    if quality.verdict is Verdict.FAIL and not send_failed_qc:
        return text + ": not sent (output.send_failed_qc = false)"
    if quality.objects_queued is not None:
        text += f": {quality.objects_queued} objects queued"
    return text


def printable(text: str, limit: int = STATUS_TEXT_LIMIT) -> str:
    """``text`` safe for a terminal: control characters as escapes (``\\x1b``), cut to ``limit``."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


SESSION_OUTCOMES = {
    JobState.BUILDING: "queued",
    JobState.PENDING: "queued",
    JobState.RUNNING: "processing",
    JobState.DONE: "done",
    JobState.FAILED: "failed",
}
"""What a queued session's newest job says of it, for ``status``."""


def session_outcome(state: SessionState, newest_job: JobState | None) -> str:
    if state is SessionState.QUEUED and newest_job is not None:
        return SESSION_OUTCOMES[newest_job]
    return state.value


def results_line(job_folder: Path) -> str:
    """``results PATH  cgm 41.2  dgm 40.1  ... mM`` for a done job ('' if it has no readable results)."""
    results = job_folder / RESULTS_FOLDER
    try:
        measurements = read_measurements(results)
    except MeasurementsError as error:
        return f"results unreadable: {printable(str(error), ERROR_TEXT_LIMIT)}"
    values = "  ".join(f"{m.tissue.value} {m.mean_mM:.1f}" for m in measurements.tissues)
    return f"results {results}  {values} mM"


def status_command(args: argparse.Namespace) -> int:
    config = _config(args)
    index = open_index(config)
    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=config.sessions.max_job_attempts)
    counts = index.counts()
    print(
        "instances: " + (", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "none")
    )
    session_ids = all_session_ids(index)
    if not session_ids:
        print("no sessions")
    for session_id in session_ids:
        report = evaluate_session(index, session_id, config)
        jobs = queue.jobs_of(session_id)
        outcome = session_outcome(report.state, jobs[-1][1] if jobs else None)
        ready = "complete" if report.required_complete else report.describe_missing()
        print(f"session {session_id}  patient {printable(report.patient_id)}  {outcome}  {ready}")
        for status in report.series:
            expected = f"/{status.expected}" if status.expected is not None else ""
            number = "-" if status.series_number is None else str(status.series_number)
            print(
                f"  {status.role.value:<15} series {number:>5}"
                f"  {status.instances:>4}{expected:<5} {'complete' if status.complete else 'incomplete':<10} "
                f"{printable(status.series_description)}"
            )
        for job_id, state, attempts, error in jobs:
            folder = queue.folder_of(job_id)
            quality = None if folder is None else read_job_quality(folder)
            described = (
                ""
                if quality is None
                else "  " + describe_quality(quality, send_failed_qc=config.output.send_failed_qc)
            )
            failure = f"  {printable(error, ERROR_TEXT_LIMIT)}" if error else ""
            print(f"  job {job_id}  {state.value}  attempts {attempts}{failure}{described}")
            if state is JobState.DONE and folder is not None:
                print(f"    {results_line(folder)}")
    for line in outbox_status_lines(config):
        print(line)
    return EXIT_OK


def clean_command(args: argparse.Namespace) -> int:
    config = _config(args)
    index = open_index(config)
    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=config.sessions.max_job_attempts)
    removed = clean(config, index, queue)
    print(
        f"removed {removed.sessions} delivered sessions older than "
        f"{config.retention.delivered_session_days:g} days and {removed.quarantined_files} quarantined "
        f"files older than {config.retention.quarantine_days:g} days (0 = kept for ever)"
    )
    return EXIT_OK


def reprocess_command(args: argparse.Namespace) -> int:
    config = _config(args)
    index = open_index(config)
    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=config.sessions.max_job_attempts)
    report = evaluate_session(index, args.session, config)
    if not report.minimum_present:
        print(f"session {args.session} cannot be processed: {report.describe_missing()}")
        return EXIT_FAILURE
    job_id = queue.create(report, partial=not report.required_complete)
    if job_id is None:
        set_session_state(index, args.session, SessionState.OPEN, reprocess_requested=True)
        print(f"session {args.session} has a job queued or running; it is reprocessed once that job ends")
    else:
        print(f"session {args.session}: queued job {job_id}")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:

    parser = commands.add_parser("serve", help="run the DICOM node: receive, group sessions, run jobs")
    add_config_option(parser)
    parser.add_argument("--port", type=int, default=None, help="listen on this port instead (0: any free)")
    parser.set_defaults(handler=serve)

    parser = commands.add_parser(
        "import", help="take a folder of DICOM files (e.g. from media) into the node"
    )
    parser.add_argument("folder", metavar="DIR")
    add_config_option(parser)
    parser.set_defaults(handler=import_command)

    parser = commands.add_parser("classify", help="print the role of every series in a folder (dry run)")
    parser.add_argument("folder", metavar="DIR")
    add_config_option(parser)
    parser.set_defaults(handler=classify_command)

    parser = commands.add_parser("status", help="list sessions, their roles and completeness, and jobs")
    add_config_option(parser)
    parser.set_defaults(handler=status_command)

    parser = commands.add_parser("reprocess", help="queue a session for processing again")
    parser.add_argument("session", metavar="SESSION")
    add_config_option(parser)
    parser.set_defaults(handler=reprocess_command)

    parser = commands.add_parser(
        "clean",
        help="remove delivered sessions and quarantined files past their retention (as serve does hourly)",
    )
    add_config_option(parser)
    parser.set_defaults(handler=clean_command)
