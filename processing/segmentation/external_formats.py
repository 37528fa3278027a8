"""Which segmenter wrote a folder of tissue maps, told by its file names.

The folder and its ``mri/`` subfolder (FreeSurfer's subject layout, CAT12's output) are searched.
Recognised (``.nii.gz`` / ``.nii`` / ``.mgz`` where the tool writes them):

- ``tissue_maps``: ``gm``, ``wm``, ``csf`` [, ``dgm``] ``.nii.gz`` (sodium-node's own layout);
- ``freesurfer_labels``: ``aparc+aseg.mgz``, ``aseg.mgz`` or FastSurfer's
  ``aparc.DKTatlas+aseg.deep.mgz``. A FreeSurfer subject holds several of these, all from one run:
  the first present in that order is used (``aparc+aseg``'s cortex follows the surfaces, the most
  refined; FastSurfer's ``.deep`` is its network's output before the surfaces);
- ``synthseg_posteriors``: ``*_posteriors`` (SynthSeg's ``--post``; e.g. ``*_synthseg_posteriors``);
  preferred over SynthSeg's hard labels when both are there, as they keep the partial volume;
- ``synthseg_labels``: ``*_synthseg``;
- ``fsl_fast``: ``*_pve_0``, ``*_pve_1``, ``*_pve_2`` of one prefix (CSF, GM, WM of a T1);
- ``spm12``: ``c1*``, ``c2*``, ``c3*`` of one image (GM, WM, CSF in native space);
- ``cat12``: ``p1*``, ``p2*``, ``p3*`` of one image (GM, WM, CSF in native space).

Anything else is ignored. Two formats in one folder (beyond the precedences above), or two
subjects' files of one format, are an error naming the files: which one is meant cannot be told.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sodium_node.errors import SegmentationError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
TISSUE_MAP_NAMES = ("gm", "wm", "csf")
FREESURFER_LABEL_FILES = ("aparc+aseg.mgz", "aseg.mgz", "aparc.DKTatlas+aseg.deep.mgz")
SUBFOLDERS = ("", "mri")


class ExternalFormat(enum.Enum):
    TISSUE_MAPS = "tissue_maps"
    FREESURFER_LABELS = "freesurfer_labels"
    SYNTHSEG_POSTERIORS = "synthseg_posteriors"
    SYNTHSEG_LABELS = "synthseg_labels"
    FSL_FAST = "fsl_fast"
    SPM12 = "spm12"
    CAT12 = "cat12"

    @property
    def has_deep_grey(self) -> bool:
        """Whether the format tells deep grey from cortical grey (else the atlas regions do)."""
        return self not in (ExternalFormat.FSL_FAST, ExternalFormat.SPM12, ExternalFormat.CAT12)


@dataclass(frozen=True)
class SegmentationFile:
    path: Path
    sha256: str


@dataclass(frozen=True)
class ExternalInputs:
    """What an external segmentation was read from, for ``provenance.json``."""

    format: ExternalFormat
    files: tuple[SegmentationFile, ...]


@dataclass(frozen=True)
class FoundSegmentation:
    format: ExternalFormat
    files: tuple[Path, ...]
    """In the order the reader wants them: tissue maps gm, wm, csf[, dgm]; FAST pve_0..2 (CSF,
    GM, WM); SPM12/CAT12 class 1..3 (GM, WM, CSF); one file otherwise."""


def _stem(path: Path) -> str:
    for suffix in IMAGE_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _images(folder: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    for sub in SUBFOLDERS:
        where = folder / sub if sub else folder
        if where.is_dir():
            yield from sorted(p for p in where.iterdir() if p.is_file() and p.name.endswith(suffixes))


def _numbered_sets(
    folder: Path, *, marker: str, at_start: bool, numbers: tuple[str, ...], what: str
) -> list[tuple[Path, ...]]:
    """Sets of files ``{marker}{n}{rest}`` (``at_start``) or ``{rest}{marker}{n}``, one per ``rest``.

    A set needs its first number's file (an unrelated ``c2*`` alone is not SPM's); a set with it but
    without the others is an error naming what is missing."""
    sets: dict[tuple[Path, str], dict[str, Path]] = {}
    for path in _images(folder, NIFTI_SUFFIXES):
        stem = _stem(path)
        for number in numbers:
            tag = f"{marker}{number}"
            if len(stem) <= len(tag):
                continue
            if at_start and stem.startswith(tag):
                sets.setdefault((path.parent, stem[len(tag) :]), {})[number] = path
            elif not at_start and stem.endswith(tag):
                sets.setdefault((path.parent, stem[: -len(tag)]), {})[number] = path
    found = []
    for (parent, rest), members in sorted(sets.items()):
        if numbers[0] not in members:
            continue
        missing = [
            (f"{marker}{n}{rest}" if at_start else f"{rest}{marker}{n}") for n in numbers if n not in members
        ]
        if missing:
            raise SegmentationError(
                f"external segmentation in {parent}: {what} output {members[numbers[0]].name} without "
                f"{', '.join(missing)}"
            )
        found.append(tuple(members[n] for n in numbers))
    return found


def _single(candidates: list[tuple[Path, ...]], what: str) -> tuple[Path, ...] | None:
    if len(candidates) > 1:
        names = "; ".join(", ".join(str(p) for p in group) for group in candidates)
        raise SegmentationError(
            f"external segmentation: several {what} outputs ({names}): keep the 3D T1's only"
        )
    return candidates[0] if candidates else None


def _candidates(folder: Path) -> dict[ExternalFormat, tuple[Path, ...]]:
    found: dict[ExternalFormat, tuple[Path, ...]] = {}
    maps = [folder / f"{name}.nii.gz" for name in TISSUE_MAP_NAMES]
    if any(path.is_file() for path in maps):
        missing = [path.name for path in maps if not path.is_file()]
        if missing:
            raise SegmentationError(f"external segmentation in {folder}: missing {', '.join(missing)}")
        deep = folder / "dgm.nii.gz"
        found[ExternalFormat.TISSUE_MAPS] = (*maps, deep) if deep.is_file() else tuple(maps)
    for name in FREESURFER_LABEL_FILES:
        present = [folder / sub / name for sub in SUBFOLDERS if (folder / sub / name).is_file()]
        if present:
            found[ExternalFormat.FREESURFER_LABELS] = (present[0],)
            break
    posteriors: list[tuple[Path, ...]] = [
        (p,) for p in _images(folder, IMAGE_SUFFIXES) if _stem(p).endswith("_posteriors")
    ]
    labels: list[tuple[Path, ...]] = [
        (p,) for p in _images(folder, IMAGE_SUFFIXES) if _stem(p).endswith("_synthseg")
    ]
    for fmt, groups, what in (
        (ExternalFormat.SYNTHSEG_POSTERIORS, posteriors, "SynthSeg posteriors"),
        (ExternalFormat.SYNTHSEG_LABELS, labels, "SynthSeg label"),
        (
            ExternalFormat.FSL_FAST,
            _numbered_sets(folder, marker="_pve_", at_start=False, numbers=("0", "1", "2"), what="FSL FAST"),
            "FSL FAST",
        ),
        (
            ExternalFormat.SPM12,
            _numbered_sets(folder, marker="c", at_start=True, numbers=("1", "2", "3"), what="SPM12"),
            "SPM12",
        ),
        (
            ExternalFormat.CAT12,
            _numbered_sets(folder, marker="p", at_start=True, numbers=("1", "2", "3"), what="CAT12"),
            "CAT12",
        ),
    ):
        group = _single(groups, what)
        if group is not None:
            found[fmt] = group
    if ExternalFormat.SYNTHSEG_POSTERIORS in found:
        found.pop(ExternalFormat.SYNTHSEG_LABELS, None)
    return found


def find_segmentation(folder: Path) -> FoundSegmentation:
    """The one segmenter output in ``folder``; an error if there is none or more than one."""
    if not folder.is_dir():
        raise SegmentationError(f"external segmentation {folder}: not a folder")
    found = _candidates(folder)
    if not found:
        raise SegmentationError(
            f"external segmentation in {folder}: no recognised tissue maps (gm/wm/csf.nii.gz, "
            f"{', '.join(FREESURFER_LABEL_FILES)}, *_synthseg, *_posteriors, *_pve_0/1/2, "
            "c1/c2/c3*.nii, p1/p2/p3*.nii)"
        )
    if len(found) > 1:
        described = "; ".join(
            f"{fmt.value}: {', '.join(p.name for p in files)}" for fmt, files in found.items()
        )
        raise SegmentationError(
            f"external segmentation in {folder}: more than one segmenter's output ({described}); "
            "leave only the one to use"
        )
    ((fmt, files),) = found.items()
    return FoundSegmentation(fmt, files)
