"""Run inside a private network namespace (``unshare -n``): Orthanc plus `sodium-node send` runs.

    python tests/orthanc_delivery_driver.py EXPORT_DIR WORK_DIR

Scenario "down_then_up": `sodium-node send` starts while nothing listens, fails at least once, then
Orthanc starts and gets everything. Scenario "kill9": a `sodium-node send` is killed with SIGKILL
while objects are in ``sending/``, then run again. Prints one JSON document: per scenario the exit
codes and the SOP Instance UIDs Orthanc holds (one entry per stored instance, from its REST API).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from dicom_out_helpers import DestinationSpec, write_delivery_config  # noqa: E402
from node_helpers import free_port  # noqa: E402
from pynetdicom import AE  # noqa: E402

from dicom_out.outbox import ItemState, items_in  # noqa: E402
from sodium_node.config import NodeConfig, load_config  # noqa: E402

ORTHANC = "/usr/sbin/Orthanc"
SEND_WAIT_S = "120"


def start_orthanc(folder: Path, dicom_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """Orthanc with its DICOM listener on ``dicom_port``, answering C-ECHO; returns it and its HTTP port."""
    http_port = free_port()
    folder.mkdir(parents=True)
    configuration = {
        "Name": "delivery-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
    }
    (folder / "orthanc.json").write_text(json.dumps(configuration))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=log)
    wait_for_echo(dicom_port, process)
    return process, http_port


def wait_for_echo(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}")
        ae = AE(ae_title="SODIUM_NODE")
        ae.add_requested_context("1.2.840.10008.1.1")
        association = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
        if association.is_established:
            association.send_c_echo()
            association.release()
            return
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer C-ECHO on port {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def orthanc_instances(http_port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/instances?expand", timeout=30) as response:
        instances: list[dict[str, Any]] = json.loads(response.read())
    return [str(instance["MainDicomTags"]["SOPInstanceUID"]) for instance in instances]


def send(export_dir: Path, config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sodium_node.cli", "send", str(export_dir), "--config", str(config_path)]
    command += ["--wait", SEND_WAIT_S]
    log = log_path.open("ab")
    return subprocess.Popen(command, stdout=log, stderr=log, cwd=TESTS.parent)


def down_then_up(export_dir: Path, work: Path) -> dict[str, Any]:
    dicom_port = free_port()
    config_path = write_delivery_config(
        work / "node", [DestinationSpec("ORTHANC", dicom_port, ae_title="ORTHANC", max_backoff_s=0.5)]
    )
    config = load_config(config_path)
    sender = send(export_dir, config_path, work / "send.log")
    deadline = time.monotonic() + 60
    failed_attempts = 0
    while time.monotonic() < deadline and failed_attempts < 2:
        failed_attempts = max([item.attempts for item in items_in(config, "ORTHANC", ItemState.QUEUED)] + [0])
        time.sleep(0.05)
    orthanc, http_port = start_orthanc(work / "orthanc", dicom_port)
    try:
        returncode = sender.wait(timeout=float(SEND_WAIT_S) + 30)
        return {
            "failed_attempts_before_up": failed_attempts,
            "returncode": returncode,
            "orthanc": orthanc_instances(http_port),
            "log": (work / "send.log").read_text()[-3000:],
        }
    finally:
        stop(orthanc)


def kill9(export_dir: Path, work: Path) -> dict[str, Any]:
    dicom_port = free_port()
    orthanc, http_port = start_orthanc(work / "orthanc", dicom_port)
    try:
        config_path = write_delivery_config(
            work / "node", [DestinationSpec("ORTHANC", dicom_port, ae_title="ORTHANC")]
        )
        config = load_config(config_path)
        sender = send(export_dir, config_path, work / "send.log")
        done_at_kill = sending_at_kill = -1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sender.poll() is None:
            sending = state_count(config, ItemState.SENDING)
            done = state_count(config, ItemState.DONE)
            if sending and done >= 2:
                os.kill(sender.pid, signal.SIGKILL)
                sender.wait()
                done_at_kill, sending_at_kill = done, sending
                break
            time.sleep(0.002)
        first_returncode = sender.wait()
        in_orthanc_at_kill = len(orthanc_instances(http_port))
        restarted = send(export_dir, config_path, work / "send.log")
        returncode = restarted.wait(timeout=float(SEND_WAIT_S) + 30)
        return {
            "first_returncode": first_returncode,
            "done_at_kill": done_at_kill,
            "sending_at_kill": sending_at_kill,
            "in_orthanc_at_kill": in_orthanc_at_kill,
            "returncode": returncode,
            "orthanc": orthanc_instances(http_port),
            "outbox": {state.value: state_count(config, state) for state in ItemState},
            "log": (work / "send.log").read_text()[-3000:],
        }
    finally:
        stop(orthanc)


def state_count(config: NodeConfig, state: ItemState) -> int:
    folder = config.storage.outbox_dir / "ORTHANC" / state.value
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def main() -> int:
    export_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
    result = {
        "down_then_up": down_then_up(export_dir, work / "down_then_up"),
        "kill9": kill9(export_dir, work / "kill9"),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
