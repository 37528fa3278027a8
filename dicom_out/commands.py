"""`sodium-node export | send | outbox`: write a processed session's DICOM objects, deliver them."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from pynetdicom.transport import ThreadedAssociationServer

from dicom_out.commitment_scp import start_report_listener
from dicom_out.delivery import DeliveryLock, deliver_once
from dicom_out.export import export_results, read_export
from dicom_out.identity import output_identity
from dicom_out.outbox import (
    ItemState,
    OutboxItem,
    enqueue,
    items_in,
    outbox_status,
    pending_items,
    recover_outbox,
)
from dicom_out.qc_gate import withheld_reason
from sodium_node.config import NodeConfig, config_path, load_config
from sodium_node.config_commands import add_config_option
from sodium_node.paths import input_folder, output_folder

EXIT_OK = 0
EXIT_NOT_DELIVERED = 1
POLL_S = 0.2


def export_command(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    output = output_identity(config.output)
    sodium_dir = input_folder(Path(args.sodium_dicom_dir), "SODIUM_DICOM_DIR")
    output_folder(Path(args.out_dir), "OUT_DIR")
    sodium_files = sorted(path for path in sodium_dir.rglob("*") if path.is_file())
    written = export_results(
        Path(args.results_dir),
        sodium_files,
        Path(args.out_dir),
        kinds=config.output.produce.kinds(),
        output=output,
        versions_dir=config.storage.result_versions_dir,
    )
    for item in written:
        print(f"{item.kind.value:15s} {item.sop_instance_uid} {item.path}")
    return EXIT_OK


def outbox_status_lines(config: NodeConfig) -> list[str]:
    """The outbox part of `sodium-node status` and `sodium-node outbox`."""
    entries = outbox_status(config)
    if not entries:
        return ["outbox: empty"]
    lines = ["outbox:"]
    for entry in entries:
        error = (
            f"  last error: {entry.last_error}"
            if entry.last_error and entry.state in (ItemState.QUEUED, ItemState.COMMITTING)
            else ""
        )
        retry = (
            f"  attempts {entry.attempts}, next in {entry.next_attempt_in_s:.0f} s"
            if entry.next_attempt_in_s is not None and entry.attempts
            else ""
        )
        lines.append(
            f"  {entry.destination:<16} {entry.state.value:<12} {entry.count:>5}"
            f"  oldest {entry.oldest_age_s / 60:8.1f} min{retry}{error}"
        )
        if entry.detail:
            lines.append(f"    {entry.detail}")
        lines += [f"    {item}" for item in entry.items]
    return lines


def _pending_of(config: NodeConfig, uids: set[str]) -> list[OutboxItem]:
    return [item for item in pending_items(config) if item.sop_instance_uid in uids]


def _next_due_s(items: list[OutboxItem]) -> float:
    """Seconds until an item is due; 0 while any waits for a commitment report (it may come any time)."""
    if not items or any(item.state is ItemState.COMMITTING for item in items):
        return 0.0
    return max(0.0, min(item.next_attempt_at for item in items) - time.time())


def _report_listener(config: NodeConfig) -> ThreadedAssociationServer | None:
    """While `send` delivers (the node service is not running), it receives the commitment reports."""
    if not any(destination.storage_commitment for destination in config.destinations):
        return None
    try:
        return start_report_listener(config)
    except OSError as error:
        network = config.network
        print(
            f"cannot listen on {network.host}:{network.port} for storage commitment reports ({error}); "
            "the node service receives them when it runs"
        )
        return None


def send_command(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    export_dir = Path(args.export_dir)
    uids = {item.sop_instance_uid for item in read_export(export_dir)}
    withheld = withheld_reason(export_dir, config)
    if withheld is not None:
        print(withheld)
        return EXIT_NOT_DELIVERED
    created = enqueue(export_dir, config)
    print(f"{export_dir}: {len(created)} objects queued for {len(config.destinations)} destinations")
    deadline = time.monotonic() + args.wait
    lock = DeliveryLock(config)
    delivering = lock.acquire(blocking=False)
    listener: ThreadedAssociationServer | None = None
    if not delivering:
        print("another deliverer (the node service) holds the outbox: waiting for it to send")
    try:
        if delivering:
            recover_outbox(config)
            listener = _report_listener(config)
        while True:
            if delivering:
                for event in deliver_once(config).events:
                    detail = f"  ({event.detail})" if event.detail else ""
                    print(
                        f"{event.destination:<16} {event.outcome.value:<17} {event.kind.value:<15} "
                        f"{event.sop_instance_uid}{detail}"
                    )
            pending = _pending_of(config, uids)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(max(POLL_S, _next_due_s(pending)), max(0.0, deadline - time.monotonic())))
    finally:
        if listener is not None:
            listener.shutdown()
        if delivering:
            lock.release()
    return _print_where(config, uids)


def _print_where(config: NodeConfig, uids: set[str]) -> int:
    """What went where: per destination, state and kind, the count of this export's objects.

    Complete (exit 0) when nothing of it is queued, being sent, waiting for commitment or given up.
    """
    complete = True
    for destination in config.destinations:
        for state in ItemState:
            kinds = Counter(
                item.kind.value
                for item in items_in(config, destination.name, state)
                if item.sop_instance_uid in uids
            )
            if not kinds:
                continue
            if state in (ItemState.QUEUED, ItemState.SENDING, ItemState.COMMITTING, ItemState.DEAD_LETTER):
                complete = False
            listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            print(f"{destination.name:<16} {state.value:<12} {listed}")
    return EXIT_OK if complete else EXIT_NOT_DELIVERED


def outbox_command(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    for line in outbox_status_lines(config):
        print(line)
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("export", help="write the DICOM objects of a results folder")
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a processed session's results folder")
    parser.add_argument(
        "sodium_dicom_dir", metavar="SODIUM_DICOM_DIR", help="the source sodium series' files"
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the objects are written")
    add_config_option(parser)
    parser.set_defaults(handler=export_command)

    parser = commands.add_parser("send", help="queue an export folder for every destination and deliver it")
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="a folder written by sodium-node export")
    add_config_option(parser)
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help=(
            "keep delivering (retries and storage commitment included) at most this long; what is "
            "left stays in the outbox (default 60)"
        ),
    )
    parser.set_defaults(handler=send_command)

    parser = commands.add_parser("outbox", help="list the outbox and dead letter items per destination")
    add_config_option(parser)
    parser.set_defaults(handler=outbox_command)
