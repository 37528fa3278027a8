"""What a processed session's QC must say when the builtin segmentation measured it."""

from __future__ import annotations

import pytest

from processing.csf_check import WARN_MM
from processing.measurements import Measurements, Tissue, Verdict


def assert_checks_pass_but_csf(measurements: Measurements) -> None:
    """Every check passes but the CSF consistency check, which speaks about the builtin
    segmentation's CSF error on the subject (its own tests give each verdict): it must be there, and
    its verdict and note must follow the fitted CSF."""
    csf_check = next(c for c in measurements.quality if c.step == "csf_consistency")
    assert all(c.verdict is Verdict.PASS for c in measurements.quality if c is not csf_check)
    csf = measurements.tissue(Tissue.CSF)
    assert csf is not None and csf_check.metric_value == pytest.approx(csf.mean_mM - 140.0)
    assert (csf_check.verdict is Verdict.PASS) == (abs(csf_check.metric_value) <= WARN_MM)
    assert (csf_check.note == "") == (csf_check.verdict is Verdict.PASS)
