"""Receiving storage commitment reports: the N-EVENT-REPORT handler and the SCU-role context.

A destination reports on an association of its own (IHE RAD-10; Orthanc always does), proposing
itself as the SCP of the Storage Commitment Push Model SOP Class: the receiving AE accepts that
role selection and so acts as the SCU, the one that gets N-EVENT-REPORTs. The node's listener
(`node.scp.start_scp`) binds `make_event_report_handler`; `sodium-node send`, delivering while the
node service is not running, runs `start_report_listener` on the node's own address instead. Either
way the handler only saves the report (`dicom_out.commitment_reports`) before answering success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from dicom_out.commitment_reports import report_from_dataset, save_report
from sodium_node.config_models import NodeConfig
from sodium_node.errors import DeliveryError

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STATUS_SUCCESS = 0x0000
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_NO_SUCH_EVENT_TYPE = 0x0113
STATUS_INVALID_ARGUMENT = 0x0115

ReportHandler = Callable[[Event], tuple[int, Dataset | None]]


def accept_commitment_reports(ae: AE) -> None:
    """Support the Push Model with the roles a reporting SCP proposes (it SCP, we SCU)."""
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=True, scp_role=True)


def make_event_report_handler(
    config: NodeConfig, *, on_saved: Callable[[], None] | None = None
) -> ReportHandler:
    """The EVT_N_EVENT_REPORT handler: save the report durably, then answer success.

    ``on_saved`` is called after each saved report (the node wakes its deliverer with it).
    """

    def handle_event_report(event: Event) -> tuple[int, Dataset | None]:
        calling_ae_title = "(unknown)"
        try:
            calling_ae_title = str(event.assoc.requestor.ae_title)
            request = event.request
            if not isinstance(request, N_EVENT_REPORT):
                log.error(
                    "N-EVENT-REPORT handler called for a %s from %s", type(request).__name__, calling_ae_title
                )
                return STATUS_PROCESSING_FAILURE, None
            if str(request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH_MODEL:
                log.error(
                    "N-EVENT-REPORT of %s from %s: not storage commitment",
                    request.AffectedSOPClassUID,
                    calling_ae_title,
                )
                return STATUS_NO_SUCH_EVENT_TYPE, None
            report = report_from_dataset(
                int(request.EventTypeID or 0),
                event.event_information,
                calling_ae_title=calling_ae_title,
                received_at=time.time(),
            )
            save_report(config, report)
        except DeliveryError as error:
            log.error("storage commitment report from %s refused: %s", calling_ae_title, error)
            status = STATUS_NO_SUCH_EVENT_TYPE if "Event Type ID" in str(error) else STATUS_INVALID_ARGUMENT
            return status, None
        except (OSError, InvalidDicomError, ValueError, AttributeError) as error:
            log.error(
                "storage commitment report from %s not saved, not acknowledged: %s", calling_ae_title, error
            )
            return STATUS_PROCESSING_FAILURE, None
        except Exception:  # the handler boundary: pynetdicom handlers never raise
            log.exception("storage commitment report from %s failed unexpectedly", calling_ae_title)
            return STATUS_PROCESSING_FAILURE, None
        log.info(
            "storage commitment report from %s for transaction %s: %d committed, %d failed",
            calling_ae_title,
            report.transaction_uid,
            len(report.committed),
            len(report.failed),
        )
        if on_saved is not None:
            on_saved()
        return STATUS_SUCCESS, None

    return handle_event_report


def start_report_listener(
    config: NodeConfig, *, port: int | None = None, on_saved: Callable[[], None] | None = None
) -> ThreadedAssociationServer:
    """Listen on the node's address for commitment reports only (non-blocking); OSError if it is taken."""
    network = config.network
    ae = AE(ae_title=network.ae_title)
    accept_commitment_reports(ae)
    ae.acse_timeout = network.acse_timeout_s
    ae.dimse_timeout = network.dimse_timeout_s
    ae.network_timeout = network.network_timeout_s
    ae.require_called_aet = False
    ae.require_calling_aet = list(network.allowed_calling_ae_titles)
    handlers: list[EventHandlerType] = [
        (evt.EVT_N_EVENT_REPORT, make_event_report_handler(config, on_saved=on_saved))
    ]
    address = (network.host, network.port if port is None else port)
    server = ae.start_server(address, block=False, evt_handlers=handlers)
    if server is None:  # only when block=True
        raise OSError(f"cannot listen on {address[0]}:{address[1]}")
    log.info(
        "listening as %s on %s:%d for storage commitment reports",
        network.ae_title,
        address[0],
        server.server_address[1],
    )
    return server
