"""Who may talk to the node: the calling-AE allowlist and the association limit are enforced."""

from __future__ import annotations

from pathlib import Path

from node_helpers import CALLING_AE, echoscu, running_node
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from test_node_receive import ManifestRunner


def test_only_allowed_calling_ae_titles_are_accepted(tmp_path: Path) -> None:
    with running_node(tmp_path, ManifestRunner(), allowed_calling_ae_titles=f'["{CALLING_AE}"]') as node:
        assert echoscu(node.port, calling_ae=CALLING_AE) == 0
        assert echoscu(node.port, calling_ae="INTRUDER") != 0, "an unknown calling AE was accepted"
        assert echoscu(node.port, calling_ae=CALLING_AE) == 0, "the node stopped serving after a rejection"


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
