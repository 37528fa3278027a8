"""The CSF consistency check: the node's own witness of a segmentation (or calibration) error.

With ``pvc_method = "gtm"`` the CSF concentration is fitted like every other compartment, although
physiology fixes it (~140 mM, ``processing.csf_tsc_mM``). A segmentation that misses CSF (atrophic
sulci and ventricles taken for grey matter) gives that 140 mM signal to the tissues and the fitted CSF
reads high; one that over-segments CSF, or a calibration gain error, reads it low. Every such error
moves the cortical GM with it, so the fitted CSF speaks for the whole result.

Limits, measured (``bench/accuracy.py``, builtin segmentation; the CGM error follows the CSF error at
~0.3 mM per mM): ``WARN_MM`` is where the cortical GM error reaches about half the HC -> SPMS effect of
the study (+4.8 mM), ``FAIL_MM`` where it exceeds the whole effect. With the true segmentation the
fitted CSF is within ~4 mM (``tests/test_pvc_ground_truth.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from processing.measurements import PvcMethod, QualityCheck, Tissue, TissueMeasurement, Verdict

WARN_MM = 10.0
FAIL_MM = 25.0
STEP = "csf_consistency"


def csf_consistency(tissues: Sequence[TissueMeasurement], *, expected_mM: float) -> QualityCheck | None:
    """PASS / WARN / FAIL on |fitted CSF - expected|; None when no CSF concentration was fitted
    (the ``paper`` and ``none`` methods assume it or average it, they do not fit it)."""
    csf = next((m for m in tissues if m.tissue is Tissue.CSF), None)
    if csf is None or csf.method is not PvcMethod.GTM:
        return None
    deviation = csf.mean_mM - expected_mM
    verdict = Verdict.PASS if abs(deviation) <= WARN_MM else Verdict.WARN
    if abs(deviation) > FAIL_MM:
        verdict = Verdict.FAIL
    limit = WARN_MM if verdict is Verdict.PASS else FAIL_MM
    note = (
        ""
        if verdict is Verdict.PASS
        else f"the fitted CSF reads {csf.mean_mM:.0f} mM against {expected_mM:g} mM: the segmentation "
        f"{'misses CSF' if deviation > 0 else 'over-segments CSF'} or the calibration is off; the cortical "
        "GM moves with it (check the segmentation picture)"
    )
    return QualityCheck(STEP, verdict, "fitted_csf_minus_expected_mM", deviation, limit, note=note)
