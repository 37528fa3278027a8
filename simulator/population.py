"""Subject groups and what a subject of each group carries, from the seed paper's Table 2.

Brownlee et al., "Increased sodium concentration in cortical grey matter is associated with
disease course and disability in relapse-onset MS" (`shared/reference/sodium_mri_ms_paper.txt`):
TSC in mM as mean (SD) per group. Lesion values exist only for MS; the paper's CIS patients had
no typical demyelinating lesions, so CIS subjects get at most a few small lesions with RRMS-like
values and healthy controls none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from simulator.tissues import Tissue


class Group(enum.Enum):
    HC = "HC"
    CIS = "CIS"
    RRMS = "RRMS"
    SPMS = "SPMS"


@dataclass(frozen=True)
class MeanSd:
    mean: float
    sd: float


TSC_TABLE2_MM: dict[Group, dict[Tissue, MeanSd]] = {
    Group.HC: {
        Tissue.CORTICAL_GM: MeanSd(40.63, 2.33),
        Tissue.DEEP_GM: MeanSd(34.83, 2.79),
        Tissue.NAWM: MeanSd(32.03, 3.44),
    },
    Group.CIS: {
        Tissue.CORTICAL_GM: MeanSd(40.68, 1.74),
        Tissue.DEEP_GM: MeanSd(36.13, 1.69),
        Tissue.NAWM: MeanSd(32.92, 2.43),
        Tissue.LESION_T1_ISOINTENSE: MeanSd(42.87, 7.04),
        Tissue.LESION_T1_HYPOINTENSE: MeanSd(51.02, 11.56),
    },
    Group.RRMS: {
        Tissue.CORTICAL_GM: MeanSd(42.30, 3.29),
        Tissue.DEEP_GM: MeanSd(36.14, 3.47),
        Tissue.NAWM: MeanSd(34.43, 3.95),
        Tissue.LESION_T1_ISOINTENSE: MeanSd(42.87, 7.04),
        Tissue.LESION_T1_HYPOINTENSE: MeanSd(51.02, 11.56),
    },
    Group.SPMS: {
        Tissue.CORTICAL_GM: MeanSd(45.45, 3.69),
        Tissue.DEEP_GM: MeanSd(39.47, 3.98),
        Tissue.NAWM: MeanSd(36.95, 4.04),
        Tissue.LESION_T1_ISOINTENSE: MeanSd(49.30, 5.83),
        Tissue.LESION_T1_HYPOINTENSE: MeanSd(57.45, 7.43),
    },
}


@dataclass(frozen=True)
class TissueFractions:
    """Grey and white matter fractions of the intracranial volume (BPF = grey + white)."""

    grey: MeanSd
    white: MeanSd


FRACTIONS_TABLE2: dict[Group, TissueFractions] = {
    Group.HC: TissueFractions(MeanSd(0.458, 0.009), MeanSd(0.310, 0.011)),
    Group.CIS: TissueFractions(MeanSd(0.453, 0.006), MeanSd(0.314, 0.010)),
    Group.RRMS: TissueFractions(MeanSd(0.447, 0.012), MeanSd(0.303, 0.016)),
    Group.SPMS: TissueFractions(MeanSd(0.438, 0.014), MeanSd(0.293, 0.016)),
}


@dataclass(frozen=True)
class LesionLoad:
    """T2 lesion volume (ml) distribution and share of T1-hypointense lesions (T1LV / T2LV)."""

    t2_volume_ml: MeanSd
    min_volume_ml: float
    max_volume_ml: float
    t1_hypointense_share: float


# RRMS and SPMS from Table 2 (T2LV 9.81 (11.60) / 17.97 (12.28) ml; T1LV 1.90 / 5.87 ml).
LESION_LOAD: dict[Group, LesionLoad] = {
    Group.HC: LesionLoad(MeanSd(0.0, 0.0), 0.0, 0.0, 0.0),
    Group.CIS: LesionLoad(MeanSd(0.4, 0.3), 0.0, 1.0, 0.0),
    Group.RRMS: LesionLoad(MeanSd(9.81, 11.60), 1.5, 35.0, 1.90 / 9.81),
    Group.SPMS: LesionLoad(MeanSd(17.97, 12.28), 4.0, 45.0, 5.87 / 17.97),
}

TRUNCATION_SD = 2.0
"""Draws are truncated at mean +- 2 SD so no subject carries an implausible value."""


def draw_truncated(rng: np.random.Generator, value: MeanSd, *, low: float = 0.0) -> float:
    draw = rng.normal(value.mean, value.sd)
    bounded = float(
        np.clip(draw, value.mean - TRUNCATION_SD * value.sd, value.mean + TRUNCATION_SD * value.sd)
    )
    return max(bounded, low)


def draw_tissue_tsc(rng: np.random.Generator, group: Group) -> dict[Tissue, float]:
    """One subject's TSC per brain tissue (mM); lesion values are drawn even if it has no lesion."""
    table = TSC_TABLE2_MM[group]
    fallback = TSC_TABLE2_MM[Group.RRMS]
    tsc: dict[Tissue, float] = {}
    for tissue in (
        Tissue.CORTICAL_GM,
        Tissue.DEEP_GM,
        Tissue.NAWM,
        Tissue.LESION_T1_ISOINTENSE,
        Tissue.LESION_T1_HYPOINTENSE,
    ):
        tsc[tissue] = draw_truncated(rng, table.get(tissue, fallback[tissue]), low=1.0)
    return tsc


def draw_lesion_volume_ml(rng: np.random.Generator, group: Group) -> float:
    """Total T2 lesion volume: log-normal with the group's mean and SD, clipped to its range."""
    load = LESION_LOAD[group]
    if load.max_volume_ml <= 0.0:
        return 0.0
    mean, sd = load.t2_volume_ml.mean, load.t2_volume_ml.sd
    sigma2 = np.log(1.0 + (sd / mean) ** 2)
    draw = rng.lognormal(np.log(mean) - sigma2 / 2.0, np.sqrt(sigma2))
    return float(np.clip(draw, load.min_volume_ml, load.max_volume_ml))
