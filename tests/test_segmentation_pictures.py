"""QC pictures in the patient's orientation, whatever the acquisition's (segmentation_pictures.py)."""

from __future__ import annotations

import numpy as np

from processing.segmentation_pictures import patient_ordered


def test_a_sagittal_acquisition_is_turned_to_left_posterior_superior() -> None:
    """A sagittal 3D T1 as Philips stores it: i runs anterior, j inferior, k to the patient's left."""
    data = np.zeros((4, 5, 6))
    data[0, 0, 0] = 1.0  # i = 0 is the most posterior, j = 0 the most superior, k = 0 the rightmost
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    ordered = patient_ordered(data, affine_lps)
    assert ordered.shape == (6, 4, 5), "left-right, anterior-posterior, inferior-superior"
    # Rightmost (L index 0), most posterior (P index last), most superior (S index last).
    assert ordered[0, -1, -1] == 1.0 and ordered.sum() == 1.0


def test_an_axial_acquisition_in_lps_order_is_left_as_it_is() -> None:
    data = np.arange(24.0).reshape(2, 3, 4)
    assert np.array_equal(patient_ordered(data, np.eye(4)), data)
