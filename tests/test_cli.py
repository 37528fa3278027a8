"""The command line: exit codes and one-line messages a radiographer or physicist can act on."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pydicom.dataelem import DataElement

from sodium_node.cli import EXIT_OK, EXIT_USAGE, main
from sodium_node.config import default_config_path
from sodium_node.log_privacy import withhold_dicom_values


def test_check_config_accepts_the_shipped_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(default_config_path())]) == EXIT_OK
    assert capsys.readouterr().out.strip().endswith(": OK")


def test_check_config_rejects_port_zero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "site.toml"
    text = default_config_path().read_text()
    assert "port = 11112" in text
    bad.write_text(text.replace("port = 11112", "port = 0", 1))
    assert main(["check-config", str(bad)]) == EXIT_USAGE
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert str(bad) in message and "network.port" in message and "1 and 65535" in message


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    assert main(["check-config", str(missing)]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"{missing}: file not found"


def test_check_config_lists_every_problem_unknown_keys_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text("[network]\nport = 0\nprot = 104\n[sessions]\nquiet_period_s = -1\n")
    assert main(["check-config", str(site)]) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    keys = [line.split(": ")[1] for line in lines]
    assert keys == ["network.prot", "network.port", "sessions.quiet_period_s"]


def test_check_config_prints_the_effective_configuration_of_a_short_site_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site.toml"
    site.write_text('network.ae_title = "NA_NODE"\n')
    monkeypatch.setenv("SODIUM_NODE_CONFIG", str(site))
    assert main(["check-config", "--print"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert 'ae_title = "NA_NODE"' in printed and "max_step_minutes = 30.0" in printed


def test_every_command_exits_2_on_a_bad_config_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site.toml"
    site.write_text("network.port = 0\nsessions.quiet_period_s = -1\n")
    with caplog.at_level(logging.ERROR):
        assert main(["status", "--config", str(site)]) == EXIT_USAGE
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == (
        f"{site}: network.port: expected an integer between 1 and 65535, got 0 "
        "(and 1 more: sodium-node check-config lists them)"
    )


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["classify", "{missing}"], "{missing}: no such folder (DIR)"),
        (["classify", "{file}"], "{file}: not a folder (DIR)"),
        (["import", "{missing}"], "{missing}: no such folder (DIR)"),
        (["process", "{missing}", "{folder}/out"], "{missing}: no such folder (DICOM_DIR)"),
        (["process", "{folder}", "{file}"], "{file}: exists and is not a folder (OUT_DIR)"),
        (["convert", "{folder}", "{file}"], "{file}: exists and is not a folder (OUT_DIR)"),
        (
            ["simulate", "{file}", "--seed", "1", "--group", "HC"],
            "{file}: exists and is not a folder (OUT_DIR)",
        ),
        (["export", "{folder}", "{missing}", "{folder}/out"], "{missing}: no such folder (SODIUM_DICOM_DIR)"),
    ],
)
def test_a_user_error_is_one_line_naming_the_path_and_exit_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, arguments: list[str], expected: str
) -> None:
    names = {"missing": tmp_path / "nowhere", "file": tmp_path / "a-file", "folder": tmp_path / "folder"}
    names["file"].write_text("not a folder")
    names["folder"].mkdir()
    site = tmp_path / "site.toml"
    site.write_text(f'storage.root = "{tmp_path / "state"}"\n')
    argv = [argument.format(**names) for argument in arguments]
    with caplog.at_level(logging.ERROR):
        takes_config = argv[0] not in ("simulate", "convert")
        assert main([*argv, "--config", str(site)] if takes_config else argv) == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == expected.format(**names) and record.exc_info is None


def test_console_script_is_installed() -> None:
    """`pip install -e .` put the `sodium-node` entry point beside the interpreter."""
    executable = Path(sys.executable).parent / "sodium-node"
    assert executable.is_file(), f"{executable} missing: run `make venv`"
    result = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("sodium-node ")


def test_pydicom_invalid_value_lines_withhold_the_value(caplog: pytest.LogCaptureFixture) -> None:
    """pydicom quotes a value it rejects (a birth date, a name) in its log line and in a Python warning;
    with the CLI's logging set up, the line names the VR only and the warning is not repeated."""
    pydicom_logger = logging.getLogger("pydicom")
    installed = list(pydicom_logger.filters)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        try:
            withhold_dicom_values()
            caplog.set_level(logging.WARNING, logger="pydicom")
            DataElement("PatientBirthDate", "DA", "1970-01-31")
            DataElement("PatientSex", "CS", "female")
        finally:
            pydicom_logger.filters[:] = installed
    lines = [record.getMessage() for record in caplog.records if record.name == "pydicom"]
    assert lines == [
        "Invalid value for VR DA (value withheld)",
        "Invalid value for VR CS (value withheld)",
    ]
    assert not [w for w in shown if "1970" in str(w.message) or "female" in str(w.message)]
