"""The MNI template's affine registration onto the 3D T1 (``prior_registration``) against the
simulator's truth: the warped intracranial prior must cover the subject's intracranial volume, also
for a head much smaller than the template's, where a registration started from the template's size
ends with the template's brain on the subject's skull and scalp."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from processing.dicom_series import load_series
from processing.segmentation.mni_priors import load_mni_priors
from processing.segmentation.prior_registration import register_priors
from processing.volume import Scaling, Volume, volume_from_sitk
from simulator.session import SimulatedSession

TIV_RATIO_RANGE = (0.92, 1.03)
"""Warped intracranial prior (>= 0.5) over the true TIV. The prior (the MNI brain dilated 3 mm) runs
2-4 % under the simulator's TIV at a good fit (0.961-0.980 on 14 simulated subjects); the failure
this guards against put the template's brain on the skull and scalp: +10 % (seed 12 as simulated),
+27 % (seed 11 shrunk 10 %), +34 % (seed 301) before the multi-start similarity stage."""
MIN_DICE = 0.96
"""Warped intracranial mask against the true one (both >= 0.5): 0.979-0.987 measured on the same 14
subjects; the overshoots gave 0.85-0.95."""
SMALL_HEAD = 0.9
"""Seed 11's head (0.87 of MNI linearly) shrunk to 0.78 of MNI, as small as the simulator's
smallest (seed 301: 0.80, the one that failed)."""


def shrunk(volume: Volume, factor: float) -> Volume:
    """The volume's content scaled by ``factor`` about the grid's centre, on the same grid."""
    image = volume.to_sitk()
    centre = image.TransformContinuousIndexToPhysicalPoint([size / 2.0 for size in image.GetSize()])
    output_to_input = sitk.Similarity3DTransform()
    output_to_input.SetCenter(centre)
    output_to_input.SetScale(1.0 / factor)
    resampled = sitk.Resample(image, image, output_to_input, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return volume_from_sitk(resampled, like=volume, space=volume.space, unit=volume.unit)


@pytest.mark.parametrize(
    ("fixture", "factor"),
    [("classic_session", 1.0), ("enhanced_session", 1.0), ("classic_session", SMALL_HEAD)],
)
def test_intracranial_prior_covers_the_true_intracranial_volume(
    fixture: str, factor: float, request: pytest.FixtureRequest
) -> None:
    session: SimulatedSession = request.getfixturevalue(fixture)
    t1 = load_series(session.series_files["t1_3d"]).echo(1)
    truth_folder = session.folder / "ground_truth" / "t1_space"
    intracranial = np.sum(
        [
            np.asarray(nib.nifti1.load(path).dataobj, np.float32)
            for path in truth_folder.glob("prob_*.nii.gz")
        ],
        axis=0,
    )
    truth = t1.with_data(intracranial, scaling=Scaling.DERIVED, unit="fraction")
    if factor != 1.0:
        t1, truth = shrunk(t1, factor), shrunk(truth, factor)
    true_tiv_ml = float(session.ground_truth["volumes"]["tiv_ml"]) * factor**3

    priors = register_priors(t1, load_mni_priors(), t1_name=f"{fixture} x{factor}")

    warped = np.asarray(priors.intracranial.data) >= 0.5
    true_mask = np.asarray(truth.data) >= 0.5
    warped_ml = float(np.count_nonzero(warped)) * float(np.prod(t1.voxel_size_mm)) / 1000.0
    dice = (
        2.0 * np.count_nonzero(warped & true_mask) / (np.count_nonzero(warped) + np.count_nonzero(true_mask))
    )
    print(f"{fixture} x{factor}: {warped_ml:.0f} ml for {true_tiv_ml:.0f} ml, Dice {dice:.3f}")
    assert TIV_RATIO_RANGE[0] <= warped_ml / true_tiv_ml <= TIV_RATIO_RANGE[1], (warped_ml, true_tiv_ml)
    assert dice >= MIN_DICE, dice
