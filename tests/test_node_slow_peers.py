"""Peers that connect and never finish their association request cannot hold the node's slots.

Issue 14, defect 3: 4 sockets that each dribbled one byte of an A-ASSOCIATE-RQ every 2 s held all
4 association slots for as long as they kept dribbling; every C-ECHO was rejected.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_helpers import echoscu, running_node, wait_for
from test_node_receive import ManifestRunner

from node.service import NodeService

SLOTS = 4
HOSTILE_HOST = "127.0.0.2"
REQUEST_DEADLINE_S = 3.0
"""The test node's ACSE timeout: a connection gets this long to send its whole request."""


class Dribbler:
    """A connection that sends an A-ASSOCIATE-RQ header announcing 1000 bytes, then one byte at a time."""

    def __init__(self, port: int) -> None:
        # From another loopback address than the scanner's (echoscu's 127.0.0.1): another host.
        self.socket = socket.create_connection(("127.0.0.1", port), source_address=(HOSTILE_HOST, 0))
        self.closed_by_node = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        header = struct.pack(">BBL", 0x01, 0x00, 1000)  # A-ASSOCIATE-RQ, 1000 bytes to follow
        try:
            self.socket.sendall(header)
            while not self._stop.wait(0.5):
                self.socket.sendall(b"\x00")
                self.socket.settimeout(0.01)
                try:
                    if self.socket.recv(1) == b"":
                        self.closed_by_node.set()
                        return
                except TimeoutError:
                    pass
        except OSError:
            self.closed_by_node.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeService]:
    with running_node(
        tmp_path, ManifestRunner(), max_associations=str(SLOTS), acse_timeout_s=str(REQUEST_DEADLINE_S)
    ) as service:
        yield service


def test_dribbling_peers_neither_lock_out_the_scanner_nor_keep_their_connections(node: NodeService) -> None:
    dribblers = [Dribbler(node.port) for _ in range(SLOTS)]
    try:
        assert echoscu(node.port) == 0, "the scanner's C-ECHO finds a slot while every slot is being dribbled"
        assert echoscu(node.port) == 0
        for dribbler in dribblers:
            wait_for(dribbler.closed_by_node.is_set, timeout_s=30, what="the node to close a dribbling peer")
        assert echoscu(node.port) == 0
    finally:
        for dribbler in dribblers:
            dribbler.close()


def test_a_peer_that_connects_and_sends_nothing_is_closed_at_the_deadline(node: NodeService) -> None:
    with socket.create_connection(("127.0.0.1", node.port), source_address=(HOSTILE_HOST, 0)) as silent:
        silent.settimeout(30)
        assert silent.recv(1) == b"", "closed by the node, not by the test's own timeout"
