"""The README's demo: scanner (dcmtk storescu) -> node -> processing -> PACS (Orthanc), end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from peers import require_tool
from quality_assertions import assert_checks_pass_but_csf

from processing.measurements import read_measurements

EXPECTED_IN_PACS = {"Parametric Map": 1, "MR": 60, "SEG": 1, "SR": 1, "summary page": 1}
"""What Orthanc must hold: the PM, the integer MR fallback (one frame per sodium slice), the SEG,
the TID 1500 SR and the summary page."""


def test_demo_delivers_the_processed_session_to_orthanc(tmp_path: Path) -> None:
    require_tool("unshare", package="util-linux")
    if not Path("/usr/sbin/Orthanc").is_file():
        pytest.fail("/usr/sbin/Orthanc is missing: install the Debian package orthanc (make tools)")
    if os.geteuid() != 0:
        pytest.fail("the demo runs Orthanc in its own network namespace (unshare -n): run the tests as root")
    executable = Path(sys.executable).parent / "sodium-node"
    result = subprocess.run(
        [str(executable), "demo", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"demo failed:\n{output[-3000:]}\n{result.stderr[-3000:]}"
    pacs = output[output.index("The PACS (Orthanc) now holds:") :]
    for description, count in EXPECTED_IN_PACS.items():
        line = next((ln for ln in pacs.splitlines() if description in ln), None)
        assert line is not None, f"Orthanc holds no {description}:\n{pacs}"
        assert re.search(rf"\b{count} instance", line), line
    (results,) = (tmp_path / "node" / "state" / "jobs" / "done").glob("*/results")
    measurements = read_measurements(results)
    assert_checks_pass_but_csf(measurements)
    for tissue in measurements.tissues:
        assert f"{tissue.mean_mM:.2f}" in output, f"{tissue.tissue.value} TSC not printed"
