"""Run inside a private network namespace (``unshare -n``): Orthanc (`LocalOrthanc`) and the node.

    python tests/orthanc_delivery_driver.py EXPORT_DIR WORK_DIR

Scenario "down_then_up": `sodium-node send` starts while nothing listens, fails at least once, then
Orthanc starts and gets everything. Scenario "kill9": a `sodium-node send` is killed with SIGKILL
while objects are in ``sending/``, then run again. Scenario "commitment": two Orthancs with storage
commitment, "PACS" reporting to the node and "SILENT" reporting to a port where nothing listens;
the node service delivers to both, then is stopped, SILENT is restarted knowing the node, and
`sodium-node send` finishes. Prints one JSON document: per scenario the exit codes, the SOP
Instance UIDs each Orthanc holds (one entry per stored instance) and the outbox states.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from dicom_out_helpers import DestinationSpec, write_delivery_config  # noqa: E402
from node_helpers import free_port  # noqa: E402

from dicom_out.commands import outbox_status_lines  # noqa: E402
from dicom_out.export import read_export  # noqa: E402
from dicom_out.outbox import OBJECT_FILE, ItemState, enqueue, items_in, state_dir  # noqa: E402
from node.service import NodeService  # noqa: E402
from node.worker import InventoryRunner  # noqa: E402
from simulator.pacs import LocalOrthanc, RemoteModality  # noqa: E402
from sodium_node.config import NodeConfig, load_config  # noqa: E402
from sodium_node.config_models import ObjectKind  # noqa: E402

SEND_WAIT_S = "120"
NODE_AE = "SODIUM_NODE"
COMMITMENT_TIMEOUT_S = 1.5
FEW = (ObjectKind.SEG, ObjectKind.SR, ObjectKind.SUMMARY)


def orthanc(
    folder: Path, dicom_port: int, *, ae_title: str = "ORTHANC", reports_to: int | None = None
) -> LocalOrthanc:
    """An Orthanc on ``dicom_port``; ``reports_to``: the port it sends commitment reports to (the node's)."""
    modalities = (
        () if reports_to is None else (RemoteModality("sodium-node", NODE_AE, "127.0.0.1", reports_to),)
    )
    return LocalOrthanc(
        folder, dicom_port=dicom_port, http_port=free_port(), ae_title=ae_title, modalities=modalities
    )


def send(
    export_dir: Path, config_path: Path, log_path: Path, wait_s: str = SEND_WAIT_S
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sodium_node.cli", "send", str(export_dir), "--config", str(config_path)]
    command += ["--wait", wait_s]
    log = log_path.open("ab")
    return subprocess.Popen(command, stdout=log, stderr=log, cwd=TESTS.parent)


def state_count(config: NodeConfig, state: ItemState, destination: str = "ORTHANC") -> int:
    folder = state_dir(config, destination, state)
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


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
    with orthanc(work / "orthanc", dicom_port) as pacs:
        returncode = sender.wait(timeout=float(SEND_WAIT_S) + 30)
        return {
            "failed_attempts_before_up": failed_attempts,
            "returncode": returncode,
            "orthanc": pacs.instance_uids(),
            "log": (work / "send.log").read_text()[-3000:],
        }


def kill9(export_dir: Path, work: Path) -> dict[str, Any]:
    dicom_port = free_port()
    with orthanc(work / "orthanc", dicom_port) as pacs:
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
        in_orthanc_at_kill = len(pacs.instance_uids())
        restarted = send(export_dir, config_path, work / "send.log")
        returncode = restarted.wait(timeout=float(SEND_WAIT_S) + 30)
        return {
            "first_returncode": first_returncode,
            "done_at_kill": done_at_kill,
            "sending_at_kill": sending_at_kill,
            "in_orthanc_at_kill": in_orthanc_at_kill,
            "returncode": returncode,
            "orthanc": pacs.instance_uids(),
            "outbox": {state.value: state_count(config, state) for state in ItemState},
            "log": (work / "send.log").read_text()[-3000:],
        }


def _outbox(config: NodeConfig, destination: str) -> dict[str, Any]:
    waiting = items_in(config, destination, ItemState.COMMITTING)
    done = items_in(config, destination, ItemState.DONE)
    return {
        "states": {state.value: state_count(config, state, destination) for state in ItemState},
        "objects_kept": len(
            list(state_dir(config, destination, ItemState.COMMITTING).glob(f"*/{OBJECT_FILE}"))
        ),
        "objects_in_done": len(list(state_dir(config, destination, ItemState.DONE).glob(f"*/{OBJECT_FILE}"))),
        "requests": sorted({item.commitment_requests for item in waiting}),
        "committed_after_stored": all(
            item.committed_at is not None
            and item.acknowledged_at is not None
            and item.committed_at >= item.acknowledged_at
            for item in done
        ),
    }


def commitment(export_dir: Path, work: Path) -> dict[str, Any]:
    node_port, pacs_port, silent_port, nobody = free_port(), free_port(), free_port(), free_port()
    destinations = [
        DestinationSpec(
            "PACS",
            pacs_port,
            ae_title="ORTHANC",
            storage_commitment=True,
            commitment_timeout_s=COMMITMENT_TIMEOUT_S,
        ),
        DestinationSpec(
            "SILENT",
            silent_port,
            ae_title="SILENT",
            accepts=FEW,
            storage_commitment=True,
            commitment_timeout_s=COMMITMENT_TIMEOUT_S,
        ),
    ]
    config_path = write_delivery_config(work / "node", destinations, node_port=node_port)
    config = load_config(config_path)
    everything = len(read_export(export_dir))
    silent = orthanc(work / "silent", silent_port, ae_title="SILENT", reports_to=nobody)
    with orthanc(work / "pacs", pacs_port, reports_to=node_port) as pacs, silent:
        service = NodeService(config, InventoryRunner())
        service.start()
        started = time.monotonic()
        try:
            enqueue(export_dir, config)
            service.deliverer.wake()
            deadline = started + 60
            while time.monotonic() < deadline:
                silent_requests = [
                    item.commitment_requests for item in items_in(config, "SILENT", ItemState.COMMITTING)
                ]
                if (
                    state_count(config, ItemState.DONE, "PACS") == everything
                    and len(silent_requests) == len(FEW)
                    and min(silent_requests) >= 2
                ):
                    break
                time.sleep(0.05)
            service_s = time.monotonic() - started
        finally:
            service.stop()
            service.index.close()
        status = outbox_status_lines(config)
        with_service = {"PACS": _outbox(config, "PACS"), "SILENT": _outbox(config, "SILENT")}
        silent_at_stop = silent.instance_uids()
        silent.stop()
        silent.modalities = (RemoteModality("sodium-node", NODE_AE, "127.0.0.1", node_port),)  # fixed
        silent.start()
        started = time.monotonic()
        returncode = send(export_dir, config_path, work / "send.log", wait_s="30").wait(timeout=60)
        return {
            "everything": everything,
            "service_s": service_s,
            "with_service": with_service,
            "status": status,
            "pacs": pacs.instance_uids(),
            "silent_at_stop": silent_at_stop,
            "send_s": time.monotonic() - started,
            "send_returncode": returncode,
            "after_send": {"PACS": _outbox(config, "PACS"), "SILENT": _outbox(config, "SILENT")},
            "silent": silent.instance_uids(),
            "log": (work / "send.log").read_text()[-3000:],
        }


def main() -> int:
    export_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
    scenarios = {"down_then_up": down_then_up, "kill9": kill9, "commitment": commitment}
    selected = sys.argv[3].split(",") if len(sys.argv) > 3 else list(scenarios)
    result = {name: scenarios[name](export_dir, work / name) for name in selected}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
