"""A folder of DICOM files to NIfTI: one file (+ JSON sidecar) per series, echo and image type.

Like dcm2niix, a series that cannot be converted is reported and skipped; the others are written.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from processing.dicom_series import LoadedSeries, dicom_files_under, find_series, load_series
from processing.nifti_io import sidecar_fields, write_sidecar, write_volume
from processing.volume import Volume
from sodium_node.errors import LoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertedFile:
    series_instance_uid: str
    nifti_path: Path
    sidecar_path: Path


@dataclass(frozen=True)
class FailedSeries:
    series_instance_uid: str
    message: str


@dataclass(frozen=True)
class ConversionReport:
    converted: tuple[ConvertedFile, ...]
    failed: tuple[FailedSeries, ...]


def _outputs(series: LoadedSeries) -> dict[str, list[Volume]]:
    """File stems and the volumes each holds: temporal positions of one echo/image type together."""
    image_types = sorted({volume.image_type for volume in series.volumes})
    by_stem: dict[str, list[Volume]] = defaultdict(list)
    for volume in series.volumes:
        stem = f"{series.header.file_stem}_e{volume.echo.number}"
        if len(image_types) > 1:
            stem += f"_t{image_types.index(volume.image_type) + 1}"
        by_stem[stem].append(volume)
    return dict(by_stem)


def write_series(series: LoadedSeries, out_dir: Path) -> list[ConvertedFile]:
    converted = []
    tr_ms = series.header.repetition_time_ms
    for stem, volumes in _outputs(series).items():
        nifti_path = write_volume(
            volumes, out_dir / f"{stem}.nii.gz", repetition_time_s=None if tr_ms is None else tr_ms / 1000
        )
        sidecar_path = write_sidecar(
            sidecar_fields(series.header.sidecar(), volumes), out_dir / f"{stem}.json"
        )
        converted.append(ConvertedFile(series.header.series_instance_uid, nifti_path, sidecar_path))
    return converted


def convert_folder(dicom_dir: Path, out_dir: Path, *, progress: bool = False) -> ConversionReport:
    """Convert every MR image series found under ``dicom_dir`` into ``out_dir``."""
    paths = dicom_files_under(dicom_dir)
    all_series = find_series(tqdm(paths, desc="read headers", unit="file", disable=not progress))
    if not all_series:
        raise LoadError(f"{dicom_dir}: no MR image series found ({len(paths)} files)")
    out_dir.mkdir(parents=True, exist_ok=True)
    converted: list[ConvertedFile] = []
    failed: list[FailedSeries] = []
    for series_files in tqdm(all_series, desc="convert", unit="series", disable=not progress):
        try:
            series = load_series(series_files.paths)
        except LoadError as error:
            log.error("%s", error)
            failed.append(FailedSeries(series_files.series_instance_uid, str(error)))
            continue
        written = write_series(series, out_dir)
        converted.extend(written)
        log.info("%s: wrote %s", series.header.name, ", ".join(f.nifti_path.name for f in written))
    return ConversionReport(tuple(converted), tuple(failed))
