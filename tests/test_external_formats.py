"""External segmenters' native outputs as tissue maps: each format written small with nibabel, read,
and checked against the phantom it was drawn from.

The phantom is a head of spheres in scanner RAS millimetres: white matter (radius 18 mm) in a
cortex shell (to 22 mm), a CSF shell (to 25 mm), a ventricle, a thalamus, a hippocampus and a
brainstem placed off-centre (so a flipped or permuted axis moves them), on a 3D T1 of 40^3 voxels
at 1.5 mm. FreeSurfer-style volumes are drawn on FreeSurfer's conformed orientation (LIA) at 1 mm,
another grid in the same space, as FreeSurfer writes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest

from processing.provenance import provenance_document
from processing.segmentation.external import read_external_maps
from processing.segmentation.external_formats import ExternalFormat
from processing.segmentation.freesurfer_labels import SYNTHSEG_LABELS_V2
from processing.segmentation.tissue_maps import TissueMaps
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings
from processing.volume import Scaling, Volume
from sodium_node.cli import EXIT_OK, main
from sodium_node.config import default_config_path
from sodium_node.errors import SegmentationError

T1_VOXEL_MM = 1.5
T1_SHAPE = (40, 40, 40)
T1_AFFINE = np.array(
    [[T1_VOXEL_MM, 0, 0, -29.25], [0, T1_VOXEL_MM, 0, -29.25], [0, 0, T1_VOXEL_MM, -29.25], [0, 0, 0, 1]]
)
CONFORMED_SIZE = 64
CONFORMED_AFFINE = np.array([[-1.0, 0, 0, 32], [0, 0, 1, -32], [0, -1, 0, 32], [0, 0, 0, 1]])
"""FreeSurfer's conformed orientation (LIA), 1 mm, centred like the T1."""

THALAMUS = ((8.0, -4.0, 3.0), 6.0)
VENTRICLE = ((-6.0, 8.0, 2.0), 4.0)
HIPPOCAMPUS = ((-12.0, -8.0, -8.0), 3.0)
BRAINSTEM = ((2.0, -6.0, -13.0), 3.0)
WM_RADIUS, CORTEX_RADIUS, CSF_RADIUS = 18.0, 22.0, 25.0

Array = npt.NDArray[np.float32]


def t1_volume() -> Volume:
    return Volume(
        data=np.ones(T1_SHAPE, dtype=np.float32),
        affine_ras=T1_AFFINE.copy(),
        space="t1",
        scaling=Scaling.DERIVED,
    )


def world(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    return np.asarray(ijk @ affine[:3, :3].T + affine[:3, 3])


def inside(ras: np.ndarray, sphere: tuple[tuple[float, float, float], float]) -> np.ndarray:
    centre, radius = sphere
    return np.asarray(np.linalg.norm(ras - np.array(centre), axis=-1) <= radius)


def phantom_labels(
    shape: tuple[int, int, int], affine: np.ndarray, *, cortex: tuple[int, int] = (3, 42)
) -> np.ndarray:
    """FreeSurfer labels of the phantom; left/right by the sign of x (RAS: x < 0 is right)."""
    ras = world(shape, affine)
    radius = np.linalg.norm(ras, axis=-1)
    right = ras[..., 0] < 0
    labels = np.zeros(shape, dtype=np.int32)
    labels[radius <= CSF_RADIUS] = 24
    labels[radius <= CORTEX_RADIUS] = np.where(right, cortex[1], cortex[0])[radius <= CORTEX_RADIUS]
    labels[radius <= WM_RADIUS] = np.where(right, 41, 2)[radius <= WM_RADIUS]
    labels[inside(ras, THALAMUS)] = 10
    labels[inside(ras, VENTRICLE)] = 43
    labels[inside(ras, HIPPOCAMPUS)] = 53
    labels[inside(ras, BRAINSTEM)] = 16
    return labels


def truth_ml(labels: np.ndarray, values: set[int], voxel_ml: float) -> float:
    return float(np.isin(labels, sorted(values)).sum()) * voxel_ml


def ml(volume: Volume | None) -> float:
    assert volume is not None
    return float(np.sum(volume.data, dtype=np.float64)) * T1_VOXEL_MM**3 / 1000.0


def t1_index(ras: tuple[float, float, float]) -> tuple[int, int, int]:
    ijk = np.linalg.solve(T1_AFFINE, np.array([*ras, 1.0]))[:3]
    i, j, k = (int(np.rint(v)) for v in ijk)
    return i, j, k


def no_region(_: Volume) -> Volume:
    raise AssertionError("a format with deep grey matter asked for the atlas regions")


def save_mgz(labels: np.ndarray, path: Path, affine: np.ndarray = CONFORMED_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.MGHImage(labels.astype(np.int32), affine), path)
    return path


def save_nifti(data: np.ndarray, path: Path, affine: np.ndarray = T1_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
    return path


def read(folder: Path, region: Callable[[Volume], Volume] = no_region) -> TissueMaps:
    return read_external_maps(
        folder, t1=t1_volume(), source=f"external:{folder.name}", deep_grey_region=region
    )


RESAMPLING_TOLERANCE = 0.03
"""Relative volume error allowed after linear resampling from 1 mm to 1.5 mm: point sampling a
1 mm indicator at 1.5 mm spacing estimates these spheres' volumes within -0.9 % (cortex shell) to
+0.6 % (white matter) when measured; 3 % leaves room for other phantoms without hiding a lost
structure or a misplaced one (either moves a tissue by its whole volume, >= 4 %)."""


def test_freesurfer_aseg_on_the_conformed_grid_is_resampled_onto_the_t1(tmp_path: Path) -> None:
    labels = phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE)
    save_mgz(labels, tmp_path / "fs" / "mri" / "aseg.mgz")
    maps = read(tmp_path / "fs")

    mm3 = 1e-3
    expected = {
        "deep": truth_ml(labels, {10}, mm3),
        "grey": truth_ml(labels, {3, 42, 53, 10}, mm3),
        "white": truth_ml(labels, {2, 41, 16}, mm3),
        "csf": truth_ml(labels, {24, 43}, mm3),
    }
    got = {"deep": ml(maps.deep_grey), "grey": ml(maps.grey), "white": ml(maps.white), "csf": ml(maps.csf)}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=RESAMPLING_TOLERANCE), name
    assert maps.grey.shape == T1_SHAPE and np.allclose(maps.grey.affine_ras, T1_AFFINE)
    # specific voxels: the off-centre structures are where they are in RAS (no axis flipped)
    assert maps.deep_grey is not None
    thalamus = t1_index(THALAMUS[0])
    assert maps.deep_grey.data[thalamus] == pytest.approx(1.0) and maps.grey.data[thalamus] == pytest.approx(
        1.0
    )
    mirrored = t1_index((-THALAMUS[0][0], *THALAMUS[0][1:]))
    assert maps.deep_grey.data[mirrored] == 0.0 and maps.white.data[mirrored] == pytest.approx(1.0)
    assert maps.csf.data[t1_index(VENTRICLE[0])] == pytest.approx(1.0)
    assert maps.grey.data[t1_index(HIPPOCAMPUS[0])] == pytest.approx(1.0)  # cortical, not deep
    assert maps.deep_grey.data[t1_index(HIPPOCAMPUS[0])] == 0.0
    assert maps.white.data[t1_index(BRAINSTEM[0])] == pytest.approx(1.0)
    assert maps.csf.data[0, 0, 0] == 0.0 and maps.grey.data[0, 0, 0] == 0.0
    # partial volume at the boundaries: linear interpolation of indicators, not nearest labels
    total = np.asarray(maps.grey.data) + np.asarray(maps.white.data) + np.asarray(maps.csf.data)
    mixed = (np.asarray(maps.white.data) > 0.05) & (np.asarray(maps.white.data) < 0.95)
    assert np.count_nonzero(mixed) > 100
    assert float(total.max()) <= 1.0 + 1e-5
    assert maps.external is not None and maps.external.format is ExternalFormat.FREESURFER_LABELS


def test_aparc_aseg_parcels_are_cortex_and_win_over_aseg(tmp_path: Path) -> None:
    folder = tmp_path / "subject"
    parcels = phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE, cortex=(1028, 2028))
    aparc = save_mgz(parcels, folder / "mri" / "aparc+aseg.mgz")
    save_mgz(np.zeros((CONFORMED_SIZE,) * 3, np.int32), folder / "mri" / "aseg.mgz")  # would be empty
    maps = read(folder)
    cortex_and_hippocampus = truth_ml(parcels, {1028, 2028, 53}, 1e-3)
    assert ml(maps.grey) - ml(maps.deep_grey) == pytest.approx(
        cortex_and_hippocampus, rel=RESAMPLING_TOLERANCE
    )
    assert maps.external is not None
    (record,) = maps.external.files
    assert record.path == aparc and record.sha256 == hashlib.sha256(aparc.read_bytes()).hexdigest()


def test_fastsurfer_deep_labels_are_read(tmp_path: Path) -> None:
    labels = phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE)
    save_mgz(labels, tmp_path / "fastsurfer" / "mri" / "aparc.DKTatlas+aseg.deep.mgz")
    maps = read(tmp_path / "fastsurfer")
    assert ml(maps.deep_grey) == pytest.approx(truth_ml(labels, {10}, 1e-3), rel=RESAMPLING_TOLERANCE)


def posteriors_on_t1() -> tuple[Array, dict[str, Array]]:
    """SynthSeg-2 posteriors on the T1 grid: white 0.7 / cortex 0.3 inside 18 mm, cortex 0.6 /
    CSF 0.4 to 22 mm, a thalamus 0.8 / white 0.2; and the expected tissue fractions."""
    ras = world(T1_SHAPE, T1_AFFINE)
    radius = np.linalg.norm(ras, axis=-1)
    channel = {label: index for index, label in enumerate(SYNTHSEG_LABELS_V2)}
    post = np.zeros((*T1_SHAPE, len(SYNTHSEG_LABELS_V2)), dtype=np.float32)
    core, shell = radius <= WM_RADIUS, (radius > WM_RADIUS) & (radius <= CORTEX_RADIUS)
    thalamus = inside(ras, THALAMUS)
    post[core & ~thalamus, channel[2]] = 0.7
    post[core & ~thalamus, channel[3]] = 0.3
    post[thalamus, channel[49]] = 0.8
    post[thalamus, channel[41]] = 0.2
    post[shell, channel[42]] = 0.6
    post[shell, channel[24]] = 0.4
    post[..., 0] = 1.0 - post[..., 1:].sum(axis=-1)
    white = np.where(thalamus, 0.2, np.where(core, 0.7, 0.0)).astype(np.float32)
    deep = np.where(thalamus, 0.8, 0.0).astype(np.float32)
    grey = deep + np.where(core & ~thalamus, 0.3, np.where(shell, 0.6, 0.0)).astype(np.float32)
    csf = np.where(shell, 0.4, 0.0).astype(np.float32)
    return post, {"grey": grey, "deep": deep, "white": white, "csf": csf}


def test_synthseg_posteriors_are_preferred_over_its_labels(tmp_path: Path) -> None:
    post, truth = posteriors_on_t1()
    save_nifti(post, tmp_path / "synthseg" / "t1_synthseg_posteriors.nii.gz")
    save_nifti(phantom_labels(T1_SHAPE, T1_AFFINE), tmp_path / "synthseg" / "t1_synthseg.nii.gz")
    maps = read(tmp_path / "synthseg")
    assert maps.external is not None and maps.external.format is ExternalFormat.SYNTHSEG_POSTERIORS
    assert maps.deep_grey is not None
    for name, volume in (
        ("grey", maps.grey),
        ("deep", maps.deep_grey),
        ("white", maps.white),
        ("csf", maps.csf),
    ):
        np.testing.assert_allclose(volume.data, truth[name], atol=1e-5, err_msg=name)


def test_synthseg_posteriors_with_an_unknown_channel_count_are_refused(tmp_path: Path) -> None:
    save_nifti(np.zeros((*T1_SHAPE, 5), np.float32), tmp_path / "s" / "t1_posteriors.nii.gz")
    with pytest.raises(SegmentationError, match=r"t1_posteriors\.nii\.gz: 5 posterior channels"):
        read(tmp_path / "s")


def test_synthseg_hard_labels_on_the_t1_grid(tmp_path: Path) -> None:
    labels = phantom_labels(T1_SHAPE, T1_AFFINE)
    save_nifti(labels.astype(np.int16), tmp_path / "s" / "t1_synthseg.nii.gz")
    maps = read(tmp_path / "s")
    assert maps.external is not None and maps.external.format is ExternalFormat.SYNTHSEG_LABELS
    voxel_ml = T1_VOXEL_MM**3 / 1000.0
    assert ml(maps.white) == pytest.approx(truth_ml(labels, {2, 41, 16}, voxel_ml), rel=1e-6)
    np.testing.assert_array_equal(np.asarray(maps.csf.data) > 0, np.isin(labels, [24, 43]))


def class_maps() -> dict[str, Array]:
    """GM/WM/CSF probabilities on the T1 grid with partial volume at each boundary."""
    radius = np.linalg.norm(world(T1_SHAPE, T1_AFFINE), axis=-1)
    brain = np.clip(CORTEX_RADIUS - radius + 0.5, 0.0, 1.0)
    white = np.clip(WM_RADIUS - radius + 0.5, 0.0, 1.0)
    head = np.clip(CSF_RADIUS - radius + 0.5, 0.0, 1.0)
    return {
        "grey": (brain - white).astype(np.float32),
        "white": white.astype(np.float32),
        "csf": (head - brain).astype(np.float32),
    }


def thalamus_box(t1: Volume) -> Volume:
    """Stands in for the builtin's registered deep-grey regions: a box around the thalamus."""
    region = np.zeros(t1.shape, np.float32)
    i, j, k = t1_index(THALAMUS[0])
    region[i - 3 : i + 4, j - 3 : j + 4, k - 3 : k + 4] = 1.0
    return t1.with_data(region, scaling=Scaling.DERIVED, unit="fraction")


@pytest.mark.parametrize(
    ("files", "fmt"),
    [
        pytest.param({"csf": "t1_pve_0.nii.gz", "grey": "t1_pve_1.nii.gz", "white": "t1_pve_2.nii.gz"},
                     ExternalFormat.FSL_FAST, id="fsl-fast"),
        pytest.param({"grey": "c1t1.nii", "white": "c2t1.nii", "csf": "c3t1.nii"},
                     ExternalFormat.SPM12, id="spm12"),
        pytest.param({"grey": "mri/p1t1.nii", "white": "mri/p2t1.nii", "csf": "mri/p3t1.nii"},
                     ExternalFormat.CAT12, id="cat12"),
    ],
)  # fmt: skip
def test_class_maps_get_deep_grey_from_the_atlas_regions(
    tmp_path: Path, files: dict[str, str], fmt: ExternalFormat
) -> None:
    truth = class_maps()
    for name, file in files.items():
        save_nifti(truth[name], tmp_path / "seg" / file)
    t1 = t1_volume()
    maps = read(tmp_path / "seg", region=thalamus_box)
    assert maps.external is not None and maps.external.format is fmt
    box = np.asarray(thalamus_box(t1).data) > 0
    assert maps.deep_grey is not None
    # deep grey = all the parenchyma inside the region (the builtin's rule); white loses it there
    np.testing.assert_allclose(np.asarray(maps.deep_grey.data)[box], (truth["grey"] + truth["white"])[box])
    assert np.all(np.asarray(maps.deep_grey.data)[~box] == 0) and np.all(
        np.asarray(maps.white.data)[box] == 0
    )
    np.testing.assert_allclose(np.asarray(maps.grey.data)[~box], truth["grey"][~box])
    np.testing.assert_allclose(maps.csf.data, truth["csf"])
    assert ml(maps.grey) + ml(maps.white) == pytest.approx(
        float(np.sum(truth["grey"] + truth["white"])) * T1_VOXEL_MM**3 / 1000.0, rel=1e-5
    )


def test_our_own_layout_keeps_working(tmp_path: Path) -> None:
    truth = class_maps()
    for name, file in (("grey", "gm"), ("white", "wm"), ("csf", "csf")):
        save_nifti(truth[name], tmp_path / "maps" / f"{file}.nii.gz")
    maps = read(tmp_path / "maps")
    assert maps.deep_grey is None and maps.source == "external:maps"
    np.testing.assert_allclose(maps.white.data, truth["white"])
    assert maps.external is not None and maps.external.format is ExternalFormat.TISSUE_MAPS
    assert [f.path.name for f in maps.external.files] == ["gm.nii.gz", "wm.nii.gz", "csf.nii.gz"]


def test_unknown_labels_are_an_error_naming_them(tmp_path: Path) -> None:
    labels = phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE)
    labels[:3, :3, :3] = 99
    labels[-3:, -3:, -3:] = 11101  # an aparc.a2009s parcel
    save_mgz(labels, tmp_path / "fs" / "aseg.mgz")
    with pytest.raises(SegmentationError, match=r"aseg\.mgz: label value\(s\) 99, 11101 are not"):
        read(tmp_path / "fs")


def test_a_segmentation_in_another_space_is_refused(tmp_path: Path) -> None:
    elsewhere = CONFORMED_AFFINE.copy()
    elsewhere[:3, 3] += (0.0, 120.0, 0.0)  # another scanner position / another subject's session
    save_mgz(phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE), tmp_path / "fs" / "aseg.mgz", elsewhere)
    with pytest.raises(SegmentationError, match=r"aseg\.mgz: only 0% of its .* ml of tissue lies inside"):
        read(tmp_path / "fs")


def test_two_formats_in_one_folder_are_an_error_naming_the_files(tmp_path: Path) -> None:
    save_mgz(phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE), tmp_path / "mixed" / "aseg.mgz")
    for number, name in ((1, "grey"), (2, "white"), (3, "csf")):
        save_nifti(class_maps()[name], tmp_path / "mixed" / f"c{number}t1.nii")
    with pytest.raises(SegmentationError, match=r"freesurfer_labels: aseg\.mgz; spm12: c1t1\.nii, c2t1\.nii"):
        read(tmp_path / "mixed")


def test_two_subjects_of_one_format_are_an_error(tmp_path: Path) -> None:
    labels = phantom_labels(T1_SHAPE, T1_AFFINE).astype(np.int16)
    save_nifti(labels, tmp_path / "s" / "a_synthseg.nii.gz")
    save_nifti(labels, tmp_path / "s" / "b_synthseg.nii.gz")
    with pytest.raises(SegmentationError, match=r"several SynthSeg label outputs .*a_synthseg.*b_synthseg"):
        read(tmp_path / "s")


def test_provenance_records_the_format_and_the_files(tmp_path: Path) -> None:
    aseg = save_mgz(phantom_labels((CONFORMED_SIZE,) * 3, CONFORMED_AFFINE), tmp_path / "fs" / "aseg.mgz")
    maps = read(tmp_path / "fs")
    series = SessionSeries(
        sodium=(), body_coil_pdt2=(), head_coil_pdt2=(), t1_3d=(), segmentation_folder=aseg.parent
    )
    document = provenance_document(series, ProcessingSettings(), step_seconds={}, segmentation=maps.external)
    assert document["external_segmentation"] == {
        "format": "freesurfer_labels",
        "files": [{"file": str(aseg), "sha256": hashlib.sha256(aseg.read_bytes()).hexdigest()}],
    }


def test_check_config_accepts_external_segmentation_without_a_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = default_config_path().read_text()
    assert 'segmentation = "builtin"' in text
    site = tmp_path / "site.toml"
    site.write_text(text.replace('segmentation = "builtin"', 'segmentation = "external"', 1))
    assert main(["check-config", str(site)]) == EXIT_OK
    assert capsys.readouterr().out.strip().endswith(": OK")
