"""The builtin segmenter on an atrophic SPMS subject (seed 9173: enlarged ventricles, widened sulci)
against the simulator's truth: tissue volumes, the measure the segmenter's TSC errors follow.

The bounds are regression guards at today's measured errors plus a margin, not the goal. The atlas
prior, affinely registered and not atrophic, used to decide even where the T1 is unambiguous: the
enlarged ventricles' CSF went to grey and white matter (-95.5 ml here); the EM's confident CSF now
overrides it (``builtin`` step 5)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from processing.dicom_series import load_series
from processing.segmentation.builtin import segment_builtin
from processing.volume import Scaling
from simulator.population import Group
from simulator.session import SimulatedSession, SimulationOptions, simulate_session

SEED = 9173
CSF_ERROR_ML = (-60.0, 0.0)
"""Measured -37.8 ml with the T1 alone (this test passes no T2 echo, so no outer CSF from it), -95.5
ml before the confident-CSF prior: a deficit, never an excess."""
DEEP_GREY_ERROR_ML = (-16.0, 0.0)
"""Measured -11.0 ml on the independent anatomy, whose nuclei are found in the template's own
intensities, not the builtin's ellipsoids (-0.2 ml on the previous simulator, whose nuclei were
those ellipsoids): the builtin's deep-grey regions miss part of the subject's nuclei. A guard
against getting worse; a segmenter that follows the subject's nuclei moves it towards 0."""


@pytest.fixture(scope="module")
def spms_session(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    return simulate_session(
        tmp_path_factory.mktemp("spms") / "session", SimulationOptions(seed=SEED, group=Group.SPMS)
    )


def test_atrophic_volumes(spms_session: SimulatedSession) -> None:
    t1 = load_series(spms_session.series_files["t1_3d"]).echo(1)
    folder = spms_session.folder / "ground_truth" / "t1_space"

    def truth(*names: str) -> np.ndarray:
        paths = [folder / f"prob_{name}.nii.gz" for name in names]
        return np.sum(
            [np.asarray(nib.nifti1.load(p).dataobj, np.float32) for p in paths if p.is_file()], axis=0
        )

    lesions = truth("lesion_t1_iso", "lesion_t1_hypo")
    t2_lesions = None
    if np.ndim(lesions) == 3 and np.any(lesions >= 0.5):
        t2_lesions = t1.with_data(
            (lesions >= 0.5).astype(np.float32), scaling=Scaling.DERIVED, unit="fraction"
        )
    maps = segment_builtin(t1, t2_lesions=t2_lesions)
    voxel_ml = float(np.prod(t1.voxel_size_mm)) / 1000.0
    assert maps.deep_grey is not None
    csf_error = (float(maps.csf.data.sum()) - float(truth("csf").sum())) * voxel_ml
    deep_error = (float(maps.deep_grey.data.sum()) - float(truth("dgm").sum())) * voxel_ml
    print(f"seed {SEED} SPMS: CSF {csf_error:+.1f} ml, deep GM {deep_error:+.1f} ml vs truth")
    assert CSF_ERROR_ML[0] <= csf_error <= CSF_ERROR_ML[1]
    assert DEEP_GREY_ERROR_ML[0] <= deep_error <= DEEP_GREY_ERROR_ML[1]
