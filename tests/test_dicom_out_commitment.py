"""Storage commitment: done only once committed, failures stored again, asked again without a report.

The PACS is an in-process pynetdicom peer (`commitment_peer`) that reports like Orthanc, on an
association of its own to the node's listener: the one `sodium-node send` runs
(`start_report_listener`) or the node service's own (`node.scp`). The destinations accept the SEG,
SR and summary only (3 objects) to keep the tests short; Orthanc as the peer is in
`test_dicom_out_delivery.py`. Time is passed explicitly (``now``) for time-outs and back-off.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from commitment_peer import PUSH_MODEL, PUSH_MODEL_INSTANCE, commitment_scp
from dicom_out_helpers import DestinationSpec, Export, export_session, write_delivery_config
from node_helpers import free_port
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role

from dicom_out.commands import outbox_status_lines
from dicom_out.commitment_reports import (
    CommitmentReport,
    EventType,
    pending_reports,
    reports_dir,
    save_report,
)
from dicom_out.commitment_scp import start_report_listener
from dicom_out.delivery import DeliveryLock, Outcome, deliver_once
from dicom_out.outbox import (
    OBJECT_FILE,
    ItemState,
    enqueue,
    items_in,
    pending_items,
    recover_outbox,
    state_dir,
)
from node.service import NodeService
from node.worker import InventoryRunner
from simulator.session import SimulatedSession
from sodium_node.config import NodeConfig, load_config
from sodium_node.config_models import ObjectKind

FEW = (ObjectKind.SEG, ObjectKind.SR, ObjectKind.SUMMARY)
WAIT_S = 20.0


@pytest.fixture(scope="module")
def export(classic_session: SimulatedSession, tmp_path_factory: pytest.TempPathFactory) -> Export:
    return export_session(classic_session, tmp_path_factory.mktemp("commitment_export"))


def _config(tmp_path: Path, node_port: int, spec: DestinationSpec) -> NodeConfig:
    return load_config(write_delivery_config(tmp_path / "node", [spec], node_port=node_port))


def _pacs(port: int, *, commitment_timeout_s: float = 600.0, max_age_hours: float = 1.0) -> DestinationSpec:
    return DestinationSpec(
        "PACS",
        port,
        accepts=FEW,
        storage_commitment=True,
        commitment_timeout_s=commitment_timeout_s,
        max_age_hours=max_age_hours,
    )


def _states(config: NodeConfig) -> dict[ItemState, int]:
    return {state: len(items) for state in ItemState if (items := items_in(config, "PACS", state))}


def _objects_in(config: NodeConfig, state: ItemState) -> int:
    return len(list(state_dir(config, "PACS", state).glob(f"*/{OBJECT_FILE}")))


def test_objects_are_done_only_once_the_pacs_reports_them_committed(export: Export, tmp_path: Path) -> None:
    node_port, pacs_port = free_port(), free_port()
    config = _config(tmp_path, node_port, _pacs(pacs_port))
    enqueue(export.folder, config)
    listener = start_report_listener(config)
    try:
        with commitment_scp(pacs_port, export.sop_classes(), report_to_port=node_port) as pacs:
            pacs.hold()
            stored = deliver_once(config)
            assert len(stored.of(Outcome.STORED)) == len(stored.of(Outcome.COMMITMENT_REQUESTED)) == 3
            assert _states(config) == {ItemState.COMMITTING: 3}, "stored is not done"
            assert _objects_in(config, ItemState.COMMITTING) == 3, "the bytes are kept until committed"
            assert len(pending_items(config)) == 3
            lines = "\n".join(outbox_status_lines(config))
            assert "committing" in lines and "waiting for the storage commitment report" in lines
            assert deliver_once(config).events == (), "nothing to do while the report is not due"

            pacs.release()
            pacs.wait_for_reports(1)
            assert pacs.report_statuses == [0x0000], "the listener saved the report and answered success"
            (transaction_uid, requested), *_ = pacs.requests
            assert set(requested) == export.uids(*FEW)
            committed = deliver_once(config)
    finally:
        listener.shutdown()
    assert len(committed.of(Outcome.COMMITTED)) == 3
    assert _states(config) == {ItemState.DONE: 3}
    assert _objects_in(config, ItemState.DONE) == 0, "the bytes go once committed"
    for item in items_in(config, "PACS", ItemState.DONE):
        assert item.transaction_uid == transaction_uid
        assert item.acknowledged_at is not None and item.committed_at is not None
        assert item.committed_at >= item.acknowledged_at
    assert pacs.received.counts() == {uid: 1 for uid in export.uids(*FEW)}
    assert pending_reports(config) == [], "an applied report is deleted"
    assert pending_items(config) == []


def test_objects_the_pacs_fails_to_commit_are_stored_again(export: Export, tmp_path: Path) -> None:
    node_port, pacs_port = free_port(), free_port()
    config = _config(tmp_path, node_port, _pacs(pacs_port))
    (sr_uid,) = export.uids(ObjectKind.SR)
    start = time.time()
    enqueue(export.folder, config, now=start)
    listener = start_report_listener(config)
    try:
        with commitment_scp(
            pacs_port, export.sop_classes(), report_to_port=node_port, fail_once=[sr_uid]
        ) as pacs:
            deliver_once(config, now=start)
            pacs.wait_for_reports(1)
            first = deliver_once(config, now=start)
            assert len(first.of(Outcome.COMMITTED)) == 2
            (retry,) = first.of(Outcome.RETRY)
            assert retry.sop_instance_uid == sr_uid
            assert "did not commit it (failure reason 0x0110 processing failure" in retry.detail
            (queued,) = items_in(config, "PACS", ItemState.QUEUED)
            assert (queued.attempts, queued.next_attempt_at) == (1, start + 0.2), "the destination's back-off"

            again = deliver_once(config, now=start + 0.3)
            assert [event.sop_instance_uid for event in again.of(Outcome.STORED)] == [sr_uid]
            pacs.wait_for_reports(2)
            last = deliver_once(config, now=start + 0.3)
    finally:
        listener.shutdown()
    assert [event.sop_instance_uid for event in last.of(Outcome.COMMITTED)] == [sr_uid]
    assert _states(config) == {ItemState.DONE: 3}
    assert pacs.received.counts() == {uid: 2 if uid == sr_uid else 1 for uid in export.uids(*FEW)}


def test_without_a_report_the_node_asks_again_keeps_the_objects_and_survives_a_restart(
    export: Export, tmp_path: Path
) -> None:
    node_port, pacs_port = free_port(), free_port()
    config = _config(tmp_path, node_port, _pacs(pacs_port, commitment_timeout_s=30.0, max_age_hours=1.0))
    start = time.time()
    enqueue(export.folder, config, now=start)
    with commitment_scp(pacs_port, export.sop_classes(), report_to_port=None) as silent:
        deliver_once(config, now=start)
        assert deliver_once(config, now=start + 10).events == (), "not due before commitment_timeout_s"

        lock = DeliveryLock(config)  # a restart: the waiting items and their transaction are on disk
        assert lock.acquire(blocking=False)
        try:
            assert recover_outbox(config) == 0
        finally:
            lock.release()
        assert _states(config) == {ItemState.COMMITTING: 3}
        asked_again = deliver_once(config, now=start + 31)
    assert len(asked_again.of(Outcome.COMMITMENT_REQUESTED)) == 3
    (first_uid, _), (second_uid, requested) = silent.requests
    assert first_uid != second_uid and set(requested) == export.uids(*FEW), "a new Transaction UID"
    assert silent.received.counts() == {uid: 1 for uid in export.uids(*FEW)}, "the C-STORE is not repeated"
    waiting = items_in(config, "PACS", ItemState.COMMITTING)
    assert {(item.commitment_requests, item.transaction_uid) for item in waiting} == {(2, second_uid)}
    assert all(item.last_error.startswith("no storage commitment report from PACS") for item in waiting)
    lines = "\n".join(outbox_status_lines(config))
    assert "committing" in lines and "no storage commitment report" in lines

    late = CommitmentReport(first_uid, EventType.ALL_COMMITTED, (), (), "TEST_PACS", start + 32)
    save_report(config, late)
    assert deliver_once(config, now=start + 33).events == (), "a report of a superseded request is dropped"
    assert _states(config) == {ItemState.COMMITTING: 3} and pending_reports(config) == []

    given_up = deliver_once(config, now=start + 3600 + 1)
    assert len(given_up.of(Outcome.DEAD_LETTER)) == 3
    assert "never reported storage commitment (2 requests)" in given_up.events[0].detail
    dead = config.storage.dead_letter_dir / "PACS"
    assert len(list(dead.glob(f"*/{OBJECT_FILE}"))) == 3, "the bytes are kept"


def test_a_pacs_without_storage_commitment_leaves_the_objects_waiting_with_the_reason(
    export: Export, tmp_path: Path
) -> None:
    pacs_port = free_port()
    config = _config(tmp_path, free_port(), _pacs(pacs_port))
    enqueue(export.folder, config)
    with commitment_scp(pacs_port, export.sop_classes(), report_to_port=None, commitment=False):
        report = deliver_once(config)
    assert len(report.of(Outcome.STORED)) == 3
    retries = report.of(Outcome.COMMITMENT_RETRY)
    assert len(retries) == 3 and "refused the Storage Commitment Push Model" in retries[0].detail
    assert _states(config) == {ItemState.COMMITTING: 3}
    assert "refused the Storage Commitment Push Model" in "\n".join(outbox_status_lines(config))


def test_the_node_service_listener_takes_the_report_and_wakes_its_deliverer(
    export: Export, tmp_path: Path
) -> None:
    node_port, pacs_port = free_port(), free_port()
    config = _config(tmp_path, node_port, _pacs(pacs_port))
    with commitment_scp(pacs_port, export.sop_classes(), report_to_port=node_port) as pacs:
        service = NodeService(config, InventoryRunner())
        service.start()
        try:
            enqueue(export.folder, config)
            service.deliverer.wake()
            deadline = time.monotonic() + WAIT_S
            while _states(config) != {ItemState.DONE: 3} and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            service.stop()
            service.index.close()
    assert _states(config) == {ItemState.DONE: 3}
    assert pacs.report_statuses == [0x0000]
    assert all(item.committed_at is not None for item in items_in(config, "PACS", ItemState.DONE))


def _send_report(port: int, event_type: int, information: Dataset) -> int:
    ae = AE(ae_title="TEST_PACS")
    ae.add_requested_context(PUSH_MODEL)
    association = ae.associate(
        "127.0.0.1", port, ae_title="SODIUM_NODE", ext_neg=[build_role(PUSH_MODEL, scp_role=True)]
    )
    assert association.is_established
    try:
        response, _reply = association.send_n_event_report(
            information, event_type, PUSH_MODEL, PUSH_MODEL_INSTANCE
        )
        return int(response.Status)
    finally:
        association.release()


def test_the_report_listener_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    node_port = free_port()
    config = _config(tmp_path, node_port, _pacs(free_port()))
    listener = start_report_listener(config)
    try:
        with_transaction = Dataset()
        with_transaction.TransactionUID = "2.25.1"
        assert _send_report(node_port, 3, with_transaction) == 0x0113, "no such event type"
        without_transaction = Dataset()
        without_transaction.ReferencedSOPSequence = []
        assert _send_report(node_port, 1, without_transaction) == 0x0115, "no Transaction UID"
        assert pending_reports(config) == []
        assert _send_report(node_port, 1, with_transaction) == 0x0000
    finally:
        listener.shutdown()
    ((_, report),) = pending_reports(config)
    assert (report.transaction_uid, report.event_type, report.calling_ae_title) == (
        "2.25.1",
        EventType.ALL_COMMITTED,
        "TEST_PACS",
    )
    assert reports_dir(config).parent == config.storage.outbox_dir
