"""A PACS with storage commitment, in-process (pynetdicom), for the commitment tests.

It stores what it receives (C-STORE) and answers each N-ACTION "Request Storage Commitment" at once;
then, like Orthanc, it reports on an association of its own to the requester's listener (proposing
itself as the Push Model's SCP): committed are the requested objects it holds, failed the others and
those listed in ``fail_once`` (the first time). ``report_to_port=None`` never reports; ``hold()``
delays the reports until ``release()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dicom_out_helpers import ReceivedObjects
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt

PUSH_MODEL = "1.2.840.10008.1.20.1"
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
NO_SUCH_OBJECT_INSTANCE = 0x0112
PROCESSING_FAILURE = 0x0110
WAIT_S = 20.0


@dataclass
class CommitmentPeer:
    received: ReceivedObjects
    node_ae_title: str
    report_to_port: int | None
    ae_title: str
    fail_once: set[str]
    requests: list[tuple[str, list[str]]] = field(default_factory=list)
    """(Transaction UID, requested SOP Instance UIDs) per N-ACTION, in arrival order."""
    report_statuses: list[int] = field(default_factory=list)
    """Our listener's answer to each report sent."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def wait_for_reports(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.report_statuses) >= count:
                    return
            time.sleep(0.02)
        raise AssertionError(f"{count} reports expected within {WAIT_S:g} s, got {self.report_statuses}")

    def report(self, transaction_uid: str, requested: list[tuple[str, str]]) -> None:
        """Send the N-EVENT-REPORT of one transaction on a new association (run in a thread)."""
        self.released.wait(WAIT_S)
        assert self.report_to_port is not None
        stored = set(self.received.counts())
        information = Dataset()
        information.TransactionUID = transaction_uid
        committed, failed = [], []
        for sop_class_uid, sop_instance_uid in requested:
            reference = Dataset()
            reference.ReferencedSOPClassUID = sop_class_uid
            reference.ReferencedSOPInstanceUID = sop_instance_uid
            with self.lock:
                fail = sop_instance_uid in self.fail_once
                self.fail_once.discard(sop_instance_uid)
            if fail or sop_instance_uid not in stored:
                reference.FailureReason = PROCESSING_FAILURE if fail else NO_SUCH_OBJECT_INSTANCE
                failed.append(reference)
            else:
                committed.append(reference)
        if committed:
            information.ReferencedSOPSequence = committed
        if failed:
            information.FailedSOPSequence = failed
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        association = ae.associate(
            "127.0.0.1",
            self.report_to_port,
            ae_title=self.node_ae_title,
            ext_neg=[build_role(PUSH_MODEL, scp_role=True)],
        )
        status = -1  # not answered
        try:
            if association.is_established:
                response, _reply = association.send_n_event_report(
                    information, 2 if failed else 1, PUSH_MODEL, PUSH_MODEL_INSTANCE
                )
                status = int(response.get("Status", -1)) if response else -1
                association.release()
        finally:
            with self.lock:
                self.report_statuses.append(status)


def _on_action(peer: CommitmentPeer) -> Callable[[evt.Event], tuple[int, Dataset | None]]:
    def on_action(event: evt.Event) -> tuple[int, Dataset | None]:
        information = event.action_information
        transaction_uid = str(information.TransactionUID)
        requested = [
            (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
            for item in information.ReferencedSOPSequence
        ]
        with peer.lock:
            peer.requests.append((transaction_uid, [uid for _, uid in requested]))
        if peer.report_to_port is not None:
            threading.Thread(target=peer.report, args=(transaction_uid, requested), daemon=True).start()
        return 0x0000, None

    return on_action


@contextmanager
def commitment_scp(
    port: int,
    sop_classes: Iterable[str],
    *,
    report_to_port: int | None,
    ae_title: str = "TEST_PACS",
    node_ae_title: str = "SODIUM_NODE",
    fail_once: Iterable[str] = (),
    commitment: bool = True,
) -> Iterator[CommitmentPeer]:
    """On 127.0.0.1:``port``: Storage SCP for ``sop_classes`` and (``commitment``) Push Model SCP."""
    peer = CommitmentPeer(ReceivedObjects(), node_ae_title, report_to_port, ae_title, set(fail_once))
    peer.release()

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        with peer.received.lock:
            peer.received.arrivals.append((str(dataset.SOPInstanceUID), str(dataset.SOPClassUID)))
        return 0x0000

    ae = AE(ae_title=ae_title)
    for sop_class in sorted(set(sop_classes)):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handlers = [(evt.EVT_C_STORE, on_store)]
    if commitment:
        ae.add_supported_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        handlers.append((evt.EVT_N_ACTION, _on_action(peer)))
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    assert server is not None
    try:
        yield peer
    finally:
        peer.release()
        server.shutdown()
