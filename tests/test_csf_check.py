"""The CSF consistency check produces each of its verdicts, and only for a fitted CSF."""

from __future__ import annotations

import pytest

from processing.csf_check import FAIL_MM, WARN_MM, csf_consistency
from processing.measurements import PvcMethod, Tissue, TissueMeasurement, Verdict


def _csf(mean_mM: float, method: PvcMethod = PvcMethod.GTM) -> tuple[TissueMeasurement, ...]:
    cgm = TissueMeasurement(Tissue.CORTICAL_GM, 45.0, 5.0, 45.0, 1000, 600.0, method)
    return (cgm, TissueMeasurement(Tissue.CSF, mean_mM, 10.0, mean_mM, 800, 300.0, method))


@pytest.mark.parametrize(
    ("fitted_mM", "verdict"),
    [
        (140.0, Verdict.PASS),
        (140.0 + WARN_MM, Verdict.PASS),
        (140.0 - WARN_MM - 0.1, Verdict.WARN),
        (140.0 + FAIL_MM, Verdict.WARN),
        (167.0, Verdict.FAIL),
        (64.0, Verdict.FAIL),
    ],
)
def test_verdicts(fitted_mM: float, verdict: Verdict) -> None:
    check = csf_consistency(_csf(fitted_mM), expected_mM=140.0)
    assert check is not None
    assert check.verdict is verdict
    assert check.metric_value == pytest.approx(fitted_mM - 140.0)
    assert (check.note == "") == (verdict is Verdict.PASS)
    if verdict is not Verdict.PASS:
        assert f"{fitted_mM:.0f} mM" in check.note


@pytest.mark.parametrize("method", [PvcMethod.PAPER, PvcMethod.NONE])
def test_no_verdict_where_csf_is_not_fitted(method: PvcMethod) -> None:
    assert csf_consistency(_csf(90.0, method), expected_mM=140.0) is None
