"""Stage-B anatomy: group atrophy reaches its targets with enlarged ventricles; the nuclei are the
template's own, not the segmenter's ellipsoids."""

from __future__ import annotations

import numpy as np
import pytest

from processing.segmentation.mni_priors import load_mni_priors
from simulator.anatomy import Anatomy, simulate_anatomy
from simulator.nuclei import template_structures
from simulator.population import Group
from simulator.tissues import BRAIN_TISSUES, INTRACRANIAL_TISSUES, Tissue

SEED = 2


@pytest.fixture(scope="module")
def anatomies() -> dict[Group, Anatomy]:
    """The same seed (same warp, same draws) as a healthy control and as SPMS: ~25 s each."""
    return {group: simulate_anatomy(np.random.default_rng(SEED), group) for group in (Group.HC, Group.SPMS)}


def fractions_of(anatomy: Anatomy) -> tuple[float, float]:
    tiv = sum(anatomy.volume_ml(t) for t in INTRACRANIAL_TISSUES)
    grey = anatomy.volume_ml(Tissue.CORTICAL_GM) + anatomy.volume_ml(Tissue.DEEP_GM)
    brain = sum(anatomy.volume_ml(t) for t in BRAIN_TISSUES)
    return grey / tiv, (brain - grey) / tiv


def test_atrophy_reaches_the_drawn_fractions(anatomies: dict[Group, Anatomy]) -> None:
    """GMF and WMF reach their targets within 0.004 (bisection to 1e-6 mm; the final
    normalisation of interpolated fractions and lesion placement move them by < 0.3 %), unless the
    warped template already lies below a target (then nothing is removed)."""
    for anatomy in anatomies.values():
        assert anatomy.atrophy is not None
        grey_fraction, white_fraction = fractions_of(anatomy)
        assert grey_fraction == pytest.approx(anatomy.atrophy["target_gmf"], abs=0.004)
        if anatomy.atrophy["ventricle_growth_mm"] > 0:
            assert white_fraction == pytest.approx(anatomy.atrophy["target_wmf"], abs=0.004)
    assert sum(fractions_of(anatomies[Group.SPMS])) < sum(fractions_of(anatomies[Group.HC]))


def test_ventricles_are_larger_in_spms(anatomies: dict[Group, Anatomy]) -> None:
    assert anatomies[Group.SPMS].ventricles_ml > 1.3 * anatomies[Group.HC].ventricles_ml
    assert (
        anatomies[Group.SPMS].atrophy["ventricle_growth_mm"]
        > anatomies[Group.HC].atrophy["ventricle_growth_mm"]
    )


def test_deep_grey_volume_is_adult_sized_and_shrinks_in_spms(anatomies: dict[Group, Anatomy]) -> None:
    """Healthy deep grey (caudate, putamen, pallidum, thalamus, both sides) 22-40 ml; SPMS smaller."""
    healthy = anatomies[Group.HC].volume_ml(Tissue.DEEP_GM)
    assert 22.0 < healthy < 40.0
    assert anatomies[Group.SPMS].volume_ml(Tissue.DEEP_GM) < 0.97 * healthy


def test_nuclei_are_not_the_segmenter_priors() -> None:
    """Dice of the simulator's template-space deep grey with the segmenter's deep-grey prior
    (both on the same MNI grid, thresholded at 0.5) is below 0.7: they are built independently."""
    ours = template_structures().deep_grey.transpose(2, 1, 0) > 0.5
    priors = np.asarray(load_mni_priors().deep_grey_region.data) > 0.5
    assert ours.shape == priors.shape
    dice = 2.0 * float((ours & priors).sum()) / float(ours.sum() + priors.sum())
    assert dice < 0.7, dice
