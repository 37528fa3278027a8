"""QC pictures in the patient's orientation, whatever the acquisition's (segmentation_pictures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from processing.segmentation_pictures import patient_ordered, receive_field_picture
from processing.volume import Volume


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


def test_the_receive_field_picture_has_a_fixed_grey_scale(tmp_path: Path) -> None:
    """A flat field is mid grey and a +20 % one white, whatever the field's own range (a stretched
    scale would show a 1 % ripple as black to white)."""
    affine_ras = np.diag([-3.0, -3.0, 3.0, 1.0])  # an axial grid in LPS order
    shape = (40, 40, 30)
    brain = np.zeros(shape, dtype=np.float32)
    brain[10:30, 10:30, 8:22] = 1.0
    field = np.ones(shape, dtype=np.float32)
    field[:, :, :4] = 1.2  # the bottom slices brighter: not in the axial plane through the brain
    fractions = {"cgm": Volume(brain, affine_ras, "sodium")}
    path = receive_field_picture(Volume(field, affine_ras, "sodium"), fractions, tmp_path / "field.png")
    picture = np.asarray(Image.open(path).convert("L"))
    axial = picture[25 : 25 + 40 * 4, 10 : 10 + 40 * 4]  # the first panel (upscaled x4, below the title)
    assert abs(int(np.median(axial)) - 127) <= 2, "a flat field is mid grey"
