"""What the node reads from a stored instance: its identity and the few header fields sessions need.

`read_header` parses one spooled file (after it was acknowledged, outside the association) and either
returns a frozen `InstanceHeader` or raises `MalformedInstanceError` whose message is the quarantine
reason: not DICOM, truncated, missing or invalid UIDs, missing patient identity.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.filereader
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from node.spool import data_set_offset
from sodium_node.errors import ReceiveError

log = logging.getLogger(__name__)

UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
"""A DICOM UID: digits and dots only, so one can never name anything but a plain file."""

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
IS_RANGE = range(-(2**31), 2**31)
"""An Integer String's values: -2^31 .. 2^31-1 (PS3.5 Table 6.2-1); anything larger is not DICOM."""


class MalformedInstanceError(ReceiveError):
    """A stored file that cannot take part in a session; the message is its quarantine reason."""


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and UID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class InstanceHeader:
    """The identity of one instance and the header fields classification and completeness use."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    modality: str
    series_number: int | None
    series_description: str
    protocol_name: str
    imaged_nucleus: str
    imaging_frequency_mhz: float | None
    receive_coil_name: str
    transmit_coil_name: str
    mr_acquisition_type: str
    acquired_at: dt.datetime | None
    instance_number: int | None
    images_in_acquisition: int | None
    number_of_frames: int | None
    echo_keys: tuple[str, ...]
    """Distinct echoes in this instance (echo number or echo time), e.g. ``("1",)`` or ``("19", "85")``."""
    position_key: str | None
    """The slice position of a single-frame image, rounded to 0.01 mm."""
    frames_consistent: bool
    """For a multi-frame image: frames = distinct positions x echoes, one functional group per frame."""


INFLATE_CHUNK_BYTES = 1 << 20
"""How much inflated output the deflate check holds at a time."""
MAX_INFLATED_BYTES = 512 << 20
"""Largest data set a Deflated Explicit VR Little Endian instance may inflate to. pydicom inflates a
deflated file whole, then copies it, before it parses: a 1.1 MB deflate bomb took the node to
2.4 GB. The largest MR instances are a few hundred MB uncompressed (an enhanced 3D T1 of
512 x 512 x 400 16-bit frames is 210 MB), and nobody deflates those."""


def deflate_problem(deflated: bytes) -> str:
    """Why a Deflated Explicit VR Little Endian data set is refused ('' if it is not): it does not
    inflate to its end, or it inflates to more than `MAX_INFLATED_BYTES`.

    Inflated in chunks of at most `INFLATE_CHUNK_BYTES` that are dropped at once, so the check's
    memory is bounded whatever the ratio.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, PS3.5 A.5
    pending = deflated
    inflated = 0
    try:
        while not inflater.eof:
            output = inflater.decompress(pending, INFLATE_CHUNK_BYTES)
            pending = inflater.unconsumed_tail
            inflated += len(output)
            if inflated > MAX_INFLATED_BYTES:
                return (
                    f"the deflated data set ({len(deflated)} bytes) inflates to more than "
                    f"{MAX_INFLATED_BYTES >> 20} MiB (a deflate bomb?)"
                )
            if not output and not pending:
                return "the deflated data set ends before its deflate stream does (truncated)"
    except zlib.error as error:
        return f"the deflated data set does not inflate ({error})"
    return ""


def _deflated_body(path: Path) -> bytes | None:
    """The data set of a Deflated Explicit VR Little Endian Part 10 file; ``None`` for any other."""
    meta = pydicom.filereader.read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    data = path.read_bytes()
    return data[data_set_offset(data) :]


def read_header(path: Path, *, announced_sop_instance_uid: str | None) -> InstanceHeader:
    """Parse ``path`` fully (pixel data as bytes, never decoded) and check it can join a session."""
    try:
        deflated = _deflated_body(path)
        problem = "" if deflated is None else deflate_problem(deflated)
        if problem:
            raise MalformedInstanceError(problem)
        dataset = pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise MalformedInstanceError(f"not a DICOM Part 10 file: {error}") from None
    except (EOFError, ValueError, KeyError, TypeError, OSError, NotImplementedError, zlib.error) as error:
        # zlib.error: a Deflated Explicit VR Little Endian body that does not inflate.
        raise MalformedInstanceError(f"unreadable DICOM ({type(error).__name__}: {error})") from None
    except RecursionError:
        # pydicom reads sequences recursively: a hostile file can nest them thousands deep.
        raise MalformedInstanceError("unreadable DICOM: sequences nested too deeply to parse") from None
    return header_from_dataset(dataset, announced_sop_instance_uid=announced_sop_instance_uid)


def header_from_dataset(dataset: Dataset, *, announced_sop_instance_uid: str | None) -> InstanceHeader:
    try:
        return _header(dataset, announced_sop_instance_uid)
    except MalformedInstanceError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as error:
        raise MalformedInstanceError(f"invalid header value ({type(error).__name__}: {error})") from None
    except RecursionError:
        raise MalformedInstanceError("invalid header: sequences nested too deeply to read") from None


def _header(dataset: Dataset, announced: str | None) -> InstanceHeader:
    uids = {}
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(dataset.get(keyword, "") or "").strip("\0 ")
        if not value:
            raise MalformedInstanceError(f"missing {keyword}")
        if not is_valid_uid(value):
            raise MalformedInstanceError(
                f"invalid {keyword} {value[:80]!r}: expected digits and dots, at most 64 characters"
            )
        uids[keyword] = value
    if announced is not None and announced != uids["SOPInstanceUID"]:
        raise MalformedInstanceError(
            f"SOPInstanceUID {uids['SOPInstanceUID']} differs from the announced {announced[:80]!r}"
        )
    file_meta = getattr(dataset, "file_meta", None)
    announced_class = "" if file_meta is None else _text(file_meta, "MediaStorageSOPClassUID")
    if announced_class and announced_class != uids["SOPClassUID"]:
        # The network checks this before acknowledging when the data set's head can be read; media
        # announce their class only in the file meta header.
        raise MalformedInstanceError(
            f"SOPClassUID {uids['SOPClassUID']} differs from the announced {announced_class[:80]!r} "
            "(data set does not match SOP class)"
        )
    patient_id = _text(dataset, "PatientID")
    if not patient_id:
        raise MalformedInstanceError(f"missing PatientID (SOP Instance UID {uids['SOPInstanceUID']})")
    _check_pixel_data(dataset, uids["SOPInstanceUID"])
    frames = _int(dataset, "NumberOfFrames")
    echo_keys, positions, consistent = _frame_geometry(dataset, frames)
    return InstanceHeader(
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        patient_id=patient_id,
        issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
        modality=_text(dataset, "Modality"),
        series_number=_int(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        protocol_name=_text(dataset, "ProtocolName"),
        imaged_nucleus=_text(dataset, "ImagedNucleus") or _text(dataset, "ResonantNucleus"),
        imaging_frequency_mhz=_float(dataset, "ImagingFrequency"),
        receive_coil_name=_text(dataset, "ReceiveCoilName")
        or _shared_text(dataset, "MRReceiveCoilSequence", "ReceiveCoilName"),
        transmit_coil_name=_text(dataset, "TransmitCoilName")
        or _shared_text(dataset, "MRTransmitCoilSequence", "TransmitCoilName"),
        mr_acquisition_type=_text(dataset, "MRAcquisitionType").upper(),
        acquired_at=_acquired_at(dataset),
        instance_number=_int(dataset, "InstanceNumber"),
        images_in_acquisition=_int(dataset, "ImagesInAcquisition"),
        number_of_frames=frames,
        echo_keys=echo_keys,
        position_key=positions[0] if frames is None and positions else None,
        frames_consistent=consistent,
    )


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    return str(value).strip("\0 ")


def _int(dataset: Dataset, keyword: str) -> int | None:
    """An IS/US value as an int; outside the IS range it is refused (the index stores 64-bit integers)."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    number = int(value)
    if number not in IS_RANGE:
        raise MalformedInstanceError(
            f"{keyword} {str(getattr(value, 'original_string', value))[:40]!r} is outside the range of an "
            "Integer String (-2^31 .. 2^31-1)"
        )
    return number


def _float(dataset: Dataset, keyword: str) -> float | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    return float(value)


def _shared_text(dataset: Dataset, sequence: str, keyword: str) -> str:
    """A value from the first item of ``sequence`` in the shared functional groups (Enhanced MR)."""
    for group in dataset.get("SharedFunctionalGroupsSequence", []):
        for item in group.get(sequence, []):
            return _text(item, keyword)
    return ""


def _parse_datetime(date: str, time: str) -> dt.datetime | None:
    digits = (date + time.split(".")[0]).ljust(14, "0")[:14]
    try:
        return dt.datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None


def _acquired_at(dataset: Dataset) -> dt.datetime | None:
    """When the series was acquired: Acquisition, else Series, Content or Study date and time."""
    acquisition_datetime = _text(dataset, "AcquisitionDateTime")
    if len(acquisition_datetime) >= 8:
        moment = _parse_datetime(acquisition_datetime[:8], acquisition_datetime[8:].split("+")[0])
        if moment is not None:
            return moment
    for prefix in ("Acquisition", "Series", "Content", "Study"):
        date = _text(dataset, f"{prefix}Date")
        if len(date) == 8:
            moment = _parse_datetime(date, _text(dataset, f"{prefix}Time"))
            if moment is not None:
                return moment
    return None


def _frame_geometry(dataset: Dataset, frames: int | None) -> tuple[tuple[str, ...], list[str], bool]:
    """Distinct echoes, slice positions, and whether a multi-frame image holds every position x echo."""
    if frames is None:
        echo = _text(dataset, "EchoNumbers") or _text(dataset, "EchoTime")
        position = dataset.get("ImagePositionPatient")
        single = [_position_key(position)] if position else []
        return ((echo,) if echo else ()), single, True
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence", []))
    shared = next(iter(dataset.get("SharedFunctionalGroupsSequence", [])), Dataset())
    echoes: set[str] = set()
    positions: set[str] = set()
    for group in per_frame:
        echo_items = group.get("MREchoSequence") or shared.get("MREchoSequence") or []
        for item in echo_items:
            echoes.add(f"{float(item.EffectiveEchoTime):g}")
        plane_items = group.get("PlanePositionSequence") or shared.get("PlanePositionSequence") or []
        for item in plane_items:
            positions.add(_position_key(item.ImagePositionPatient))
    if not per_frame:
        return (), [], True
    consistent = len(per_frame) == frames and max(len(positions), 1) * max(len(echoes), 1) == frames
    return tuple(sorted(echoes, key=float)), sorted(positions), consistent


def _position_key(position: object) -> str:
    values = [float(v) for v in position]  # type: ignore[attr-defined]
    return ",".join(f"{v:.2f}" for v in values)


def _check_pixel_data(dataset: Dataset, sop_instance_uid: str) -> None:
    """An image must carry all its pixel bytes: a truncated transfer leaves them short or missing."""
    rows, columns = _int(dataset, "Rows"), _int(dataset, "Columns")
    if rows is None or columns is None:
        return
    if (
        "PixelData" not in dataset
        and "FloatPixelData" not in dataset
        and "DoubleFloatPixelData" not in dataset
    ):
        raise MalformedInstanceError(
            f"image without pixel data (truncated?) (SOP Instance UID {sop_instance_uid})"
        )
    if "PixelData" not in dataset:
        return
    value = dataset.PixelData
    frames = _int(dataset, "NumberOfFrames") or 1
    transfer_syntax = UID(dataset.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if transfer_syntax.is_encapsulated:
        try:
            fragments = sum(1 for _ in generate_fragments(value))
        except (ValueError, EOFError) as error:
            raise MalformedInstanceError(
                f"truncated or damaged encapsulated pixel data ({error}) "
                f"(SOP Instance UID {sop_instance_uid})"
            ) from None
        if fragments < frames:
            raise MalformedInstanceError(
                f"encapsulated pixel data has {fragments} fragments for {frames} frames (truncated?) "
                f"(SOP Instance UID {sop_instance_uid})"
            )
        return
    bits = _int(dataset, "BitsAllocated") or 16
    samples = _int(dataset, "SamplesPerPixel") or 1
    pixels = rows * columns * samples * frames
    expected = (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)
    if len(value) < expected:
        raise MalformedInstanceError(
            f"pixel data has {len(value)} bytes, {expected} expected (truncated) "
            f"(SOP Instance UID {sop_instance_uid})"
        )
