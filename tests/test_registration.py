"""The registration chain against the simulator's ground-truth poses, over four random sessions.

Four seeds cover the four groups and both the classic and the enhanced series; the ten-seed run is
`bench/registration.py --seeds 10` (a long accuracy run belongs in bench/, not in the 20-minute suite).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from processing.dicom_series import load_series
from processing.registration import Initialisation, RegistrationSettings, register_chain, register_rigid
from processing.transforms import RigidTransform
from simulator.population import Group
from simulator.session import SimulatedSession, SimulationOptions, simulate_session
from sodium_node.errors import RegistrationError

SEEDS = tuple(range(201, 205))
"""Four sessions (one per group, two enhanced), each with its own random head poses (up to 10
degrees, 10 mm) and anatomy."""
GROUPS = (Group.HC, Group.RRMS, Group.SPMS, Group.CIS)
MEAN_TOLERANCE_MM = 1.0
MAX_TOLERANCE_MM = 2.0
"""The issue's requirement: mean and maximum error over brain points (per seed)."""
BRAIN_POINT_STEP = 3
"""Every third T1 voxel along each axis (3 mm): ~40 000 brain points, enough for the maximum."""
WORKERS = 2


@dataclass(frozen=True)
class SeedResult:
    seed: int
    mean_error_mm: float
    max_error_mm: float
    step_seconds: tuple[float, ...]
    mutual_information: tuple[float, ...]
    pictures_written: bool


def brain_points_lps(labels_path: Path) -> np.ndarray:
    """Centres of T1 voxels with a brain/CSF label, in 3D-T1 patient coordinates (LPS mm)."""
    image = nib.load(labels_path)
    labels = np.asarray(image.dataobj)[::BRAIN_POINT_STEP, ::BRAIN_POINT_STEP, ::BRAIN_POINT_STEP]
    ijk = np.argwhere(labels > 0) * BRAIN_POINT_STEP
    ras = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
    return np.asarray(ras * np.array([-1.0, -1.0, 1.0]))


def errors_mm(estimated: RigidTransform, truth_lps: np.ndarray, points_lps: np.ndarray) -> np.ndarray:
    truth = RigidTransform(truth_lps, "t1", "sodium")
    return np.asarray(np.linalg.norm(estimated.apply(points_lps) - truth.apply(points_lps), axis=1))


def run_seed(seed: int, folder: Path) -> SeedResult:
    """Simulate one session, register its chain, measure the T1 -> sodium error; keep nothing else."""
    options = SimulationOptions(seed=seed, group=GROUPS[seed % len(GROUPS)], enhanced=seed % 2 == 0)
    session = simulate_session(folder / "session", options)
    try:
        chain = register_chain(
            sodium=load_series(session.series_files["sodium"]).volumes[0],
            body_pd=load_series(session.series_files["pd_t2_body"]).echo(1),
            head_pd=load_series(session.series_files["pd_t2_head"]).echo(1),
            t1=load_series(session.series_files["t1_3d"]).volumes[0],
            settings=RegistrationSettings(),
            qc_folder=folder / "qc",
        )
        points = brain_points_lps(session.folder / "ground_truth" / "t1_space" / "labels.nii.gz")
        errors = errors_mm(
            chain.t1_to_sodium, np.array(session.ground_truth["t1_to_sodium_scanner_lps"]), points
        )
        return SeedResult(
            seed=seed,
            mean_error_mm=float(errors.mean()),
            max_error_mm=float(errors.max()),
            step_seconds=tuple(step.seconds for step in chain.steps),
            mutual_information=tuple(step.mutual_information for step in chain.steps),
            pictures_written=all(
                step.qc_picture is not None and step.qc_picture.is_file() for step in chain.steps
            ),
        )
    finally:
        shutil.rmtree(folder / "session", ignore_errors=True)


@pytest.fixture(scope="module")
def seed_results(tmp_path_factory: pytest.TempPathFactory) -> list[SeedResult]:
    folders = [tmp_path_factory.mktemp(f"registration_{seed}") for seed in SEEDS]
    with ProcessPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(run_seed, SEEDS, folders))


def test_composed_transform_maps_t1_points_into_sodium_space_within_1_mm_mean_2_mm_max(
    seed_results: list[SeedResult],
) -> None:
    assert len(seed_results) == len(SEEDS) and {r.seed % len(GROUPS) for r in seed_results} == {0, 1, 2, 3}
    report = "\n".join(
        f"seed {r.seed}: mean {r.mean_error_mm:.2f} mm, max {r.max_error_mm:.2f} mm, "
        f"steps {', '.join(f'{s:.1f}' for s in r.step_seconds)} s"
        for r in seed_results
    )
    for result in seed_results:
        assert result.mean_error_mm < MEAN_TOLERANCE_MM, report
        assert result.max_error_mm < MAX_TOLERANCE_MM, report


def test_every_step_writes_a_qc_picture_and_passes_qc(seed_results: list[SeedResult]) -> None:
    settings = RegistrationSettings()
    for result in seed_results:
        assert result.pictures_written, result.seed
        assert min(result.mutual_information) >= settings.qc_min_mutual_information


def test_transform_algebra_round_trips() -> None:
    rng = np.random.default_rng(3)
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = [5.0, -3.0, 2.0]
    a_to_b = RigidTransform(matrix, "a", "b")
    points = rng.normal(size=(20, 3)) * 50
    np.testing.assert_allclose(a_to_b.then(a_to_b.inverse()).apply(points), points, atol=1e-9)
    with pytest.raises(ValueError, match="cannot follow"):
        a_to_b.then(a_to_b)


def test_a_step_whose_qc_fails_stops_with_a_clear_message(
    classic_session: SimulatedSession, tmp_path: Path
) -> None:
    """Sodium against pure noise: no shared anatomy, so the mutual information stays near zero."""
    sodium = load_series(classic_session.series_files["sodium"]).volumes[0].with_space("sodium")
    noise = sodium.with_data(
        np.random.default_rng(1).normal(100.0, 10.0, size=sodium.shape), scaling=sodium.scaling, unit="a.u."
    ).with_space("noise")
    picture = tmp_path / "qc.png"
    with pytest.raises(
        RegistrationError, match=r"sodium_to_noise: registration QC failed: mutual information"
    ) as caught:
        register_rigid(
            sodium,
            noise,
            name="sodium_to_noise",
            settings=RegistrationSettings(),
            initialisation=Initialisation.IDENTITY,
            qc_picture_path=picture,
        )
    assert str(picture) in str(caught.value) and picture.is_file()
