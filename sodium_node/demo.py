"""`sodium-node demo`: the whole node on the embedded default session, scanner -> node -> PACS.

1. The virtual Achieva simulates one RRMS session (seed 1).
2. A local Orthanc starts as the PACS, and the node starts with its state under the demo folder.
3. dcmtk's storescu sends the session to the node, as the scanner would.
4. The node groups the series, decides the session is complete, processes it, exports the DICOM
   results and delivers them to Orthanc.
5. The TSC table (beside the simulation's truth), the QC verdicts and where to look are printed.

Orthanc listens on every interface, so when run as root the demo re-runs itself inside a private
network namespace with only the loopback interface up (``unshare -n``): nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from dicom_out.outbox import ItemState, outbox_status
from dicom_out.publish import Publisher
from node.processing_runner import RESULTS_FOLDER, ProcessingRunner
from node.service import NodeService
from processing.measurements import Measurements, Verdict, read_measurements
from simulator.pacs import LocalOrthanc, StoredSeries
from simulator.population import Group
from simulator.report import describe_session
from simulator.session import SimulatedSession, simulate_session, study_acquisition
from sodium_node.config import NodeConfig, default_config_path, load_config
from sodium_node.errors import SodiumNodeError

log = logging.getLogger(__name__)

DEMO_FOLDER = Path("demo-output")
DEMO_SEED = 1
DEMO_GROUP = Group.RRMS
INSIDE_NAMESPACE = "SODIUM_NODE_DEMO_NAMESPACE"
STORESCU = Path("/usr/bin/storescu")
SCANNER_AE = "ACHIEVA_3T"
JOB_TIMEOUT_S = 900.0
TRUTH_KEYS = {"cgm": "cgm", "dgm": "dgm", "nawm": "nawm", "csf": "csf"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reexec_in_namespace(argv: list[str]) -> int | None:
    """Run the demo again inside ``unshare -n`` (loopback only) when possible; None to go on here."""
    if os.environ.get(INSIDE_NAMESPACE) or os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    command = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        "-m",
        "sodium_node.cli",
        *argv,
    ]
    return subprocess.run(command, env={**os.environ, INSIDE_NAMESPACE: "1"}, check=False).returncode


def write_demo_config(folder: Path, *, node_port: int, pacs_port: int | None) -> Path:
    """The shipped config with the node's state under ``folder``, a short quiet period and the PACS."""
    text = default_config_path().read_text()
    values = {
        "root": f'"{folder / "state"}"',
        "import_dir": f'"{folder / "import"}"',
        "index_database": f'"{folder / "state" / "index.sqlite3"}"',
        "quiet_period_s": "2.0",
        "port": str(node_port),
        "initial_backoff_s": "1.0",
        "max_backoff_s": "5.0",
        # The demo shows the whole path to the PACS: its subject is segmented by the builtin, whose
        # known CSF error can fail the CSF check; a site keeps the default (false) and reviews first.
        "send_failed_qc": "true",
    }
    for key, value in values.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.MULTILINE)
        if count != 1:
            raise SodiumNodeError(f"{default_config_path()}: no '{key} = ...' line for the demo to set")
    if pacs_port is None:
        text = text[: text.index("[[destinations]]")] + text[text.index("[logging]") :]
    else:
        text = text.replace("port = 4242", f"port = {pacs_port}", 1)
    path = folder / "config.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def send_as_scanner(port: int, files: list[Path]) -> None:
    if not STORESCU.is_file():
        raise SodiumNodeError(f"{STORESCU} is missing: install the Debian package dcmtk (make tools)")
    command = [str(STORESCU), "-R", "-aet", SCANNER_AE, "-aec", "SODIUM_NODE", "127.0.0.1", str(port)]
    result = subprocess.run(
        [*command, *map(str, files)],
        capture_output=True,
        text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
    if result.returncode != 0:
        raise SodiumNodeError(f"storescu could not send the session to the node:\n{result.stderr[-2000:]}")


def wait_for_job(config: NodeConfig) -> Path:
    """The finished job folder; a failed job raises with its error."""
    jobs = config.storage.jobs_dir
    deadline = time.monotonic() + JOB_TIMEOUT_S
    with tqdm(desc="waiting for the node to process the session", bar_format="{desc}: {elapsed}") as bar:
        while time.monotonic() < deadline:
            failed = sorted((jobs / "failed").glob("*")) if (jobs / "failed").is_dir() else []
            if failed:
                error = failed[0] / "error.json"
                raise SodiumNodeError(
                    f"the job failed: {error.read_text() if error.is_file() else failed[0]}"
                )
            done = sorted((jobs / "done").glob("*")) if (jobs / "done").is_dir() else []
            if done:
                return done[0]
            bar.update(0)
            time.sleep(1.0)
    raise SodiumNodeError(f"no job finished within {JOB_TIMEOUT_S:g} s; see `sodium-node status`")


def wait_for_delivery(config: NodeConfig, timeout_s: float = 300.0) -> None:
    settled = {ItemState.DONE, ItemState.REFUSED, ItemState.UNNEEDED}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entries = outbox_status(config)
        if entries and all(entry.state in settled for entry in entries if entry.count):
            return
        time.sleep(1.0)
    raise SodiumNodeError(f"the outbox did not empty within {timeout_s:g} s; see `sodium-node outbox`")


def tsc_table(measurements: Measurements, truth: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"{'tissue':8s} {'TSC mM':>8s} {'SD':>6s} {'median':>7s} {'vol ml':>7s} {'truth':>7s}  method"]
    for item in measurements.tissues:
        true = truth.get(TRUTH_KEYS.get(item.tissue.value, ""), {}).get("tsc_true_mM")
        true_text = f"{true:7.2f}" if true is not None else "      -"
        lines.append(
            f"{item.tissue.value:8s} {item.mean_mM:8.2f} {item.sd_mM:6.2f} {item.median_mM:7.2f} "
            f"{item.volume_ml:7.1f} {true_text}  {item.method.value}"
        )
    return lines


def run_demo(
    out_dir: Path, *, session: SimulatedSession | None = None, with_pacs: bool = True
) -> Measurements:
    """Simulate (unless ``session`` is given), run the node, deliver to a local Orthanc; print the results."""
    out_dir = out_dir.resolve()  # config paths are relative to the config file's folder
    node_dir = out_dir / "node"
    pacs_dir = out_dir / "pacs"
    for folder in (node_dir, pacs_dir):
        shutil.rmtree(folder, ignore_errors=True)
    if session is None:
        session_dir = out_dir / f"session-{DEMO_GROUP.value}-{DEMO_SEED:04d}"
        shutil.rmtree(session_dir, ignore_errors=True)
        print(f"1. The virtual Philips Achieva scans one {DEMO_GROUP.value} subject (seed {DEMO_SEED}) ...")
        session = simulate_session(
            session_dir,
            # The coil's predefined vials and acquisition, which the default config describes.
            study_acquisition(DEMO_SEED, DEMO_GROUP, progress=True),
        )
        print(describe_session(session))
    pacs_port, http_port = free_port(), free_port()
    config = load_config(
        write_demo_config(node_dir, node_port=free_port(), pacs_port=pacs_port if with_pacs else None)
    )
    orthanc = LocalOrthanc(pacs_dir, dicom_port=pacs_port, http_port=http_port)
    runner = ProcessingRunner.from_config(config, publish=Publisher(config))
    files = [path for paths in session.series_files.values() for path in paths]
    stored: list[StoredSeries] = []
    with ExitStack() as running:
        if with_pacs:
            running.enter_context(orthanc)
        service = NodeService(config, runner)
        service.start()
        running.callback(service.index.close)
        running.callback(service.stop)
        print(f"2. The node listens on 127.0.0.1:{service.port}; the scanner sends {len(files)} files ...")
        send_as_scanner(service.port, files)
        job = wait_for_job(config)
        measurements = read_measurements(job / RESULTS_FOLDER)
        if with_pacs:
            print("3. Delivering the results to the PACS (Orthanc) ...")
            wait_for_delivery(config)
            stored = orthanc.series()
    print()
    print("TSC per tissue (processing result beside the simulation's truth):")
    print("\n".join(tsc_table(measurements, session.ground_truth["tissues"])))
    print()
    sent_anyway = (
        " (sent anyway: the demo sets send_failed_qc)" if measurements.qc_verdict is Verdict.FAIL else ""
    )
    print(f"Quality control: {measurements.qc_verdict.value.upper()}{sent_anyway}")
    for check in measurements.quality:
        print(
            f"  {check.step:28s} {check.verdict.value:4s}  {check.metric_name} = {check.metric_value:.3g} "
            f"(limit {check.limit:.3g})" + (f"\n      {check.note}" if check.note else "")
        )
    if with_pacs:
        print()
        print("The PACS (Orthanc) now holds:")
        for series in stored:
            print(
                f"  {series.modality:3s} #{series.series_number:>5s}  {series.series_description:40s} "
                f"{series.instances} instance(s)"
            )
    print()
    print("Where to look:")
    print(f"  results (NIfTI, measurements.json, QC pictures): {job / RESULTS_FOLDER}")
    print(f"  DICOM objects sent to PACS:                      {job / 'export'}")
    print(f"  node state and config:                           {node_dir}")
    if with_pacs:
        print(
            f"  the PACS's files: {pacs_dir}; to browse them run `/usr/sbin/Orthanc "
            f"{orthanc.configuration_path}` and open http://localhost:{http_port} (Orthanc's DICOM port "
            "listens on every interface while it runs)"
        )
    return measurements


def demo_command(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own story
    code = reexec_in_namespace(["demo", "--out-dir", str(args.out_dir)])
    if code is not None:
        return code
    with_pacs = os.environ.get(INSIDE_NAMESPACE) == "1"
    if not with_pacs:
        print(
            "Not root (or no `unshare`): the demo runs without the local PACS, which needs its own network "
            "namespace; the results stay on disk."
        )
    run_demo(Path(args.out_dir), with_pacs=with_pacs)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="the whole node on the embedded default: scanner -> node -> PACS"
    )
    parser.add_argument(
        "--out-dir", default=str(DEMO_FOLDER), help=f"where to write (default: {DEMO_FOLDER})"
    )
    parser.set_defaults(handler=demo_command)
