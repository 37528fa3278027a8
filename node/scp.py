"""The DICOM listener: pynetdicom Storage SCP and Verification SCP.

Handlers are plain functions bound at server start. They never raise: each failure is logged with
the SOP Instance UID and the calling AE title and answered with a status code. A C-STORE is
acknowledged (0x0000) only after its bytes are fsync'ed in the spool and recorded in the index.

Before that, only checks on the bytes that cost little and cannot be made to cost more are made:
the Affected SOP Instance UID is a UID, a deflated data set inflates to its end (streamed in
bounded chunks, nothing kept), and the SOP class is one: the Affected SOP Class UID is the
presentation context's abstract syntax and the SOP Class UID (0008,0016) of the data set, read from
its first elements only (`sop_class_in_data_set`), is the announced one; a mismatch is refused with
0xA900 and nothing is stored. The association is accepted only when called with the node's own AE
title (``AE.require_called_aet``). The rest of the data set is not parsed here: a parse's cost
grows with what a hostile sender puts in (sequences nested thousands deep, a deflate bomb), on the
association's thread, while the sender waits under its DIMSE timeout. What only a parse can find is
found at ingest, after the acknowledgement, and quarantined (docs/node.md, "Where a bad instance is
stopped").
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from dicom_out.commitment_scp import ReportHandler, accept_commitment_reports
from node.headers import deflate_problem, is_valid_uid
from node.index import Announced, Origin, Source
from node.receive import Receiver
from sodium_node.config import NetworkConfig

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
ACCEPTED_STORAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.2": "MR Spectroscopy Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    # Philips sends these with an examination when its DICOM node is set to "private" export.
    "1.3.46.670589.11.0.0.12.1": "Philips Private MR Series Data Storage",
    "1.3.46.670589.11.0.0.12.2": "Philips Private MR Examcard Storage",
    "1.3.46.670589.11.0.0.12.4": "Philips Private MR Spectrum Storage",
}

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
"""Refused: Out of Resources - the instance could not be written or recorded."""
STATUS_CANNOT_UNDERSTAND = 0xC000
"""Error: Cannot understand - e.g. an Affected SOP Instance UID that is not a UID."""
STATUS_DATA_SET_DOES_NOT_MATCH = 0xA900
"""Error: Data Set does not match SOP Class (PS3.4 Table B.2-1)."""
STATUS_PROCESSING_FAILURE = 0xC001
"""Error: Cannot understand (subcode 1) - an unexpected failure while storing; logged with a traceback."""


DEADLINE_CHECK_S = 0.25
"""How often waiting connections are checked against their deadline."""
SOP_CLASS_UID_TAG = 0x00080016
DEFLATED_HEAD_BYTES = 1 << 16
"""How much of a deflated data set is inflated to find its SOP Class UID (it is among the first elements)."""
DEFERRED_VALUE_BYTES = 1024
"""Values longer than this before the SOP Class UID are skipped, not copied."""
HEAD_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    EOFError,
    OSError,
    OverflowError,
    RecursionError,
    struct.error,
    zlib.error,
)
"""What reading a damaged or hostile data set's first elements raises."""


def _data_set_head(encoded: bytes, transfer_syntax: str) -> tuple[bytes, bool, bool]:
    """The data set's first bytes as they are encoded, with (implicit VR, little endian)."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # PS3.5 A.5; bounded output, errors are zlib.error
        return inflater.decompress(encoded, DEFLATED_HEAD_BYTES), False, True
    syntax = UID(transfer_syntax)
    return encoded, syntax.is_implicit_VR, syntax.is_little_endian


def sop_class_in_data_set(encoded: bytes, transfer_syntax: str) -> str | None:
    """The SOP Class UID the data set itself names, or None when it cannot be read from its head.

    Parsing stops at the first element after (0008,0016): only the few group 0008 elements before
    it are read, in the bytes already received (for a deflated data set, its first 64 KiB
    inflated). A data set with no SOP Class UID there, or that does not parse that far, is not
    refused here: ingest reads the whole header and quarantines it.
    """
    try:
        head, implicit_vr, little_endian = _data_set_head(encoded, transfer_syntax)
        dataset = read_dataset(
            io.BytesIO(head),
            implicit_vr,
            little_endian,
            stop_when=lambda tag, vr, length: tag > SOP_CLASS_UID_TAG,
            defer_size=DEFERRED_VALUE_BYTES,
        )
        value = dataset.get("SOPClassUID")
    except HEAD_PARSE_ERRORS:
        return None
    text = "" if value is None else str(value).strip("\0 ")
    return text or None


def sop_class_problem(*, context_class: str, announced_class: str, data_set_class: str | None) -> str:
    """Why the data set is not of the SOP class the C-STORE is for ('' when it is)."""
    if announced_class != context_class:
        return (
            f"announced SOP Class UID {announced_class[:80]!r} is not the presentation context's "
            f"{context_class}"
        )
    if data_set_class is not None and data_set_class != announced_class:
        return f"data set's SOP Class UID {data_set_class[:80]!r} is not the announced {announced_class}"
    return ""


class PendingConnections:
    """Connections that have not yet sent a whole A-ASSOCIATE-RQ, each with a deadline.

    pynetdicom reads a PDU to its announced length with one blocking read per packet, each under
    the network timeout, and counts the connection against ``maximum_associations`` from the moment
    it is accepted. So a peer that dribbles one byte of an A-ASSOCIATE-RQ every few seconds holds an
    association slot for as long as it likes, and a few such connections lock every scanner out.
    Here:
    - A connection whose request has not arrived `deadline_s` after it was accepted (the configured
      ACSE timeout) is shut down; the blocked read then returns and pynetdicom ends the thread.
    - One peer host may have at most `per_host` connections waiting at once (half the association
      slots); a further one is closed as it is accepted, before any thread is made for it. A
      scanner's associations send their request at once and wait for milliseconds; one host cannot
      hold more than half the slots with requests it never finishes.
    The association's own events tell when a request came (``EVT_REQUESTED``) or the connection
    closed (``EVT_CONN_CLOSE``); both are matched by the peer's address and port.
    """

    def __init__(self, *, deadline_s: float, per_host: int) -> None:
        self.deadline_s = deadline_s
        self.per_host = max(1, per_host)
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, int], tuple[socket.socket, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._expire_loop, name="sodium-node-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def admit(self, client: socket.socket, address: tuple[str, int]) -> bool:
        """Put a new connection under its deadline; ``False`` (logged) if its host has too many waiting."""
        with self._lock:
            waiting = sum(1 for host, _ in self._waiting if host == address[0])
            if waiting >= self.per_host:
                log.warning(
                    "connection from %s:%d refused: %d connections from that host have not yet sent "
                    "their association request",
                    address[0],
                    address[1],
                    waiting,
                )
                return False
            self._waiting[address] = (client, time.monotonic() + self.deadline_s)
            return True

    def settled(self, address: tuple[str, int]) -> None:
        with self._lock:
            self._waiting.pop(address, None)

    def handle_settled(self, event: Event) -> None:
        """``EVT_REQUESTED`` / ``EVT_CONN_CLOSE`` handler."""
        requestor = event.assoc.requestor
        self.settled((str(requestor.address), int(requestor.port)))

    def _expire_loop(self) -> None:
        while not self._stop.wait(DEADLINE_CHECK_S):
            now = time.monotonic()
            with self._lock:
                for address in [key for key, (_, deadline) in self._waiting.items() if deadline <= now]:
                    self._close(address, f"no A-ASSOCIATE-RQ within {self.deadline_s:g} s of connecting")

    def _close(self, address: tuple[str, int], reason: str) -> None:
        client, _ = self._waiting.pop(address)
        log.warning("connection from %s:%d closed: %s", address[0], address[1], reason)
        with contextlib.suppress(OSError):  # already closed by the peer: nothing is held
            client.shutdown(socket.SHUT_RDWR)


class NodeAssociationServer(ThreadedAssociationServer):
    """Disables Nagle on each accepted connection, so a C-STORE response is not held back, and puts
    each connection under the `PendingConnections` deadline until its association request came."""

    pending: PendingConnections | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        client_socket, address = super().get_request()
        if self.pending is not None and not self.pending.admit(
            client_socket, (str(address[0]), int(address[1]))
        ):
            client_socket.close()
            raise ConnectionRefusedError("refused")  # socketserver skips a request whose accept failed
        client_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client_socket, address

    def shutdown(self) -> None:
        """Stop serving and close the socket (the server was made by us, not by `AE.start_server`)."""
        socketserver.TCPServer.shutdown(self)
        self.server_close()
        if self.pending is not None:
            self.pending.stop()


def _peer(event: Event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return str(requestor.ae_title), f"{requestor.address}:{requestor.port}"


def encoded_with_origin(event: Event, *, calling_ae_title: str, peer_address: str) -> bytes:
    """The data set exactly as sent, behind a file meta header that also records who sent it.

    Sending/Receiving Application Entity Title and Sending Presentation Address (0002,0017/18/27)
    travel with the spool file, so a crash that loses the newest index rows loses nothing: the
    rows are rebuilt from the spool with their origin (see ``Receiver.recover_spool``).
    """
    meta = event.file_meta
    meta.SendingApplicationEntityTitle = calling_ae_title
    meta.ReceivingApplicationEntityTitle = str(event.assoc.acceptor.ae_title)
    meta.SendingPresentationAddress = f"dicom://{peer_address}"
    return b"".join((b"\0" * 128, b"DICM", encode_file_meta(meta), event.encoded_dataset(include_meta=False)))


def make_store_handler(receiver: Receiver) -> Callable[[Event], int]:
    def handle_store(event: Event) -> int:
        sop_instance_uid = "(unknown)"
        calling_ae_title = "(unknown)"
        try:
            calling_ae_title, peer_address = _peer(event)
            request = event.request
            if not isinstance(request, C_STORE):
                log.error("C-STORE handler called for a %s from %s", type(request).__name__, calling_ae_title)
                return STATUS_PROCESSING_FAILURE
            sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
            announced = Announced(
                sop_instance_uid,
                str(request.AffectedSOPClassUID or ""),
                str(event.context.transfer_syntax),
            )
            origin = Origin(Source.NETWORK, calling_ae_title, peer_address)
            data = encoded_with_origin(event, calling_ae_title=calling_ae_title, peer_address=peer_address)
            problem = ""
            if announced.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
                problem = deflate_problem(event.encoded_dataset(include_meta=False))
            if problem:
                receiver.quarantine_unstored(data, reason=problem, announced=announced, origin=origin)
                log.error(
                    "C-STORE of %s from %s refused: %s (quarantined)",
                    sop_instance_uid[:80],
                    calling_ae_title,
                    problem,
                )
                return STATUS_CANNOT_UNDERSTAND
            mismatch = sop_class_problem(
                context_class=str(event.context.abstract_syntax),
                announced_class=announced.sop_class_uid,
                data_set_class=sop_class_in_data_set(
                    event.encoded_dataset(include_meta=False), announced.transfer_syntax_uid
                ),
            )
            if mismatch:
                log.error(
                    "C-STORE of %s from %s refused with 0xA900 (data set does not match SOP class): %s",
                    sop_instance_uid[:80],
                    calling_ae_title,
                    mismatch,
                )
                return STATUS_DATA_SET_DOES_NOT_MATCH
            if not is_valid_uid(sop_instance_uid):
                receiver.quarantine_unstored(
                    data,
                    reason=f"Affected SOP Instance UID {sop_instance_uid[:80]!r} is not a valid UID",
                    announced=announced,
                    origin=origin,
                )
                log.error(
                    "C-STORE from %s refused: Affected SOP Instance UID %r is not a valid UID (quarantined)",
                    calling_ae_title,
                    sop_instance_uid[:80],
                )
                return STATUS_CANNOT_UNDERSTAND
            receiver.accept(data, announced=announced, origin=origin)
        except OSError as error:
            log.error(
                "C-STORE of %s from %s failed, not acknowledged: cannot write it (%s)",
                sop_instance_uid,
                calling_ae_title,
                error,
            )
            return STATUS_OUT_OF_RESOURCES
        except sqlite3.Error as error:
            log.error(
                "C-STORE of %s from %s failed, not acknowledged: cannot record it in the index (%s)",
                sop_instance_uid,
                calling_ae_title,
                error,
            )
            return STATUS_OUT_OF_RESOURCES
        except Exception:  # the handler boundary: pynetdicom handlers never raise
            log.exception("C-STORE of %s from %s failed unexpectedly", sop_instance_uid, calling_ae_title)
            return STATUS_PROCESSING_FAILURE
        log.debug("stored %s from %s", sop_instance_uid, calling_ae_title)
        return STATUS_SUCCESS

    return handle_store


def handle_echo(event: Event) -> int:
    try:
        log.debug("C-ECHO from %s", _peer(event)[0])
    except Exception:  # the handler boundary: never raise, an echo always succeeds
        log.exception("C-ECHO: could not read the peer")
    return STATUS_SUCCESS


def handle_accepted(event: Event) -> None:
    try:
        calling, address = _peer(event)
        log.info("association accepted from %s (%s)", calling, address)
    except Exception:  # the handler boundary
        log.exception("association accepted: could not read the peer")


def handle_released(event: Event) -> None:
    try:
        calling, address = _peer(event)
        log.info("association with %s (%s) ended", calling, address)
    except Exception:  # the handler boundary
        log.exception("association ended: could not read the peer")


def handle_rejected(event: Event) -> None:
    try:
        calling, address = _peer(event)
        log.warning(
            "association from %s (%s) rejected (calling AE title not in network.allowed_calling_ae_titles, "
            "called AE title not the node's, or limits)",
            calling,
            address,
        )
    except Exception:  # the handler boundary
        log.exception("association rejected: could not read the peer")


def build_ae(network: NetworkConfig) -> AE:
    ae = AE(ae_title=network.ae_title)
    for sop_class in ACCEPTED_STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION, ALL_TRANSFER_SYNTAXES)
    ae.maximum_associations = network.max_associations
    ae.maximum_pdu_size = network.max_pdu_size_bytes
    ae.acse_timeout = network.acse_timeout_s
    ae.dimse_timeout = network.dimse_timeout_s
    ae.network_timeout = network.network_timeout_s
    ae.require_called_aet = True
    ae.require_calling_aet = list(network.allowed_calling_ae_titles)
    return ae


def start_scp(
    network: NetworkConfig,
    receiver: Receiver,
    *,
    port: int | None = None,
    commitment_reports: ReportHandler | None = None,
) -> ThreadedAssociationServer:
    """Start listening (non-blocking); ``port`` overrides the configured one (0 = any free port).

    With ``commitment_reports`` the listener also takes the storage commitment reports
    (N-EVENT-REPORT) our destinations send back, and hands them to that dicom_out handler.
    """
    ae = build_ae(network)
    pending = PendingConnections(deadline_s=network.acse_timeout_s, per_host=network.max_associations // 2)
    handlers: list[EventHandlerType] = [
        (evt.EVT_REQUESTED, pending.handle_settled),
        (evt.EVT_CONN_CLOSE, pending.handle_settled),
        (evt.EVT_C_STORE, make_store_handler(receiver)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_ACCEPTED, handle_accepted),
        (evt.EVT_RELEASED, handle_released),
        (evt.EVT_ABORTED, handle_released),
        (evt.EVT_REJECTED, handle_rejected),
    ]
    if commitment_reports is not None:
        accept_commitment_reports(ae)
        handlers.append((evt.EVT_N_EVENT_REPORT, commitment_reports))
    address = (network.host, network.port if port is None else port)
    server = ae.make_server(address, evt_handlers=handlers, server_class=NodeAssociationServer)
    assert isinstance(server, NodeAssociationServer)
    server.pending = pending
    pending.start()
    thread = threading.Thread(target=server.serve_forever, name="sodium-node-scp", daemon=True)
    thread.start()
    log.info(
        "listening as %s on %s:%d (max %d associations)",
        network.ae_title,
        address[0],
        server.server_address[1],
        network.max_associations,
    )
    return server
