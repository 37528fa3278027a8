"""The sodium series' Patient Birth Date, made a conformant DA before the writers copy it.

Every object we write copies the patient attributes of the sodium series, and highdicom parses
Patient Birth Date as a DA (``YYYYMMDD``): a scanner or an upstream node that wrote ``1970-01-31``
would fail the whole export after processing succeeded. So the value is read from the raw element
(without pydicom's conversion, which logs the value it rejects) and replaced by:

- the same value when it is a valid ``YYYYMMDD`` date (or empty);
- ``YYYYMMDD`` when it is a valid date written year first with ``-``, ``/`` or ``.`` between the
  parts (ISO 8601 ``1970-01-31``, ACR-NEMA ``1970.01.31``): year, month and day are unambiguous;
- empty otherwise (day-first or month-first forms such as ``01/02/1970`` are ambiguous, anything
  else is not a date). Patient Birth Date is Type 2 in the Patient Module of every object we
  write, so an empty value is conformant.

What was done is logged once per series, never the value: a birth date is a patient identifier.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
from collections.abc import Iterable

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

BIRTH_DATE_KEYWORD = "PatientBirthDate"
_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_YEAR_FIRST = re.compile(r"(\d{4})[-./](\d{1,2})[-./](\d{1,2})")


class BirthDateFix(enum.Enum):
    """What ``conform_birth_dates`` did to a series' Patient Birth Date."""

    KEPT = "kept"
    CONVERTED = "converted from a year-first date to YYYYMMDD"
    EMPTIED = "not a date that can be read unambiguously: written empty (Type 2)"


def _calendar_date(match: re.Match[str] | None) -> str | None:
    if match is None:
        return None
    year, month, day = (int(part) for part in match.groups())
    try:
        return dt.date(year, month, day).strftime("%Y%m%d")
    except ValueError:
        return None


def conformant_birth_date(value: str) -> tuple[str, BirthDateFix]:
    """The DA to write for the birth date ``value`` as found, and whether it was changed."""
    text = value.strip(" \x00")
    if not text:
        return "", BirthDateFix.KEPT
    as_da = _calendar_date(_DA.fullmatch(text))
    if as_da is not None:
        return as_da, BirthDateFix.KEPT if as_da == text else BirthDateFix.CONVERTED
    year_first = _calendar_date(_YEAR_FIRST.fullmatch(text))
    if year_first is not None:
        return year_first, BirthDateFix.CONVERTED
    return "", BirthDateFix.EMPTIED


def _found_value(dataset: Dataset) -> str | None:
    """The birth date as stored, read without pydicom's validation (which would log it)."""
    if BIRTH_DATE_KEYWORD not in dataset:
        return None
    element = dataset.get_item(BIRTH_DATE_KEYWORD)
    if isinstance(element, RawDataElement):
        raw = element.value
        return "" if raw is None else raw.decode("latin-1")
    value = element.value
    return "" if value is None else str(value)


def conform_birth_dates(datasets: Iterable[Dataset], *, series_instance_uid: str) -> BirthDateFix:
    """Give every dataset of one series a conformant Patient Birth Date (in memory); log a change once."""
    fixes: set[BirthDateFix] = set()
    for dataset in datasets:
        found = _found_value(dataset)
        if found is None:
            continue
        conformant, fix = conformant_birth_date(found)
        dataset.PatientBirthDate = conformant
        fixes.add(fix)
    worst = next((fix for fix in (BirthDateFix.EMPTIED, BirthDateFix.CONVERTED) if fix in fixes), None)
    if worst is None:
        return BirthDateFix.KEPT
    log.warning(
        "sodium series %s: Patient Birth Date is not a DICOM date (DA): %s in every object",
        series_instance_uid,
        worst.value,
    )
    return worst
