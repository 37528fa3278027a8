"""`sodium-node status`: each session's outcome, its results, and sender text made safe to print."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from node_helpers import running_node, storescu, wait_for
from test_measurements import example
from test_node_receive import ManifestRunner

from node.commands import printable, results_line
from node.processing_runner import RESULTS_FOLDER
from processing.measurements import write_measurements
from simulator.session import SimulatedSession
from sodium_node.cli import EXIT_OK, main

HOSTILE_PATIENT_ID = "P\x1b[2J\x1b[31m1"
"""Clears the screen and turns the terminal red if printed raw."""


def test_printable_escapes_control_characters_and_cuts_long_text() -> None:
    assert printable(HOSTILE_PATIENT_ID) == "P\\x1b[2J\\x1b[31m1"
    assert printable("T1W_SE\n") == "T1W_SE\\n"
    assert printable("x" * 5_000_000, limit=64) == "x" * 61 + "..."
    assert printable("Ärztin 3D") == "Ärztin 3D", "printable non-ASCII text is kept"


def test_a_done_job_shows_its_results_folder_and_tsc(tmp_path: Path) -> None:
    (tmp_path / RESULTS_FOLDER).mkdir()
    write_measurements(example(), tmp_path / RESULTS_FOLDER)
    line = results_line(tmp_path)
    assert line.startswith(f"results {tmp_path / RESULTS_FOLDER}  ") and line.endswith(" mM")
    for measurement in example().tissues:
        assert f"{measurement.tissue.value} {measurement.mean_mM:.1f}" in line
    assert results_line(tmp_path / "elsewhere").startswith("results unreadable: ")


def test_status_shows_the_outcome_and_prints_no_raw_sender_text(
    tmp_path: Path, classic_session: SimulatedSession, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    files = []
    for key, paths in classic_session.series_files.items():
        for number, path in enumerate(paths):
            dataset = pydicom.dcmread(path)
            dataset.PatientID = HOSTILE_PATIENT_ID
            if key == "t1_2d":
                dataset.SeriesDescription = "T1\x07" + "W" * 50_000
            files.append(hostile / f"{key}-{number}.dcm")
            dataset.save_as(files[-1], enforce_file_format=True)
    with running_node(tmp_path / "node", ManifestRunner()) as node:
        storescu(node.port, files)
        done = node.config.storage.jobs_dir / "done"
        wait_for(lambda: done.is_dir() and any(done.iterdir()), what="the job")
        config_file = tmp_path / "node" / "config.toml"
        assert config_file.is_file()
        wait_for(
            lambda: (
                main(["status", "--config", str(config_file)]) == EXIT_OK
                and "  done  " in capsys.readouterr().out
            ),
            what="status to say the session is done",
        )
        assert main(["status", "--config", str(config_file)]) == EXIT_OK
    output = capsys.readouterr().out
    assert "\x1b" not in output and "\x07" not in output
    assert "P\\x1b[2J\\x1b[31m1" in output
    assert max(len(line) for line in output.splitlines()) < 400, "a 50 kB description is cut"
    session_line = next(line for line in output.splitlines() if line.startswith("session "))
    assert "  done  " in session_line, "not 'queued' once its job is done"
