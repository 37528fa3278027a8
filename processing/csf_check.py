"""The CSF consistency check: the node's own witness of a segmentation (or calibration) error.

With ``pvc_method = "gtm"`` the CSF concentration is fitted like every other compartment, although
physiology fixes it (~140 mM, ``processing.csf_tsc_mM``). A segmentation that misses CSF (atrophic
sulci and ventricles taken for grey matter) gives that 140 mM signal to the tissues and the fitted CSF
reads high; one that over-segments CSF, or a calibration gain error, reads it low. Every such error
moves the cortical GM with it, so the fitted CSF speaks for the whole result.

Limits, measured (``bench/accuracy.py``, builtin segmentation, 9 subjects of the simulator's
independent anatomy, seeds 7000-7008): |fitted CSF - 140| and the session's worst tissue error (CGM,
DGM or NAWM) correlate at r = 0.94. Every subject beyond ``FAIL_MM`` (25 mM; seen +32 to +80) had a
tissue wrong by 4.9 to 11.4 mM, more than the study's HC -> SPMS effect (+4.8 mM in CGM); those
between ``WARN_MM`` and ``FAIL_MM`` (+18 to +23) by 1.3 to 2.1 mM; those within 10 mM by at most
1.7 mM. With the true segmentation the fitted CSF is within ~4 mM (2.2 mM MAE on the same subjects).
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
