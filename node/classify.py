"""A series' role from its header: the first `[[classification.rules]]` entry whose conditions all hold."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node.headers import InstanceHeader, MalformedInstanceError, read_header
from sodium_node.config import ClassificationRule, Role

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesSummary:
    """What the rules look at, for one series (header fields of its first instance, echoes of all)."""

    series_instance_uid: str
    sop_class_uid: str
    series_number: int | None
    series_description: str
    protocol_name: str
    imaged_nucleus: str
    imaging_frequency_mhz: float | None
    receive_coil_name: str
    transmit_coil_name: str
    mr_acquisition_type: str
    echo_count: int


@dataclass(frozen=True)
class Classification:
    role: Role
    rule_index: int
    """Position of the matching rule in `classification.rules` (0-based)."""


def rule_matches(rule: ClassificationRule, series: SeriesSummary) -> bool:
    if rule.sop_class_uids is not None and series.sop_class_uid not in rule.sop_class_uids:
        return False
    if rule.imaged_nucleus is not None and series.imaged_nucleus.upper() != rule.imaged_nucleus:
        return False
    if rule.imaging_frequency_mhz_range is not None:
        low, high = rule.imaging_frequency_mhz_range
        frequency = series.imaging_frequency_mhz
        if frequency is None or not low <= frequency <= high:
            return False
    searches = (
        (rule.receive_coil_regex, series.receive_coil_name),
        (rule.transmit_coil_regex, series.transmit_coil_name),
        (rule.series_description_regex, series.series_description),
        (rule.protocol_name_regex, series.protocol_name),
    )
    for pattern, value in searches:
        if pattern is not None and pattern.search(value) is None:
            return False
    if rule.mr_acquisition_type is not None and series.mr_acquisition_type != rule.mr_acquisition_type.value:
        return False
    return rule.min_echoes is None or series.echo_count >= rule.min_echoes


def classify_series(series: SeriesSummary, rules: Iterable[ClassificationRule]) -> Classification:
    """The role of the first matching rule; a series no rule matches is ignored."""
    for index, rule in enumerate(rules):
        if rule_matches(rule, series):
            return Classification(rule.role, index)
    return Classification(Role.IGNORED, -1)


def summarize(headers: list[InstanceHeader]) -> SeriesSummary:
    """One series' summary from the headers of its instances (the first gives the fields)."""
    first = min(headers, key=lambda header: header.instance_number or 0)
    echoes = {echo for header in headers for echo in header.echo_keys}
    return SeriesSummary(
        series_instance_uid=first.series_instance_uid,
        sop_class_uid=first.sop_class_uid,
        series_number=first.series_number,
        series_description=first.series_description,
        protocol_name=first.protocol_name,
        imaged_nucleus=first.imaged_nucleus,
        imaging_frequency_mhz=first.imaging_frequency_mhz,
        receive_coil_name=first.receive_coil_name,
        transmit_coil_name=first.transmit_coil_name,
        mr_acquisition_type=first.mr_acquisition_type,
        echo_count=len(echoes),
    )


@dataclass(frozen=True)
class FolderSeries:
    summary: SeriesSummary
    classification: Classification
    instance_count: int


def classify_folder(
    folder: Path, rules: Iterable[ClassificationRule]
) -> tuple[list[FolderSeries], list[str]]:
    """Classify every series found under ``folder`` (a dry run); also returns the unreadable files."""
    rules = tuple(rules)
    by_series: dict[str, list[InstanceHeader]] = defaultdict(list)
    problems: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == "DICOMDIR":
            continue
        try:
            header = read_header(path, announced_sop_instance_uid=None)
        except MalformedInstanceError as error:
            problems.append(f"{path}: {error}")
            continue
        by_series[header.series_instance_uid].append(header)
    found = []
    for headers in by_series.values():
        summary = summarize(headers)
        found.append(FolderSeries(summary, classify_series(summary, rules), len(headers)))
    found.sort(key=lambda item: (item.summary.series_number or 0, item.summary.series_instance_uid))
    return found, problems
