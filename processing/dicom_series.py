"""DICOM series to volumes: find the series in a folder, load one into volumes per echo and time.

``find_series`` reads headers only and groups image files by Series Instance UID. ``load_series``
reads one series (classic single-frame files or one Enhanced MR multi-frame file), splits its frames
by image type, echo and temporal position, stacks each group into a regular grid
(``stack_geometry``) and scales it to physical values (``scaling``). Anything that would make a
wrong volume is a ``LoadError`` naming the series and the problem.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage

from processing.dicom_frames import Frame, frames_of
from processing.series_header import SeriesHeader, read_header
from processing.stack_geometry import build_stack
from processing.volume import LPS_TO_RAS, EchoInfo, Scaling, Volume
from sodium_node.errors import LoadError

log = logging.getLogger(__name__)

IMAGE_SOP_CLASSES = frozenset({MRImageStorage, EnhancedMRImageStorage})
"""What the loader turns into volumes; other objects (Segmentation, SR, ...) are left out."""


@dataclass(frozen=True)
class SeriesFiles:
    series_instance_uid: str
    paths: tuple[Path, ...]
    description: str
    series_number: int | None


@dataclass(frozen=True)
class LoadedSeries:
    header: SeriesHeader
    volumes: tuple[Volume, ...]
    """One per (image type, echo, temporal position), sorted in that order."""

    @property
    def echo_numbers(self) -> tuple[int, ...]:
        return tuple(sorted({v.echo.number for v in self.volumes}))

    def echo(self, number: int) -> Volume:
        """The (first temporal position of the first image type of the) given echo."""
        for volume in self.volumes:
            if volume.echo.number == number:
                return volume
        raise LoadError(f"{self.header.name}: no echo {number} (echoes: {self.echo_numbers})")


def _read_header_only(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as error:
        log.debug("skipping %s: not a readable DICOM file (%s)", path, error)
        return None


def find_series(paths: Iterable[Path]) -> list[SeriesFiles]:
    """Group the image files among ``paths`` by Series Instance UID (headers only)."""
    files: dict[str, list[Path]] = defaultdict(list)
    described: dict[str, tuple[str, int | None]] = {}
    for path in paths:
        dataset = _read_header_only(path)
        if dataset is None:
            continue
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class not in IMAGE_SOP_CLASSES:
            log.info("%s: SOP class %s is not an MR image; not converted", path, sop_class or "(none)")
            continue
        uid = str(dataset.get("SeriesInstanceUID", ""))
        if not uid:
            raise LoadError(f"{path}: no Series Instance UID; the file cannot be assigned to a series")
        files[uid].append(path)
        number = dataset.get("SeriesNumber")
        described.setdefault(
            uid, (str(dataset.get("SeriesDescription", "")), None if number is None else int(number))
        )
    return [
        SeriesFiles(uid, tuple(sorted(paths)), described[uid][0], described[uid][1])
        for uid, paths in files.items()
    ]


def dicom_files_under(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LoadError(f"{folder}: not a folder")
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _read_datasets(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    datasets: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            datasets.append((path, pydicom.dcmread(path)))
        except (InvalidDicomError, OSError, EOFError) as error:
            raise LoadError(f"{path}: cannot read as DICOM ({error})") from error
    return datasets


def _check_one_series(datasets: Sequence[tuple[Path, Dataset]]) -> None:
    """All files share the series UID and what a single volume needs (class, frame of reference)."""
    first_path, first = datasets[0]
    for keyword in ("SeriesInstanceUID", "SOPClassUID", "FrameOfReferenceUID", "Modality"):
        values = {str(dataset.get(keyword, "")) for _, dataset in datasets}
        if len(values) > 1:
            other = next(p for p, d in datasets if str(d.get(keyword, "")) != str(first.get(keyword, "")))
            name = f"series {first.get('SeriesNumber', '?')} '{first.get('SeriesDescription', '')}'"
            raise LoadError(
                f"{name}: mixed series: {len(values)} different {keyword} values ({first_path} and "
                f"{other} differ); load one series at a time"
            )
    enhanced = [path for path, dataset in datasets if str(dataset.SOPClassUID) == EnhancedMRImageStorage]
    if len(enhanced) > 1:
        raise LoadError(
            f"series {first.get('SeriesNumber', '?')} '{first.get('SeriesDescription', '')}': "
            f"{len(enhanced)} Enhanced MR files in one series; expected one multi-frame file"
        )


def _echo_numbers(frames: Sequence[Frame]) -> list[int]:
    """Echo Numbers where every frame has one, else the rank of the echo time (1 = shortest)."""
    if all(frame.echo_number is not None for frame in frames):
        return [int(frame.echo_number or 0) for frame in frames]
    times = sorted({frame.echo_time_ms for frame in frames if frame.echo_time_ms is not None})
    return [1 if frame.echo_time_ms is None else times.index(frame.echo_time_ms) + 1 for frame in frames]


def _group_frames(frames: Sequence[Frame]) -> dict[tuple[str, int, int], list[Frame]]:
    groups: dict[tuple[str, int, int], list[Frame]] = defaultdict(list)
    for frame, echo_number in zip(frames, _echo_numbers(frames), strict=True):
        groups[(frame.image_type, echo_number, frame.temporal_index)].append(frame)
    return dict(sorted(groups.items()))


def _check_complete(header: SeriesHeader, groups: dict[tuple[str, int, int], list[Frame]]) -> None:
    counts = {key: len(frames) for key, frames in groups.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(
            f"echo {e} time {t} ({kind or 'no image type'}): {n}" for (kind, e, t), n in counts.items()
        )
        raise LoadError(
            f"{header.name}: missing slice(s): the echoes/time points have different slice counts ({detail})"
        )
    for key, frames in groups.items():
        stack_numbers = [f.in_stack_position for f in frames]
        if all(n is not None for n in stack_numbers):
            expected = set(range(1, len(frames) + 1))
            if set(stack_numbers) != expected:
                raise LoadError(
                    f"{header.name}: missing slice(s) in echo {key[1]}: In-Stack Position Numbers "
                    f"{sorted(n for n in stack_numbers if n is not None)[:10]}... are not 1..{len(frames)}"
                )
    expected_images = header.images_in_acquisition
    total = sum(counts.values())
    if expected_images is not None and total != expected_images:
        raise LoadError(
            f"{header.name}: missing slice(s): {total} images received but Images in Acquisition is "
            f"{expected_images}; resend the complete series"
        )


def _scaling_kind(frames: Sequence[Frame], what: str) -> Scaling:
    kinds = {frame.scaling.kind for frame in frames}
    if len(kinds) > 1:
        raise LoadError(
            f"{what}: some frames carry the Philips private scale slope and some do not; "
            "their values would not be on one scale"
        )
    return kinds.pop()


def _volume(header: SeriesHeader, key: tuple[str, int, int], frames: Sequence[Frame]) -> Volume:
    image_type, echo_number, temporal_index = key
    what = f"{header.name} echo {echo_number}" + (f" time {temporal_index}" if temporal_index != 1 else "")
    stack = build_stack(frames, what=what, default_spacing_mm=header.slice_spacing_mm or 1.0)
    data = np.stack([frame.pixels for frame in stack.frames], axis=-1).transpose(1, 0, 2)
    echo_times = {frame.echo_time_ms for frame in frames}
    return Volume(
        data=np.ascontiguousarray(data, dtype=np.float32),
        affine_ras=np.asarray(LPS_TO_RAS @ stack.affine_lps),
        space=header.space_name,
        series_instance_uid=header.series_instance_uid,
        frame_of_reference_uid=header.frame_of_reference_uid,
        echo=EchoInfo(echo_number, echo_times.pop() if len(echo_times) == 1 else None),
        temporal_index=temporal_index,
        image_type=image_type,
        scaling=_scaling_kind(frames, what),
    )


def load_series(paths: Sequence[Path]) -> LoadedSeries:
    """Load the files of one series into volumes, or raise ``LoadError`` naming it and the problem."""
    if not paths:
        raise LoadError("load_series: no files given")
    datasets = _read_datasets(paths)
    _check_one_series(datasets)
    header = read_header(datasets[0][1])
    frames = [frame for path, dataset in datasets for frame in frames_of(dataset, path)]
    groups = _group_frames(frames)
    _check_complete(header, groups)
    volumes = tuple(_volume(header, key, group) for key, group in groups.items())
    log.debug("%s: %d volume(s) of shape %s", header.name, len(volumes), volumes[0].shape)
    return LoadedSeries(header=header, volumes=volumes)
