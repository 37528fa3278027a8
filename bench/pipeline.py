"""Benchmark the processing: "session on disk" to ``measurements.json``, wall time and peak RSS.

Each session is simulated first (not timed), then ``sodium-node process SESSION OUT`` runs in its
own process, so its peak RSS is its own (``wait4``); the per-step seconds come from the run's
``provenance.json``. The peer measured in the same run is dcm2niix converting the same session: the
time a fast C tool needs only to read and convert these files, a yardstick, not a competitor.
Goal (issue 6): <= 60 s and <= 2 GiB on 2 cores.

    .venv/bin/python bench/pipeline.py [--sessions 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from child_process import dcm2niix_executable, run_measured, sodium_node_executable

log = logging.getLogger("bench.pipeline")
GROUPS = ("RRMS", "HC", "SPMS", "CIS")
GOAL_SECONDS = 60.0
GOAL_MIB = 2048.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--seed-base", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sodium_node, dcm2niix = sodium_node_executable(), dcm2niix_executable()
    if dcm2niix is None:
        return 2
    rows = []
    failures: list[int] = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.sessions):
            group, seed = GROUPS[index % len(GROUPS)], args.seed_base + index
            session = Path(scratch) / f"session{index}"
            run_measured(
                [str(sodium_node), "simulate", str(session), "--seed", str(seed), "--group", group, "--quiet"]
            )
            results = Path(scratch) / f"results{index}"
            try:
                seconds, peak_mib = run_measured(
                    [str(sodium_node), "process", str(session / "dicom"), str(results), "--quiet"]
                )
            except subprocess.CalledProcessError:
                log.error(
                    "%s seed %d: processing FAILED (run sodium-node process on it to see why)", group, seed
                )
                failures.append(seed)
                continue
            steps = json.loads((results / "provenance.json").read_text())["step_seconds"]
            converted = Path(scratch) / f"nifti{index}"
            converted.mkdir()
            peer_seconds, _ = run_measured([dcm2niix, "-o", str(converted), str(session / "dicom")])
            rows.append((group, seed, seconds, peak_mib, steps, peer_seconds))
            shutil.rmtree(session)
    if failures:
        log.error("failed sessions (seeds): %s", failures)
    if not rows:
        return 1
    step_names = list(rows[0][4])
    log.info(
        "%-5s %5s %8s %9s %s %11s",
        "group",
        "seed",
        "total s",
        "peak MiB",
        " ".join(f"{name:>9s}" for name in step_names),
        "dcm2niix s",
    )
    for group, seed, seconds, peak_mib, steps, peer_seconds in rows:
        log.info(
            "%-5s %5d %8.1f %9.0f %s %11.2f",
            group,
            seed,
            seconds,
            peak_mib,
            " ".join(f"{steps.get(name, 0.0):9.1f}" for name in step_names),
            peer_seconds,
        )
    worst_seconds = max(row[2] for row in rows)
    worst_mib = max(row[3] for row in rows)
    log.info(
        "worst: %.1f s (goal <= %.0f s: %s), %.0f MiB peak RSS (goal <= %.0f MiB: %s); "
        "%.0fx dcm2niix's conversion time",
        worst_seconds,
        GOAL_SECONDS,
        "met" if worst_seconds <= GOAL_SECONDS else "MISSED",
        worst_mib,
        GOAL_MIB,
        "met" if worst_mib <= GOAL_MIB else "MISSED",
        worst_seconds / max(row[5] for row in rows),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
