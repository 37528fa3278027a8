"""Tissue classes of the simulated head and their physical properties at 3 T."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Tissue(enum.Enum):
    CORTICAL_GM = "cgm"
    DEEP_GM = "dgm"
    NAWM = "nawm"
    LESION_T1_ISOINTENSE = "lesion_t1_iso"
    LESION_T1_HYPOINTENSE = "lesion_t1_hypo"
    CSF = "csf"
    SKULL = "skull"
    SCALP = "scalp"
    VITREOUS = "vitreous"
    LENS = "lens"


BRAIN_TISSUES = (
    Tissue.CORTICAL_GM,
    Tissue.DEEP_GM,
    Tissue.NAWM,
    Tissue.LESION_T1_ISOINTENSE,
    Tissue.LESION_T1_HYPOINTENSE,
)
LESION_TISSUES = (Tissue.LESION_T1_ISOINTENSE, Tissue.LESION_T1_HYPOINTENSE)
INTRACRANIAL_TISSUES = (*BRAIN_TISSUES, Tissue.CSF)
EYE_TISSUES = (Tissue.VITREOUS, Tissue.LENS)
"""The globes in the orbits: outside the intracranial volume, but in every image."""


@dataclass(frozen=True)
class Relaxation:
    """Proton density (relative to water) and relaxation times at 3 T, in milliseconds."""

    proton_density: float
    t1_ms: float
    t2_ms: float


# Literature-typical 3 T values (e.g. Wansapura et al. 1999; Stanisz et al. 2005), rounded.
# Lesions: longer T1/T2 than NAWM; T1-hypointense ("black hole") lesions longer still.
# Skull: little mobile water, very short T2. Scalp: dominated by subcutaneous fat.
RELAXATION_3T: dict[Tissue, Relaxation] = {
    Tissue.CORTICAL_GM: Relaxation(0.80, 1330.0, 110.0),
    Tissue.DEEP_GM: Relaxation(0.78, 1150.0, 95.0),
    Tissue.NAWM: Relaxation(0.69, 830.0, 80.0),
    Tissue.LESION_T1_ISOINTENSE: Relaxation(0.78, 1250.0, 140.0),
    Tissue.LESION_T1_HYPOINTENSE: Relaxation(0.86, 2000.0, 220.0),
    Tissue.CSF: Relaxation(1.00, 4000.0, 2000.0),
    Tissue.SKULL: Relaxation(0.08, 400.0, 5.0),
    Tissue.SCALP: Relaxation(0.90, 380.0, 130.0),
    # Vitreous: nearly pure water, CSF-like (3 T T1 ~3.5-4 s); the lens: ~65 % water, short T2.
    Tissue.VITREOUS: Relaxation(0.98, 3700.0, 1000.0),
    Tissue.LENS: Relaxation(0.65, 1100.0, 25.0),
}

SKULL_TSC_MM = 10.0
"""Bone has little mobile sodium; assumed value."""
SCALP_TSC_MM = 30.0
"""Skin, muscle and fat of the scalp; assumed value between muscle (~25) and skin (~40)."""
CSF_TSC_MM = 140.0
"""Extracellular fluid concentration, as in the seed paper."""
