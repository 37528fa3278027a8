"""Who may talk to the node and how: the calling-AE allowlist, the association limit, the max PDU size."""

from __future__ import annotations

from pathlib import Path

from node_helpers import CALLING_AE, dataset_bytes, echoscu, query, running_node, storescu
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from test_node_receive import ManifestRunner, sop_uid

from simulator.session import SimulatedSession


def test_only_allowed_calling_ae_titles_are_accepted(tmp_path: Path) -> None:
    with running_node(tmp_path, ManifestRunner(), allowed_calling_ae_titles=f'["{CALLING_AE}"]') as node:
        assert echoscu(node.port, calling_ae=CALLING_AE) == 0
        assert echoscu(node.port, calling_ae="INTRUDER") != 0, "an unknown calling AE was accepted"
        assert echoscu(node.port, calling_ae=CALLING_AE) == 0, "the node stopped serving after a rejection"


def test_only_the_node_s_own_called_ae_title_is_accepted(tmp_path: Path) -> None:
    """The called AE title was never checked: an association to any AE title was accepted."""
    with running_node(tmp_path, ManifestRunner()) as node:
        assert node.config.network.ae_title == "SODIUM_NODE"
        requestor = AE(ae_title=CALLING_AE)
        requestor.add_requested_context(Verification)
        wrong = requestor.associate("127.0.0.1", node.port, ae_title="OTHER_NODE")
        if wrong.is_established:
            wrong.release()
        assert wrong.is_rejected, "an association called OTHER_NODE was not rejected"
        right = requestor.associate("127.0.0.1", node.port, ae_title="SODIUM_NODE")
        try:
            assert right.is_established, "the node stopped accepting its own AE title after a rejection"
            assert right.send_c_echo().Status == 0x0000
        finally:
            right.release()


def test_associations_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    with running_node(tmp_path, ManifestRunner(), max_associations="2") as node:
        requestor = AE(ae_title=CALLING_AE)
        requestor.add_requested_context(Verification)
        held = [requestor.associate("127.0.0.1", node.port, ae_title="SODIUM_NODE") for _ in range(2)]
        try:
            assert all(association.is_established for association in held)
            extra = requestor.associate("127.0.0.1", node.port, ae_title="SODIUM_NODE")
            assert not extra.is_established, "a third association was accepted with max_associations = 2"
        finally:
            for association in held:
                association.release()
        assert echoscu(node.port) == 0, "the node did not accept associations again after the others ended"


def test_the_configured_max_pdu_size_is_applied(tmp_path: Path, classic_session: SimulatedSession) -> None:
    with running_node(tmp_path, ManifestRunner(), max_pdu_size_bytes="16384") as node:
        requestor = AE(ae_title=CALLING_AE)
        requestor.add_requested_context(Verification)
        association = requestor.associate("127.0.0.1", node.port, ae_title="SODIUM_NODE")
        try:
            assert association.is_established
            assert association.acceptor.maximum_length == 16384, (
                "the A-ASSOCIATE-AC offers the configured size"
            )
        finally:
            association.release()
        # storescu then fragments each data set into PDUs of at most 16 kB: they arrive whole.
        files = classic_session.series_files["t1_2d"][:3]
        assert all(path.stat().st_size > 16384 for path in files)
        storescu(node.port, files)
        assert node.receiver.wait_idle(60)
        rows = dict(query(node.config, "SELECT sop_instance_uid, path FROM instances"))
        for path in files:
            assert dataset_bytes(node.config.storage.root / str(rows[sop_uid(path)])) == dataset_bytes(path)
