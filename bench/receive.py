"""Benchmark receiving: the same simulated sessions sent by dcmtk storescu over one association to
(a) sodium-node (every instance durable before its acknowledgement), (b) dcmtk storescp (no fsync),
(c) Orthanc with its default durability (``SyncStorageArea``: fsync of every stored file), in one run.

Prints images/s for each, our ratio to each, the node's peak RSS, and how long after the last
acknowledgement the node had every instance in its index and ingested (it reads their headers
after storing them, outside the association). Goal (issue 4):
>= 1.0x Orthanc and >= 0.5x storescp. The machine may be shared: figures are the best of
``--repeats`` rounds, each round measuring all three peers one after the other. Orthanc listens on
every interface, so the whole run happens in a private network namespace with only the loopback
interface up (``unshare -n``, needs root).

    .venv/bin/python bench/receive.py [--dicom-dir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulator.pacs import LocalOrthanc

log = logging.getLogger("bench.receive")
REPOSITORY = Path(__file__).resolve().parent.parent
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk keeps Nagle on unless told; ~40 ms per image
INNER_FLAG = "--inside-namespace"
MINIMUM_INSTANCES = 500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_echo(port: int, called_ae: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    command = ["/usr/bin/echoscu", "-aec", called_ae, "127.0.0.1", str(port)]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{called_ae} exited with {process.returncode} before answering C-ECHO")
        if subprocess.run(command, capture_output=True, env=DCMTK_ENV, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{called_ae} did not answer C-ECHO on port {port} within {timeout_s:g} s")


def send(port: int, called_ae: str, files: list[Path]) -> float:
    """Seconds for storescu to send every file over one association."""
    command = ["/usr/bin/storescu", "-R", "-aet", "ACHIEVA_3T", "-aec", called_ae, "127.0.0.1", str(port)]
    command += [str(path) for path in files]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {called_ae} failed:\n{result.stderr[-2000:]}")
    return seconds


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def settled_after(database: Path, count: int, timeout_s: float = 120.0) -> float:
    """Seconds until ``count`` instances are in the node's index and past ingest."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
            try:
                done = connection.execute(
                    "SELECT COUNT(*) FROM instances WHERE state != 'stored'"
                ).fetchone()[0]
            finally:
                connection.close()
            if done >= count:
                return time.monotonic() - start
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the node did not ingest {count} instances within {timeout_s:g} s")


def bench_node(files: list[Path], work: Path) -> tuple[float, float, float]:
    port = free_port()
    text = (REPOSITORY / "config.toml").read_text()
    state = work / "node"
    replacements = {
        'root = "var/sodium-node"': f'root = "{state}"',
        'import_dir = "var/sodium-node/import"': f'import_dir = "{state / "import"}"',
        'index_database = "var/sodium-node/index.sqlite3"': f'index_database = "{state / "index.sqlite3"}"',
        "port = 11112": f"port = {port}",
        'level = "INFO"': 'level = "WARNING"',
    }
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(f"config.toml has no line {old!r}")
        text = text.replace(old, new, 1)
    if "fsync_before_ack = true" not in text:
        raise RuntimeError("the benchmark measures the node with fsync_before_ack = true")
    config = work / "node.toml"
    config.write_text(text)
    command = [sys.executable, "-m", "sodium_node.cli", "serve", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port, "SODIUM_NODE", process)
        seconds = send(port, "SODIUM_NODE", files)
        settled = settled_after(state / "index.sqlite3", len(files))
        time.sleep(1.0)  # the session monitor's next pass: its memory counts too
        rss = peak_rss_mib(process.pid)
    finally:
        stop(process)
    return seconds, rss, settled


def bench_storescp(files: list[Path], work: Path) -> float:
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    command = ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(out), str(port)]
    process = subprocess.Popen(command, env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port, "STORESCP", process)
        return send(port, "STORESCP", files)
    finally:
        stop(process)


def bench_orthanc(files: list[Path], work: Path) -> float:
    settings = {
        "StorageCompression": False,
        "SyncStorageArea": True,  # Orthanc's default since 1.7.4, spelled out: the fair comparison
    }
    with LocalOrthanc(
        work / "orthanc", dicom_port=free_port(), http_port=free_port(), settings=settings
    ) as pacs:
        return send(pacs.dicom_port, pacs.ae_title, files)


def simulated_files(work: Path) -> list[Path]:
    """Two simulated classic sessions (>= 500 instances in all, as the issue asks)."""
    files: list[Path] = []
    for seed, group in ((1, "RRMS"), (2, "HC")):
        out = work / f"session-{seed}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sodium_node.cli",
                "simulate",
                str(out),
                "--seed",
                str(seed),
                "--group",
                group,
                "--quiet",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        files += sorted((out / "dicom").rglob("*.dcm"))
    return files


def inner(args: argparse.Namespace) -> int:
    for tool in ("/usr/bin/storescu", "/usr/bin/storescp", "/usr/bin/echoscu", "/usr/sbin/Orthanc"):
        if not Path(tool).is_file():
            print(f"{tool} is missing: install the Debian packages dcmtk and orthanc (make tools)")
            return 2
    work = Path(tempfile.mkdtemp(prefix="bench-receive-"))
    try:
        files = sorted(Path(args.dicom_dir).rglob("*.dcm")) if args.dicom_dir else simulated_files(work)
        if len(files) < MINIMUM_INSTANCES:
            print(f"only {len(files)} instances; the benchmark needs >= {MINIMUM_INSTANCES}")
            return 2
        megabytes = sum(path.stat().st_size for path in files) / 1e6
        print(f"{len(files)} instances, {megabytes:.0f} MB, one association each, best of {args.repeats}")
        node_s, storescp_s, orthanc_s, settled_s, rss = [], [], [], [], 0.0
        for repeat in range(args.repeats):
            round_dir = work / f"round-{repeat}"
            round_dir.mkdir()
            seconds, peak, settled = bench_node(files, round_dir)
            node_s.append(seconds)
            settled_s.append(settled)
            rss = max(rss, peak)
            storescp_s.append(bench_storescp(files, round_dir))
            orthanc_s.append(bench_orthanc(files, round_dir))
            shutil.rmtree(round_dir)
            print(
                f"round {repeat + 1}: sodium-node {len(files) / seconds:.0f}, storescp "
                f"{len(files) / storescp_s[-1]:.0f}, Orthanc {len(files) / orthanc_s[-1]:.0f} images/s",
                flush=True,
            )
        rates = {
            name: len(files) / min(times)
            for name, times in (("sodium-node", node_s), ("storescp", storescp_s), ("Orthanc", orthanc_s))
        }
        for name, rate in rates.items():
            print(f"{name:<12} {rate:8.0f} images/s")
        print(f"sodium-node / storescp: {rates['sodium-node'] / rates['storescp']:.2f}x (goal >= 0.5x)")
        print(f"sodium-node / Orthanc:  {rates['sodium-node'] / rates['Orthanc']:.2f}x (goal >= 1.0x)")
        print(f"sodium-node peak RSS:   {rss:.0f} MiB (every instance durable before its acknowledgement)")
        print(
            f"sodium-node settled:   {max(settled_s):.1f} s after the last acknowledgement (indexed+ingested)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dicom-dir", help="send these files instead of two freshly simulated sessions")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best time of each peer counts")
    parser.add_argument(INNER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.inside_namespace:
        return inner(args)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("bench/receive.py needs root and unshare(1): Orthanc is run in a private network namespace")
        return 2
    script = (
        f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} {INNER_FLAG} "
        + " ".join(f"'{argument}'" for argument in sys.argv[1:])
    )
    return subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=REPOSITORY, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
