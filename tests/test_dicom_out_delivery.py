"""Delivery: the durable outbox, C-STORE with retries, capability fallback, dead letter, resume.

The peers are pynetdicom Storage SCPs started in-process on free ports of 127.0.0.1 (each test
says which SOP classes its peer supports), and Orthanc (Debian package orthanc, `LocalOrthanc`) in
a private network namespace for the end-to-end tests, storage commitment included. Time is passed
explicitly (``now``) so that back-off and age limits are checked without waiting.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dicom_out_helpers import DestinationSpec, Export, export_session, store_scp, write_delivery_config
from node_helpers import free_port

from dicom_out.commands import outbox_status_lines
from dicom_out.delivery import DeliveryLock, Outcome, deliver_once
from dicom_out.outbox import (
    ITEM_JSON,
    OBJECT_FILE,
    ItemState,
    claim,
    enqueue,
    items_in,
    outbox_status,
    pending_items,
    recover_outbox,
    state_dir,
)
from dicom_out.retention import prune_receipts
from simulator.session import SimulatedSession
from sodium_node.config import NodeConfig, load_config
from sodium_node.config_models import ObjectKind

ALL_KINDS = tuple(ObjectKind)
WITHOUT_FALLBACK = tuple(kind for kind in ObjectKind if kind is not ObjectKind.MR_FALLBACK)
FEW = (ObjectKind.SEG, ObjectKind.SR, ObjectKind.SUMMARY)
ORTHANC = "/usr/sbin/Orthanc"


@pytest.fixture(scope="module")
def export(classic_session: SimulatedSession, tmp_path_factory: pytest.TempPathFactory) -> Export:
    return export_session(classic_session, tmp_path_factory.mktemp("delivery_export"))


def _config(tmp_path: Path, *destinations: DestinationSpec) -> NodeConfig:
    return load_config(write_delivery_config(tmp_path / "node", destinations))


def _states(config: NodeConfig, destination: str) -> dict[ItemState, int]:
    return {state: len(items) for state in ItemState if (items := items_in(config, destination, state))}


def test_everything_arrives_once_and_the_outbox_keeps_only_receipts(export: Export, tmp_path: Path) -> None:
    pacs, archive = free_port(), free_port()
    config = _config(
        tmp_path,
        DestinationSpec("PACS", pacs, accepts=ALL_KINDS),
        DestinationSpec("ARCHIVE", archive, accepts=WITHOUT_FALLBACK),
    )
    created = enqueue(export.folder, config)
    assert enqueue(export.folder, config) == [], "the same bytes are queued once per destination"
    assert len(created) == 2 * len(export.objects)
    with (
        store_scp(pacs, export.sop_classes()) as at_pacs,
        store_scp(archive, export.sop_classes()) as at_archive,
    ):
        report = deliver_once(config)
    assert at_pacs.counts() == {uid: 1 for uid in export.uids()}
    assert at_archive.counts() == {uid: 1 for uid in export.uids(*WITHOUT_FALLBACK)}, (
        "a destination that does not accept mr_fallback gets it only if it refuses the Parametric Map"
    )
    fallback_count = len(export.uids(ObjectKind.MR_FALLBACK))
    assert len(report.of(Outcome.DELIVERED)) == len(export.objects) + len(export.uids(*WITHOUT_FALLBACK))
    assert len(report.of(Outcome.NOT_NEEDED)) == fallback_count
    assert _states(config, "PACS") == {ItemState.DONE: len(export.objects)}
    assert _states(config, "ARCHIVE") == {
        ItemState.DONE: len(export.objects) - fallback_count,
        ItemState.UNNEEDED: fallback_count,
    }
    done = state_dir(config, "PACS", ItemState.DONE)
    assert not list(done.glob(f"*/{OBJECT_FILE}")), "acknowledged objects' bytes are deleted"
    assert len(list(done.glob(f"*/{ITEM_JSON}"))) == len(export.objects), "a receipt per object"
    assert pending_items(config) == []


def test_pacs_down_then_up_retries_with_backoff_and_delivers_each_object_once(
    export: Export, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there yet
    config = _config(tmp_path, DestinationSpec("PACS", port, initial_backoff_s=0.2, max_backoff_s=0.5))
    start = time.time()
    enqueue(export.folder, config, now=start)
    with caplog.at_level(logging.INFO, logger="dicom_out"):
        first = deliver_once(config, now=start)
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("dicom_out")
    ]
    assert len(warnings) == 1, "one line per destination and attempt, not one per object"
    assert f"{len(export.objects)} objects wait, next attempt in 0 s" in warnings[0]
    assert len(first.of(Outcome.RETRY)) == len(export.objects)
    assert (
        "no association" in first.events[0].detail and "PACS (TEST_PACS@127.0.0.1" in first.events[0].detail
    )
    queued = items_in(config, "PACS", ItemState.QUEUED)
    assert {(item.attempts, item.next_attempt_at) for item in queued} == {(1, start + 0.2)}
    assert deliver_once(config, now=start + 0.1).events == (), "nothing is due before its back-off ends"
    deliver_once(config, now=start + 0.3)
    queued = items_in(config, "PACS", ItemState.QUEUED)
    assert {(item.attempts, item.next_attempt_at) for item in queued} == {(2, start + 0.3 + 0.4)}
    deliver_once(config, now=start + 0.8)
    queued = items_in(config, "PACS", ItemState.QUEUED)
    assert {(item.attempts, item.next_attempt_at) for item in queued} == {(3, start + 0.8 + 0.5)}, "capped"
    lines = "\n".join(outbox_status_lines(config))
    assert "queued" in lines and "no association" in lines
    assert "attempts 3, next in " in lines, "status shows the attempts and when the next one is"
    with store_scp(port, export.sop_classes()) as received:
        report = deliver_once(config, now=start + 2.0)
    assert len(report.of(Outcome.DELIVERED)) == len(export.objects)
    assert received.counts() == {uid: 1 for uid in export.uids()}
    assert pending_items(config) == []


def test_a_peer_without_parametric_map_gets_the_mr_fallback(export: Export, tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, DestinationSpec("PACS", port, accepts=WITHOUT_FALLBACK))
    enqueue(export.folder, config)
    assert _states(config, "PACS")[ItemState.HELD] == len(export.uids(ObjectKind.MR_FALLBACK))
    with store_scp(port, export.sop_classes(ObjectKind.PARAMETRIC_MAP)) as received:
        report = deliver_once(config)
    expected = export.uids() - export.uids(ObjectKind.PARAMETRIC_MAP)
    assert received.counts() == {uid: 1 for uid in expected}, "the MR fallback goes over the same association"
    (refusal,) = report.of(Outcome.REFUSED)
    assert refusal.kind is ObjectKind.PARAMETRIC_MAP
    assert "Parametric Map Storage" in refusal.detail and "MR fallback" in refusal.detail
    assert _states(config, "PACS") == {ItemState.DONE: len(expected), ItemState.REFUSED: 1}
    (entry,) = [entry for entry in outbox_status(config) if entry.state is ItemState.REFUSED]
    (listed,) = entry.items
    assert listed.startswith(f"parametric_map {export.uids(ObjectKind.PARAMETRIC_MAP).pop()}")
    refused = state_dir(config, "PACS", ItemState.REFUSED)
    assert len(list(refused.glob(f"*/{OBJECT_FILE}"))) == 1, "a refused object is kept"


def test_a_peer_without_sr_still_gets_the_summary(export: Export, tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, DestinationSpec("PACS", port))
    enqueue(export.folder, config)
    with store_scp(port, export.sop_classes(ObjectKind.SR)) as received:
        report = deliver_once(config)
    assert received.counts() == {uid: 1 for uid in export.uids() - export.uids(ObjectKind.SR)}
    assert export.uids(ObjectKind.SUMMARY) <= set(received.counts())
    assert [event.kind for event in report.of(Outcome.REFUSED)] == [ObjectKind.SR]
    lines = "\n".join(outbox_status_lines(config))
    assert "refused" in lines and "Comprehensive 3D SR" in lines


def test_items_older_than_max_age_go_to_the_dead_letter_folder(export: Export, tmp_path: Path) -> None:
    config = _config(tmp_path, DestinationSpec("PACS", free_port(), max_age_hours=0.5))
    start = time.time()
    enqueue(export.folder, config, now=start)
    deliver_once(config, now=start)
    report = deliver_once(config, now=start + 0.5 * 3600 + 1)
    assert len(report.of(Outcome.DEAD_LETTER)) == len(export.objects)
    assert "given up after 1 attempts" in report.events[0].detail
    assert "no association" in report.events[0].detail
    dead = config.storage.dead_letter_dir / "PACS"
    assert len(list(dead.glob(f"*/{OBJECT_FILE}"))) == len(export.objects), "the bytes are kept"
    (entry,) = outbox_status(config, now=start + 0.5 * 3600 + 1)
    assert entry.state is ItemState.DEAD_LETTER and entry.count == len(export.objects)
    assert all("given up" in item for item in entry.items)
    assert pending_items(config) == []


def test_a_restart_resumes_items_left_in_sending_without_duplicates(export: Export, tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, DestinationSpec("PACS", port))
    enqueue(export.folder, config)
    lock = DeliveryLock(config)
    assert lock.acquire(blocking=False)
    assert not DeliveryLock(config).acquire(blocking=False), "one deliverer per outbox"
    interrupted = [claim(config, item) for item in items_in(config, "PACS", ItemState.QUEUED)[:3]]
    assert all(item is not None for item in interrupted)
    assert _states(config, "PACS")[ItemState.SENDING] == 3
    lock.release()  # the process "dies": its lock goes with it

    restarted = DeliveryLock(config)
    assert restarted.acquire(blocking=False)
    try:
        assert recover_outbox(config) == 3
        with store_scp(port, export.sop_classes()) as received:
            deliver_once(config)
    finally:
        restarted.release()
    assert received.counts() == {uid: 1 for uid in export.uids()}
    assert _states(config, "PACS") == {ItemState.DONE: len(export.objects)}


def test_receipts_are_removed_after_the_retention_period_refused_items_are_kept(
    export: Export, tmp_path: Path
) -> None:
    port = free_port()
    config = load_config(
        write_delivery_config(
            tmp_path / "node", [DestinationSpec("PACS", port, accepts=FEW)], receipt_retention_days="2.0"
        )
    )
    enqueue(export.folder, config)
    with store_scp(port, export.sop_classes(ObjectKind.SR)):
        deliver_once(config)
    assert _states(config, "PACS") == {ItemState.DONE: 2, ItemState.REFUSED: 1}
    settled = [item.settled_at for item in items_in(config, "PACS", ItemState.DONE)]
    assert all(moment is not None for moment in settled)
    last = max(moment for moment in settled if moment is not None)
    assert prune_receipts(config, now=last + 1.99 * 86400) == 0, "kept for receipt_retention_days"
    assert prune_receipts(config, now=last + 2 * 86400) == 2
    assert _states(config, "PACS") == {ItemState.REFUSED: 1}, "a refused object waits for an operator"
    assert not list(state_dir(config, "PACS", ItemState.DONE).iterdir())
    assert not list((config.storage.outbox_dir / "PACS" / "tmp").iterdir()), "nothing half-removed"
    assert len(enqueue(export.folder, config)) == 2, "once pruned, the same export is sent again"


def _run_orthanc_driver(project_root: Path, export: Export, work: Path, scenarios: str) -> dict[str, Any]:
    """Orthanc listens on every interface: it and the node run in a private network namespace."""
    if not Path(ORTHANC).is_file():
        pytest.fail(f"{ORTHANC} is missing: install the Debian package orthanc (make tools)")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the Orthanc tests need root and unshare(1) (Debian package util-linux)")
    driver = project_root / "tests" / "orthanc_delivery_driver.py"
    script = f"ip link set lo up && exec {sys.executable} {driver} {export.folder} {work} {scenarios}"
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=400, check=False
    )
    assert result.returncode == 0, f"driver failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_orthanc_gets_everything_once_after_downtime_and_after_kill_9(
    export: Export, tmp_path: Path, project_root: Path
) -> None:
    outcome = _run_orthanc_driver(project_root, export, tmp_path, "down_then_up,kill9")
    everything_once = {uid: 1 for uid in export.uids()}

    down = outcome["down_then_up"]
    assert down["failed_attempts_before_up"] >= 1, "the sender had to retry while Orthanc was down"
    assert down["returncode"] == 0, down["log"]
    assert Counter(down["orthanc"]) == everything_once, "PM, MR fallback, SEG, SR and summary, each once"

    killed = outcome["kill9"]
    assert killed["first_returncode"] == -signal.SIGKILL, "the first sender was killed mid-send"
    assert killed["sending_at_kill"] >= 1 and killed["in_orthanc_at_kill"] < len(export.objects)
    assert killed["returncode"] == 0, killed["log"]
    assert Counter(killed["orthanc"]) == everything_once, "nothing lost, nothing duplicated"
    assert killed["outbox"]["done"] == len(export.objects) and killed["outbox"]["sending"] == 0


def test_orthanc_storage_commitment_done_only_once_reported_and_waiting_while_not(
    export: Export, tmp_path: Path, project_root: Path
) -> None:
    """PACS (Orthanc) reports to the node service: done. SILENT (Orthanc) reports to nowhere: the
    objects wait in committing/ (bytes kept, asked again, in the status) across a node restart,
    until SILENT, restarted knowing the node, reports to `sodium-node send`."""
    outcome = _run_orthanc_driver(project_root, export, tmp_path, "commitment")["commitment"]
    few = export.uids(ObjectKind.SEG, ObjectKind.SR, ObjectKind.SUMMARY)
    everything = len(export.objects)

    pacs, silent = outcome["with_service"]["PACS"], outcome["with_service"]["SILENT"]
    assert pacs["states"]["done"] == everything and pacs["objects_in_done"] == 0
    assert pacs["committed_after_stored"], "committed_at comes from Orthanc's report, after the C-STORE"
    assert Counter(outcome["pacs"]) == {uid: 1 for uid in export.uids()}
    assert silent["states"]["committing"] == len(few) and silent["states"]["done"] == 0, "stored is not done"
    assert silent["objects_kept"] == len(few), "the bytes are kept while waiting"
    assert silent["requests"] == [2], "asked again after commitment_timeout_s"
    assert Counter(outcome["silent_at_stop"]) == {uid: 1 for uid in few}, "asking again does not store again"
    status = "\n".join(outcome["status"])
    assert (
        re.search(r"SILENT +committing +3 ", status) and "no storage commitment report from SILENT" in status
    )

    assert outcome["send_returncode"] == 0, outcome["log"]
    after = outcome["after_send"]["SILENT"]
    assert after["states"]["done"] == len(few) and after["states"]["committing"] == 0
    assert after["objects_in_done"] == 0 and after["committed_after_stored"]
    assert Counter(outcome["silent"]) == {uid: 1 for uid in few}
