"""A local Orthanc as the virtual PACS: for the demo, the delivery tests and benches.

Orthanc binds every interface, so callers run it inside a private network namespace with only
the loopback interface up (``unshare -n``; see ``sodium_node.demo``). Its HTTP API answers on
``127.0.0.1`` only (``RemoteAccessAllowed`` false).

Orthanc (>= 1.6) is also a Storage Commitment SCP: it answers an N-ACTION at once, checks the
instances in a job, and sends the N-EVENT-REPORT on a new association to the requesting AE, which
it looks up by AE title in its ``DicomModalities`` (``modalities`` here). A requester it cannot
reach never gets a report (Orthanc does not retry).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sodium_node.errors import DeliveryError

log = logging.getLogger(__name__)

ORTHANC = Path("/usr/sbin/Orthanc")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RemoteModality:
    """An entry of Orthanc's ``DicomModalities``: a peer it may call (e.g. with commitment reports)."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class StoredSeries:
    modality: str
    series_description: str
    series_number: str
    instances: int


class LocalOrthanc:
    """Orthanc with its storage under ``folder``, on the given DICOM and HTTP ports; always stopped.

    Use it as a context manager, or `start` / `stop` (a stopped one can be started again: its
    storage persists, and its configuration is written anew, e.g. after ``modalities`` changed).
    """

    def __init__(
        self,
        folder: Path,
        *,
        dicom_port: int,
        http_port: int,
        ae_title: str = "ORTHANC",
        modalities: Sequence[RemoteModality] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``settings``: further Orthanc configuration options, e.g. ``{"SyncStorageArea": True}``."""
        self.settings = dict(settings or {})
        self.folder = folder
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.ae_title = ae_title
        self.modalities = tuple(modalities)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def configuration_path(self) -> Path:
        return self.folder / "orthanc.json"

    def write_configuration(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        configuration = {
            "Name": "sodium-node demo PACS",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": {
                modality.name: [modality.ae_title, modality.host, modality.port]
                for modality in self.modalities
            },
            "Plugins": [],
            **self.settings,
        }
        self.configuration_path.write_text(json.dumps(configuration, indent=2) + "\n")
        return self.configuration_path

    def start(self) -> LocalOrthanc:
        """Start Orthanc and return once its HTTP API answers and its DICOM port accepts connections."""
        if not ORTHANC.is_file():
            raise DeliveryError(f"{ORTHANC} is missing: install the Debian package orthanc (make tools)")
        configuration = self.write_configuration()
        with (self.folder / "orthanc.log").open("ab") as log_file:
            self._process = subprocess.Popen(
                [str(ORTHANC), str(configuration)],
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "TCP_NODELAY": "1"},  # Orthanc's DICOM stack keeps Nagle on otherwise
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DeliveryError(
                    f"Orthanc exited with {self._process.returncode}; see {self.folder}/orthanc.log"
                )
            if self._answers():
                log.info(
                    "Orthanc %s listens on 127.0.0.1:%d (HTTP %d)",
                    self.ae_title,
                    self.dicom_port,
                    self.http_port,
                )
                return self
            time.sleep(0.1)
        self.stop()
        raise DeliveryError(
            f"Orthanc did not answer on 127.0.0.1:{self.http_port} (HTTP) and {self.dicom_port} (DICOM) "
            f"within {START_TIMEOUT_S:g} s; see {self.folder}/orthanc.log"
        )

    def _answers(self) -> bool:
        try:
            self.get("/system")
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1.0):
                return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def instance_uids(self) -> list[str]:
        instances = self.get("/instances?expand")
        return [str(item["MainDicomTags"]["SOPInstanceUID"]) for item in instances]

    def series(self) -> list[StoredSeries]:
        stored = []
        for item in self.get("/series?expand"):
            tags = item["MainDicomTags"]
            stored.append(
                StoredSeries(
                    modality=str(tags.get("Modality", "")),
                    series_description=str(tags.get("SeriesDescription", "")),
                    series_number=str(tags.get("SeriesNumber", "")),
                    instances=len(item["Instances"]),
                )
            )
        return sorted(stored, key=lambda s: (int(s.series_number or 0), s.series_description))
