"""External segmentation: tissue maps a site computed with its own segmenter.

``read_external_maps`` reads a folder in any format ``external_formats`` recognises by its file
names: our ``gm``/``wm``/``csf`` [``dgm``] ``.nii.gz`` layout (probabilities 0..1; ``gm`` includes
deep grey matter, ``wm`` includes lesions), FreeSurfer / FastSurfer / SynthSeg label volumes,
SynthSeg posteriors, FSL FAST partial-volume maps, SPM12 ``c1-3`` or CAT12 ``p1-3`` maps. Labels
and posteriors become tissues by ``freesurfer_labels``; every map is put on the 3D T1's grid by
``external_grid`` (resampled when it is in the same scanner space on another grid, refused when it
is not in the T1's space). FAST, SPM12 and CAT12 have no deep-grey class: their deep grey matter is
the builtin's (``atlas_deep_grey``). The format and each file's sha256 go to ``TissueMaps.external``
(and from there into provenance.json).

Either the folder comes with the session, or ``processing.segmentation_command`` writes it:
``{t1}`` in the command is replaced by the 3D T1 as NIfTI, ``{output_dir}`` by the folder to fill.
No shell is involved.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from processing.nifti_io import write_volume
from processing.provenance import sha256_of
from processing.segmentation.atlas_deep_grey import deep_grey_region_on_t1, with_atlas_deep_grey
from processing.segmentation.external_formats import (
    ExternalFormat,
    ExternalInputs,
    SegmentationFile,
    find_segmentation,
)
from processing.segmentation.external_grid import fractions_on_t1, load_image
from processing.segmentation.freesurfer_labels import (
    TISSUE_OF_LABEL,
    LabelTissue,
    posterior_channel_labels,
    tissue_of_labels,
)
from processing.segmentation.tissue_maps import TissueMaps
from processing.volume import Scaling, Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
MAX_PROBABILITY = 1.0 + 1e-3
TISSUES = (LabelTissue.CORTICAL_GREY, LabelTissue.DEEP_GREY, LabelTissue.WHITE, LabelTissue.CSF)


@dataclass(frozen=True)
class TissueArrays:
    """Fractions on the T1 grid: grey (deep included), its deep part (if the format has one),
    white, CSF."""

    grey: Array
    deep_grey: Array | None
    white: Array
    csf: Array


def _probability_map(path: Path, *, t1: Volume) -> Array:
    data, affine = load_image(path)
    if data.ndim != 3:
        raise SegmentationError(f"external segmentation {path}: expected a 3D map, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or data.min() < 0 or data.max() > MAX_PROBABILITY:
        raise SegmentationError(f"external segmentation {path}: values must be probabilities in 0..1")
    return fractions_on_t1({"map": data}, affine, t1=t1, path=path)["map"]


def _tissue_maps(files: tuple[Path, ...], t1: Volume) -> TissueArrays:
    grey, white, csf, *deep = (_probability_map(path, t1=t1) for path in files)
    if deep and np.any(deep[0] > grey + 1e-3):
        raise SegmentationError(f"external segmentation {files[3]}: deep grey matter exceeds {files[0].name}")
    return TissueArrays(grey, deep[0] if deep else None, white, csf)


def _from_tissue_fractions(fractions: dict[str, Array]) -> TissueArrays:
    deep = fractions[LabelTissue.DEEP_GREY.value]
    return TissueArrays(
        grey=fractions[LabelTissue.CORTICAL_GREY.value] + deep,
        deep_grey=deep,
        white=fractions[LabelTissue.WHITE.value],
        csf=fractions[LabelTissue.CSF.value],
    )


def _label_volume(files: tuple[Path, ...], t1: Volume) -> TissueArrays:
    (path,) = files
    data, affine = load_image(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or not np.all(data == np.round(data)):
        raise SegmentationError(
            f"external segmentation {path}: expected a 3D volume of integer labels, got shape {data.shape}"
            + ("" if data.ndim != 3 else " with non-integer values")
        )
    indicators = tissue_of_labels(data.astype(np.int32), path=path)
    fractions = {tissue.value: indicators[tissue].astype(np.float32) for tissue in TISSUES}
    return _from_tissue_fractions(fractions_on_t1(fractions, affine, t1=t1, path=path))


def _posteriors(files: tuple[Path, ...], t1: Volume) -> TissueArrays:
    (path,) = files
    data, affine = load_image(path)
    if data.ndim != 4:
        raise SegmentationError(
            f"external segmentation {path}: SynthSeg posteriors are 4D (one map per label), got shape "
            f"{data.shape}"
        )
    labels = posterior_channel_labels(data.shape[3], path=path)
    if not np.all(np.isfinite(data)) or data.min() < 0 or data.max() > MAX_PROBABILITY:
        raise SegmentationError(f"external segmentation {path}: posteriors must be probabilities in 0..1")
    fractions = {}
    for tissue in TISSUES:
        channels = [index for index, label in enumerate(labels) if TISSUE_OF_LABEL[label] is tissue]
        fractions[tissue.value] = np.clip(np.sum(data[..., channels], axis=3), 0.0, 1.0).astype(np.float32)
    return _from_tissue_fractions(fractions_on_t1(fractions, affine, t1=t1, path=path))


def _classes(order: tuple[str, str, str]) -> Callable[[tuple[Path, ...], Volume], TissueArrays]:
    """A reader of three class maps given in ``order`` (of "grey", "white", "csf")."""

    def read(files: tuple[Path, ...], t1: Volume) -> TissueArrays:
        maps = {name: _probability_map(path, t1=t1) for name, path in zip(order, files, strict=True)}
        return TissueArrays(maps["grey"], None, maps["white"], maps["csf"])

    return read


READERS: dict[ExternalFormat, Callable[[tuple[Path, ...], Volume], TissueArrays]] = {
    ExternalFormat.TISSUE_MAPS: _tissue_maps,
    ExternalFormat.FREESURFER_LABELS: _label_volume,
    ExternalFormat.SYNTHSEG_LABELS: _label_volume,
    ExternalFormat.SYNTHSEG_POSTERIORS: _posteriors,
    ExternalFormat.FSL_FAST: _classes(("csf", "grey", "white")),
    ExternalFormat.SPM12: _classes(("grey", "white", "csf")),
    ExternalFormat.CAT12: _classes(("grey", "white", "csf")),
}


def read_external_maps(
    folder: Path,
    *,
    t1: Volume,
    source: str,
    deep_grey_region: Callable[[Volume], Volume] = deep_grey_region_on_t1,
) -> TissueMaps:
    """The tissue maps in ``folder`` on the T1 grid; ``deep_grey_region`` gives the deep-grey
    regions on the T1 for formats without a deep-grey class (the builtin's, by default)."""
    found = find_segmentation(folder)
    log.info(
        "external segmentation in %s: %s (%s)",
        folder,
        found.format.value,
        ", ".join(p.name for p in found.files),
    )
    arrays = READERS[found.format](found.files, t1)

    def volume(data: Array) -> Volume:
        return t1.with_data(data, scaling=Scaling.DERIVED, unit="fraction").with_space("t1")

    maps = TissueMaps(
        grey=volume(arrays.grey),
        deep_grey=None if arrays.deep_grey is None else volume(arrays.deep_grey),
        white=volume(arrays.white),
        csf=volume(arrays.csf),
        source=source,
        external=ExternalInputs(
            found.format, tuple(SegmentationFile(path, sha256_of(path)) for path in found.files)
        ),
    )
    if not found.format.has_deep_grey:
        maps = with_atlas_deep_grey(maps, deep_grey_region(t1))
    return maps


def run_segmentation_command(command: tuple[str, ...], *, t1: Volume, work_folder: Path) -> TissueMaps:
    """Write the T1 as NIfTI, run ``command`` (placeholders filled), read what it wrote."""
    t1_path = write_volume(t1, work_folder / "t1.nii.gz")
    output_dir = work_folder / "maps"
    output_dir.mkdir(parents=True, exist_ok=True)
    arguments = [
        part.replace("{t1}", str(t1_path)).replace("{output_dir}", str(output_dir)) for part in command
    ]
    log.info("external segmentation: %s", " ".join(arguments))
    try:
        completed = subprocess.run(arguments, capture_output=True, text=True, check=False)
    except OSError as error:
        raise SegmentationError(
            f"external segmentation command {command[0]!r} cannot run: {error}"
        ) from error
    if completed.returncode != 0:
        raise SegmentationError(
            f"external segmentation command {command[0]!r} exited with {completed.returncode}: "
            f"{completed.stderr.strip()[-500:]}"
        )
    return read_external_maps(output_dir, t1=t1, source=f"external:{Path(command[0]).name}")
