"""Retention (node/retention.py): a delivered session is forgotten after its days, nothing else is."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from pathlib import Path

from node_helpers import query, running_node, storescu, wait_for
from test_node_receive import all_files

from dicom_out.outbox import ITEM_JSON, ItemState, ObjectKind, OutboxItem, state_dir
from node.commands import configure_log_file
from node.jobs import JobQuality, JobQueue, JobSession, JobState, record_job_quality
from node.retention import clean
from node.service import NodeService, open_index
from processing.measurements import Verdict
from simulator.session import SimulatedSession
from sodium_node.config import NodeConfig, load_config

DAY = 86400.0


class PublishingRunner:
    """Stands in for processing + publishing: records 64 objects queued (or fails the job)."""

    fail = False

    def run(self, job_folder: Path, session: JobSession) -> None:
        if self.fail:
            raise RuntimeError("processing failed")
        record_job_quality(job_folder, JobQuality(Verdict.PASS, (), (), objects_queued=64))


def received_and_processed(node: NodeService, files: list[Path], state: JobState) -> None:
    storescu(node.port, files)
    folder = node.config.storage.jobs_dir / state.value
    wait_for(lambda: folder.is_dir() and any(folder.iterdir()), what=f"a {state.value} job")


def spool_files(config: NodeConfig) -> list[Path]:
    return [path for path in (config.storage.spool_dir / "objects").rglob("*") if path.is_file()]


def queued_item(config: NodeConfig, job_id: str) -> Path:
    """An outbox item, not yet delivered, exported by ``job_id``."""
    item = OutboxItem(
        item_id="PACS-1",
        destination="PACS",
        kind=ObjectKind.SR,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
        sop_instance_uid="1.2.3.4",
        sha256="0" * 64,
        source=str(config.storage.jobs_dir / "done" / job_id / "export" / "sr.dcm"),
        first_queued_at=time.time(),
        next_attempt_at=time.time(),
    )
    folder = state_dir(config, "PACS", ItemState.QUEUED) / item.item_id
    folder.mkdir(parents=True)
    (folder / ITEM_JSON).write_text(json.dumps(item.to_json()))
    return folder


def test_a_delivered_session_is_removed_after_its_days_and_a_failed_one_is_kept(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    runner = PublishingRunner()
    files = all_files(classic_session)
    with running_node(tmp_path, runner) as node:
        received_and_processed(node, files, JobState.DONE)
        config = node.config
    assert config.retention.delivered_session_days == 30.0
    index = open_index(config)
    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=3)
    now = time.time()
    assert clean(config, index, queue, now=now + 29 * DAY).sessions == 0, "not yet 30 days"
    ((job_id,),) = query(config, "SELECT job_id FROM jobs")
    item = queued_item(config, str(job_id))
    assert clean(config, index, queue, now=now + 31 * DAY).sessions == 0, "an object still to deliver"
    (item / ITEM_JSON).unlink()
    item.rmdir()

    assert spool_files(config)
    assert clean(config, index, queue, now=now + 31 * DAY).sessions == 1
    assert query(config, "SELECT COUNT(*) FROM instances") == [(0,)]
    assert query(config, "SELECT COUNT(*) FROM sessions") == [(0,)]
    assert query(config, "SELECT COUNT(*) FROM jobs") == [(0,)]
    assert spool_files(config) == [], "the session's received files are gone"
    assert not any((config.storage.jobs_dir / "done").iterdir()), "and its job folder"
    index.close()

    # The same instances sent again are a new session; this time its job fails: kept for ever.
    runner.fail = True
    with running_node(tmp_path, runner) as node:
        received_and_processed(node, files, JobState.FAILED)
    index = open_index(config)
    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=3)
    assert clean(config, index, queue, now=time.time() + 3650 * DAY).sessions == 0
    assert len(spool_files(config)) == len(files)
    index.close()


def test_quarantined_files_older_than_their_days_are_removed_with_their_reasons(tmp_path: Path) -> None:
    with running_node(tmp_path, PublishingRunner()) as node:
        config = node.config
    quarantine = config.storage.quarantine_dir
    quarantine.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for name, age_days in (("old", 91), ("new", 89)):
        for suffix in (".dcm", ".reason.json"):
            path = quarantine / f"{name}{suffix}"
            path.write_text("{}")
            os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    index = open_index(config)
    removed = clean(config, index, JobQueue(config.storage.jobs_dir, index, max_attempts=3), now=now)
    index.close()
    assert removed.quarantined_files == 2
    assert sorted(path.name for path in quarantine.iterdir()) == ["new.dcm", "new.reason.json"]


def test_the_log_file_rotates_daily_and_keeps_its_days(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('logging.file = "node.log"\nlogging.keep_days = 7\n')
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        configure_log_file(load_config(site))
        (added,) = [handler for handler in root.handlers if handler not in before]
        assert isinstance(added, logging.handlers.TimedRotatingFileHandler)
        assert (added.when, added.backupCount) == ("MIDNIGHT", 7)
        assert Path(added.baseFilename) == tmp_path / "node.log"
    finally:
        for handler in [handler for handler in root.handlers if handler not in before]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
