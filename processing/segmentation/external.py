"""External segmentation: tissue maps a site computed (GIF, FreeSurfer, SynthSeg, ...) as NIfTI.

A folder holds ``gm.nii.gz``, ``wm.nii.gz``, ``csf.nii.gz`` (probabilities 0..1 on the 3D-T1 grid;
``gm`` includes deep grey matter, ``wm`` includes lesions) and optionally ``dgm.nii.gz`` (the
deep-grey part of ``gm``). Either the folder comes with the session, or
``processing.segmentation_command`` writes it: ``{t1}`` in the command is replaced by the 3D T1 as
NIfTI, ``{output_dir}`` by the folder to fill. No shell is involved.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np

from processing.nifti_io import read_volume, write_volume
from processing.segmentation.tissue_maps import TissueMaps
from processing.volume import Volume
from sodium_node.errors import LoadError, SegmentationError

log = logging.getLogger(__name__)

REQUIRED_MAPS = ("gm", "wm", "csf")
OPTIONAL_MAPS = ("dgm",)
MAX_PROBABILITY = 1.0 + 1e-3


def _read_map(path: Path, *, t1: Volume) -> Volume:
    try:
        volume = read_volume(path, space="t1", unit="fraction")
    except LoadError as error:
        raise SegmentationError(f"external segmentation: {error}") from error
    if volume.shape != t1.shape or not np.allclose(volume.affine_ras, t1.affine_ras, atol=1e-2):
        raise SegmentationError(
            f"external segmentation {path}: not on the 3D T1's grid (shape {volume.shape} vs {t1.shape}, "
            "or another affine): resample it to the 3D T1 that was sent"
        )
    data = np.asarray(volume.data)
    if not np.all(np.isfinite(data)) or data.min() < 0 or data.max() > MAX_PROBABILITY:
        raise SegmentationError(f"external segmentation {path}: values must be probabilities in 0..1")
    return volume


def read_external_maps(folder: Path, *, t1: Volume, source: str) -> TissueMaps:
    missing = [name for name in REQUIRED_MAPS if not (folder / f"{name}.nii.gz").is_file()]
    if missing:
        raise SegmentationError(
            f"external segmentation in {folder}: missing {', '.join(m + '.nii.gz' for m in missing)}"
        )
    maps = {name: _read_map(folder / f"{name}.nii.gz", t1=t1) for name in REQUIRED_MAPS}
    deep_path = folder / "dgm.nii.gz"
    deep = _read_map(deep_path, t1=t1) if deep_path.is_file() else None
    if deep is not None and np.any(deep.data > maps["gm"].data + 1e-3):
        raise SegmentationError(f"external segmentation {deep_path}: deep grey matter exceeds gm.nii.gz")
    return TissueMaps(grey=maps["gm"], deep_grey=deep, white=maps["wm"], csf=maps["csf"], source=source)


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
