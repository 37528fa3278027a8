"""Benchmark the virtual scanner: wall time and peak memory per simulated session.

Each session runs in its own process (so peak RSS is that session's alone); the peer measured in
the same run is dcm2niix converting the session just written, a yardstick for "how long does it
take a fast C tool just to read these files". Goal (issue 3): <= 30 s and <= 2 GiB per session.

    .venv/bin/python bench/simulate.py [--sessions 4] [--enhanced]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from child_process import dcm2niix_executable, run_measured, sodium_node_executable

log = logging.getLogger("bench.simulate")
GROUPS = ("HC", "CIS", "RRMS", "SPMS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--enhanced", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sodium_node, dcm2niix = sodium_node_executable(), dcm2niix_executable()
    if dcm2niix is None:
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.sessions):
            group = GROUPS[index % len(GROUPS)]
            out_dir = Path(scratch) / f"session{index}"
            command = [
                str(sodium_node),
                "simulate",
                str(out_dir),
                "--seed",
                str(100 + index),
                "--group",
                group,
                "--quiet",
            ]
            if args.enhanced:
                command.append("--enhanced")
            seconds, peak_mib = run_measured(command)
            files = sum(1 for _ in (out_dir / "dicom").rglob("*.dcm"))
            converted = Path(scratch) / f"nifti{index}"
            converted.mkdir()
            peer_seconds, _ = run_measured([dcm2niix, "-o", str(converted), str(out_dir / "dicom")])
            rows.append((group, seconds, peak_mib, files, peer_seconds))
            shutil.rmtree(out_dir)
    log.info(
        "%-5s %9s %13s %6s %13s %8s", "group", "simulate s", "peak RSS MiB", "files", "dcm2niix s", "ratio"
    )
    for group, seconds, peak_mib, files, peer_seconds in rows:
        log.info(
            "%-5s %9.1f %13.0f %6d %13.2f %7.1fx",
            group,
            seconds,
            peak_mib,
            files,
            peer_seconds,
            seconds / peer_seconds,
        )
    worst_seconds = max(r[1] for r in rows)
    worst_mib = max(r[2] for r in rows)
    log.info("worst: %.1f s (goal <= 30 s), %.0f MiB peak RSS (goal <= 2048 MiB)", worst_seconds, worst_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
