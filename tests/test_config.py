"""The configuration: the shipped default, and one-line errors for every kind of bad file."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sodium_node.config import (
    LogLevel,
    MrAcquisitionType,
    NodeConfig,
    ObjectKind,
    PsfSource,
    PvcMethod,
    ReceiveFieldCorrection,
    Role,
    SegmentationMethod,
    TimeoutAction,
    config_path,
    default_config_path,
    effective_toml,
    load_config,
    parse_config,
)
from sodium_node.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[1]
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

Document = dict[str, Any]


def default_document() -> Document:
    with default_config_path().open("rb") as file:
        return tomllib.load(file)


def toml_value(value: object) -> str:
    """A value in TOML syntax; tables become inline tables (enough for these tests)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def write_config(folder: Path, document: Document) -> Path:
    path = folder / "config.toml"
    path.write_text("".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in document.items()))
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message, "a config error is one line"
    assert message.startswith(f"{path}: ")
    return message


# --- the shipped default -------------------------------------------------------------------------


def test_default_config_path_is_the_top_level_file() -> None:
    assert default_config_path() == REPOSITORY / "config.toml"


def test_packaged_copy_is_the_top_level_file_byte_for_byte() -> None:
    packaged = REPOSITORY / "sodium_node" / "default_config.toml"
    assert packaged.read_bytes() == (REPOSITORY / "config.toml").read_bytes(), (
        "sodium_node/default_config.toml must be the symbolic link ../config.toml"
    )


def test_default_config_has_the_documented_values() -> None:
    config = load_config(default_config_path())

    network = config.network
    assert (network.ae_title, network.host, network.port) == ("SODIUM_NODE", "127.0.0.1", 11112)
    assert (network.max_associations, network.max_pdu_size_bytes) == (10, 0)
    assert network.allowed_calling_ae_titles == ()
    assert (network.acse_timeout_s, network.dimse_timeout_s, network.network_timeout_s) == (30, 30, 60)

    storage = config.storage
    assert storage.root == REPOSITORY / "var" / "sodium-node"
    assert storage.spool_dir == storage.root / "spool"
    assert storage.dead_letter_dir == storage.root / "dead_letter"
    assert storage.import_dir == storage.root / "import"
    assert storage.index_database == storage.root / "index.sqlite3"
    assert storage.fsync_before_ack is True
    assert storage.receipt_retention_days == 30.0
    assert storage.min_free_disk_mib == 1024.0
    assert config.retention.delivered_session_days == 30.0 and config.retention.quarantine_days == 90.0
    assert config.logging.keep_days == 30

    sessions = config.sessions
    assert (sessions.grouping_window_minutes, sessions.quiet_period_s) == (240, 120)
    assert sessions.forced_timeout_minutes == 60
    assert sessions.timeout_action is TimeoutAction.PROCESS_IF_MINIMUM
    assert sessions.minimum_roles == (Role.SODIUM, Role.BODY_COIL_PDT2, Role.HEAD_COIL_PDT2, Role.T1_3D)
    assert sessions.required_roles == sessions.minimum_roles, "t1_2d is optional: processing never reads it"

    roles = [rule.role for rule in config.classification.rules]
    assert roles[0] is Role.LESION_SEG and roles[-1] is Role.IGNORED

    processing = config.processing
    assert processing.phantom_concentrations_mM == (40.0, 80.0)
    assert (processing.phantom_erosion_voxels, processing.psf_fwhm_factor) == (2, 1.6)
    assert processing.psf_source is PsfSource.VIALS
    assert processing.csf_tsc_mM == 140.0
    assert processing.pvc_method is PvcMethod.GTM
    assert processing.segmentation is SegmentationMethod.BUILTIN
    assert processing.segmentation_command is None
    assert processing.lesion_dilation_mm == 0.0
    assert processing.receive_field_correction is ReceiveFieldCorrection.NONE
    assert processing.registration.shrink_factors == (4, 2, 1)
    assert processing.registration.smoothing_sigmas_mm == (2.0, 1.0, 0.0)

    assert config.output.series_number_offset == 1000
    assert config.output.send_failed_qc is False
    assert config.output.produce.kinds() == frozenset(ObjectKind)

    (pacs,) = config.destinations
    assert (pacs.name, pacs.ae_title, pacs.host, pacs.port) == ("PACS", "ORTHANC", "127.0.0.1", 4242)
    assert set(pacs.accepts) == set(ObjectKind)
    assert (pacs.storage_commitment, pacs.commitment_timeout_s) == (False, 600.0)
    assert pacs.tls.enabled is False and pacs.tls.cert_file is None
    assert (pacs.retry.initial_backoff_s, pacs.retry.max_backoff_s, pacs.retry.max_age_hours) == (10, 600, 72)

    assert (config.logging.level, config.logging.file) == (LogLevel.INFO, None)


def field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= field_names(candidate)
    return names


def test_every_key_is_documented_in_the_default_file() -> None:
    text = default_config_path().read_text()
    undocumented = sorted(name for name in field_names(NodeConfig) if not re.search(rf"\b{name}\b", text))
    assert undocumented == []


def test_config_is_frozen() -> None:
    config = load_config(default_config_path())
    with pytest.raises(ValidationError):
        config.network.port = 104  # type: ignore[misc]


def test_json_snapshot_reads_back_as_the_same_config() -> None:
    """The job runner stores `model_dump(mode="json")` in provenance.json; it must be faithful."""
    config = load_config(default_config_path())
    snapshot = json.loads(json.dumps(config.model_dump(mode="json")))
    assert parse_config(snapshot, source=default_config_path()) == config


def test_rewritten_default_loads_equal(tmp_path: Path) -> None:
    """The test helpers' TOML writer loses nothing: only the storage paths move with the folder."""
    original = load_config(default_config_path())
    rewritten = load_config(write_config(tmp_path, default_document()))
    assert rewritten.storage.root == tmp_path / "var" / "sodium-node"
    assert rewritten.model_copy(update={"storage": original.storage}) == original


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path: Path) -> None:
    document = default_document()
    document["storage"]["root"] = "data/node"
    document["storage"]["import_dir"] = "/srv/import"
    document["logging"]["file"] = "logs/node.log"
    config = load_config(write_config(tmp_path, document))
    assert config.storage.root == tmp_path / "data" / "node"
    assert config.storage.import_dir == Path("/srv/import")
    assert config.logging.file == tmp_path / "logs" / "node.log"


# --- the default classification rules ------------------------------------------------------------


def first_role(config: NodeConfig, series: dict[str, Any]) -> Role:
    """First-match-wins over the rules' conditions, for the fields the default rules use."""

    def search(pattern: re.Pattern[str] | None, value: str) -> bool:
        return pattern is None or pattern.search(value) is not None

    for rule in config.classification.rules:
        if (
            (rule.sop_class_uids is None or series["sop_class_uid"] in rule.sop_class_uids)
            and (rule.imaged_nucleus is None or rule.imaged_nucleus == series.get("nucleus", "").upper())
            and (
                rule.imaging_frequency_mhz_range is None
                or rule.imaging_frequency_mhz_range[0]
                <= series["frequency_mhz"]
                <= rule.imaging_frequency_mhz_range[1]
            )
            and search(rule.receive_coil_regex, series.get("receive_coil", ""))
            and search(rule.series_description_regex, series.get("description", ""))
            and (rule.mr_acquisition_type is None or rule.mr_acquisition_type == series.get("acquisition"))
            and (rule.min_echoes is None or series.get("echoes", 1) >= rule.min_echoes)
        ):
            return rule.role
    raise AssertionError("the default rules end with a catch-all")


def mr(description: str, coil: str, acquisition: str, echoes: int = 1, nucleus: str = "1H") -> dict[str, Any]:
    frequency = 33.78 if nucleus == "23NA" else 127.74  # Larmor frequencies at 3 T
    return {
        "sop_class_uid": MR_IMAGE_STORAGE,
        "nucleus": nucleus,
        "frequency_mhz": frequency,
        "receive_coil": coil,
        "description": description,
        "acquisition": MrAcquisitionType(acquisition),
        "echoes": echoes,
    }


@pytest.mark.parametrize(
    ("series", "role"),
    [
        (mr("Na_3DCONES", "NA_TXRX_VOLUME", "3D", nucleus="23NA"), Role.SODIUM),
        ({**mr("Na_3DCONES", "NA_TXRX_VOLUME", "3D"), "nucleus": "", "frequency_mhz": 33.78}, Role.SODIUM),
        (mr("PD_T2_TSE_BODY", "BODY", "2D", echoes=2), Role.BODY_COIL_PDT2),
        (mr("DUAL_TSE", "Q-Body", "2D", echoes=2), Role.BODY_COIL_PDT2),
        (mr("PD/T2", "B", "2D", echoes=2), Role.BODY_COIL_PDT2),
        (mr("PD_T2_TSE", "SENSE-Head-32", "2D", echoes=2), Role.HEAD_COIL_PDT2),
        (mr("PD/T2", "dS Head 32ch", "2D", echoes=2), Role.HEAD_COIL_PDT2),
        (mr("T1W_3D_TFE", "SENSE-Head-32", "3D"), Role.T1_3D),
        (mr("sT1W_3D_TFE", "dS Head 32ch", "3D"), Role.T1_3D),
        (mr("3D_T1", "SENSE-Head-32", "3D"), Role.T1_3D),
        (mr("T1W_SE", "SENSE-Head-32", "2D"), Role.T1_2D),
        (mr("T1W_TSE", "dS Head 32ch", "2D"), Role.T1_2D),
        ({"sop_class_uid": SEGMENTATION_STORAGE}, Role.LESION_SEG),
        (mr("SURVEY", "BODY", "2D"), Role.IGNORED),
        (mr("PD_T2_TSE", "SENSE-Head-32", "2D", echoes=1), Role.IGNORED),
    ],
    ids=lambda value: value.value if isinstance(value, Role) else "",
)
def test_default_rules_classify_simulator_and_philips_names(series: dict[str, Any], role: Role) -> None:
    assert first_role(load_config(default_config_path()), series) is role


# --- bad files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert config_error(path) == f"{path}: file not found"


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[network]\nae_title = "SODIUM_NODE"\nport = \n')
    message = config_error(path)
    assert "invalid TOML" in message and "line 3" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[network]\nae_title = "\xff"\n')
    assert "expected UTF-8 text" in config_error(path)


def test_several_errors_report_the_first_count_the_rest_and_list_all_unknown_keys_first(
    tmp_path: Path,
) -> None:
    document = default_document()
    document["network"].update(port=0, max_associations=0, acse_timeout_s=-1.0)
    document["storage"]["fsync_befor_ack"] = False
    path = write_config(tmp_path, document)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.endswith(
        "storage.fsync_befor_ack: unknown key 'fsync_befor_ack'; expected one of: root, import_dir, "
        "index_database, fsync_before_ack, import_settle_s, receipt_retention_days, min_free_disk_mib "
        "(and 3 more: "
        "sodium-node check-config lists them)"
    ), message
    problems = raised.value.problems
    assert [problem.split(": ", 2)[1] for problem in problems] == [
        "storage.fsync_befor_ack",
        "network.port",
        "network.max_associations",
        "network.acse_timeout_s",
    ]
    assert all(problem.startswith(f"{path}: ") for problem in problems)


Mutation = Callable[[Document], None]


def set_key(*keys: str | int, value: object) -> Mutation:
    def mutate(document: Document) -> None:
        table: Any = document
        for key in keys[:-1]:
            table = table[key]
        table[keys[-1]] = value

    return mutate


def delete_key(*keys: str | int) -> Mutation:
    def mutate(document: Document) -> None:
        table: Any = document
        for key in keys[:-1]:
            table = table[key]
        del table[keys[-1]]

    return mutate


BAD_CONFIGS = [
    # pytest.param(mutation, dotted key, expectation, id=...)
    pytest.param(
        set_key("prot", value=1),
        "prot",
        "unknown key 'prot'; expected one of: network,",
        id="unknown top-level key",
    ),
    pytest.param(
        set_key("network", "prot", value=1),
        "network.prot",
        "expected one of: ae_title,",
        id="unknown nested key",
    ),
    pytest.param(
        set_key("classification", "rules", 1, "colour", value="red"),
        "classification.rules[1].colour",
        "unknown key 'colour'",
        id="unknown rule key",
    ),
    pytest.param(
        delete_key("classification", "rules", 1, "role"),
        "classification.rules[1].role",
        "missing key; expected one of",
        id="missing key (a rule's role has no default)",
    ),
    pytest.param(
        set_key("network", "port", value="11112"),
        "network.port",
        'expected an integer between 1 and 65535, got "11112"',
        id="port as string",
    ),
    pytest.param(
        set_key("network", "port", value=11112.0), "network.port", "expected an integer", id="port as float"
    ),
    pytest.param(
        set_key("storage", "fsync_before_ack", value="yes"),
        "storage.fsync_before_ack",
        "expected true or false",
        id="bool as string",
    ),
    pytest.param(
        set_key("output", "send_failed_qc", value="no"),
        "output.send_failed_qc",
        "expected true or false",
        id="send_failed_qc as string",
    ),
    pytest.param(
        set_key("network", "port", value=0),
        "network.port",
        "expected an integer between 1 and 65535, got 0",
        id="port 0",
    ),
    pytest.param(
        set_key("network", "port", value=70000),
        "network.port",
        "expected an integer between 1 and 65535, got 70000",
        id="port 70000",
    ),
    pytest.param(
        set_key("network", "dimse_timeout_s", value=-1.0),
        "network.dimse_timeout_s",
        "expected a number > 0, got -1.0",
        id="negative timeout",
    ),
    pytest.param(
        set_key("network", "ae_title", value="A_VERY_LONG_AE_TITLE"),
        "network.ae_title",
        "expected an AE title: 1 to 16",
        id="AE title too long",
    ),
    pytest.param(
        set_key("network", "max_pdu_size_bytes", value=100),
        "network.max_pdu_size_bytes",
        "expected 0 (unlimited) or an integer between 4096",
        id="PDU too small",
    ),
    pytest.param(
        set_key("sessions", "quiet_period_s", value=-5.0),
        "sessions.quiet_period_s",
        "expected a number >= 0, got -5.0",
        id="negative quiet period",
    ),
    pytest.param(
        set_key("sessions", "forced_timeout_minutes", value=1.0),
        "sessions.forced_timeout_minutes",
        "longer than quiet_period_s",
        id="timeout within quiet period",
    ),
    pytest.param(
        set_key("sessions", "timeout_action", value="wait"),
        "sessions.timeout_action",
        'expected one of "process_if_minimum", "mark_incomplete", got "wait"',
        id="unknown timeout action",
    ),
    pytest.param(
        set_key(
            "sessions",
            "minimum_roles",
            value=["sodium", "body_coil_pdt2", "head_coil_pdt2", "t1_3d", "lesion_seg"],
        ),
        "sessions.minimum_roles[4]",
        "expected roles that are also in required_roles",
        id="minimum not within required",
    ),
    pytest.param(
        set_key("sessions", "minimum_roles", value=["sodium", "body_coil_pdt2", "t1_3d"]),
        "sessions.minimum_roles",
        "expected a list containing every role processing reads (sodium, body_coil_pdt2, "
        'head_coil_pdt2, t1_3d), got ["sodium", "body_coil_pdt2", "t1_3d"] (no head_coil_pdt2)',
        id="minimum without a role processing reads",
    ),
    pytest.param(
        set_key("classification", "rules", 2, "role", value="flair"),
        "classification.rules[2].role",
        'expected one of "sodium", "body_coil_pdt2"',
        id="unknown role in a rule",
    ),
    pytest.param(
        set_key("classification", "rules", 3, "series_description_regex", value="PD("),
        "classification.rules[3].series_description_regex",
        'expected a valid regular expression, got "PD("',
        id="bad regex",
    ),
    pytest.param(
        lambda document: document["classification"]["rules"].insert(1, {"role": "t1_2d"}),
        "classification.rules[1]",
        "expected at least one match condition",
        id="catch-all rule not last",
    ),
    pytest.param(
        set_key("classification", "rules", value=[{"role": "sodium"}]),
        "sessions.required_roles[1]",
        "expected roles some [[classification.rules]] assigns",
        id="required role no rule assigns",
    ),
    pytest.param(
        set_key("classification", "rules", 2, "imaging_frequency_mhz_range", value=[34.5, 33.0]),
        "classification.rules[2].imaging_frequency_mhz_range",
        "minimum < maximum",
        id="reversed frequency range",
    ),
    pytest.param(
        set_key("processing", "phantom_concentrations_mM", value=[40.0, 40.0]),
        "processing.phantom_concentrations_mM",
        "expected two distinct concentrations > 0, got [40.0, 40.0]",
        id="identical phantom concentrations",
    ),
    pytest.param(
        set_key("processing", "phantom_concentrations_mM", value=[40.0]),
        "processing.phantom_concentrations_mM",
        "expected an array of 2 items, each a number > 0",
        id="one phantom concentration",
    ),
    pytest.param(
        set_key("processing", "phantom_concentrations_mM", value=[-40.0, 80.0]),
        "processing.phantom_concentrations_mM[0]",
        "expected a number > 0",
        id="negative phantom concentration",
    ),
    pytest.param(
        set_key("processing", "phantom_erosion_voxels", value=1),
        "processing.phantom_erosion_voxels",
        "expected an integer >= 2, got 1",
        id="erosion below 2",
    ),
    pytest.param(
        set_key("processing", "segmentation_command", value=[]),
        "processing.segmentation_command",
        "expected a command (a non-empty array of strings) or no key, got []",
        id="empty segmentation command",
    ),
    pytest.param(
        set_key("processing", "receive_field_correction", value=True),
        "processing.receive_field_correction",
        'expected one of "estimate", "map", "none", got true',
        id="receive field correction as the old boolean",
    ),
    pytest.param(
        set_key("processing", "registration", "smoothing_sigmas_mm", value=[1.0]),
        "processing.registration.smoothing_sigmas_mm",
        "expected one sigma per shrink factor (3), got 1",
        id="one sigma per level",
    ),
    pytest.param(
        set_key("destinations", 0, "accepts", value=["seg", "pdf"]),
        "destinations[0].accepts[1]",
        'expected one of "parametric_map"',
        id="unknown object kind",
    ),
    pytest.param(
        lambda document: document["destinations"].append(document["destinations"][0]),
        "destinations[1].name",
        "expected a name no other destination uses",
        id="duplicate destination",
    ),
    pytest.param(
        set_key("destinations", 0, "retry", "max_backoff_s", value=1.0),
        "destinations[0].retry.max_backoff_s",
        "expected a value >= initial_backoff_s",
        id="backoff below initial",
    ),
    pytest.param(
        set_key("destinations", 0, "commitment_timeout_s", value=0.0),
        "destinations[0].commitment_timeout_s",
        "expected a number > 0, got 0.0",
        id="commitment timeout 0",
    ),
    pytest.param(
        set_key("storage", "receipt_retention_days", value=-1.0),
        "storage.receipt_retention_days",
        "expected a number > 0, got -1.0",
        id="negative receipt retention",
    ),
    pytest.param(
        lambda document: (
            document["network"].update(allowed_calling_ae_titles=["ACHIEVA_3T"]),
            document["destinations"][0].update(storage_commitment=True),
        ),
        "network.allowed_calling_ae_titles",
        'expected a list that includes "ORTHANC" (destinations[0] uses storage commitment',
        id="commitment reporter not allowed in",
    ),
    pytest.param(
        set_key("logging", "level", value="info"),
        "logging.level",
        'expected one of "DEBUG", "INFO"',
        id="unknown log level",
    ),
]


@pytest.mark.parametrize(("mutation", "key", "expectation"), BAD_CONFIGS)
def test_bad_config_names_file_key_and_expectation(
    tmp_path: Path, mutation: Mutation, key: str, expectation: str
) -> None:
    document = copy.deepcopy(default_document())
    mutation(document)
    path = write_config(tmp_path, document)
    message = config_error(path)
    assert f"{path}: {key}: " in message
    assert expectation in message


def test_tls_enabled_without_cert(tmp_path: Path) -> None:
    for name in ("ca.pem", "node.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    document = default_document()
    document["destinations"][0]["tls"] = {"enabled": True, "ca_file": "ca.pem", "key_file": "node.key"}
    path = write_config(tmp_path, document)
    message = config_error(path)
    assert f"{path}: destinations[0].tls.cert_file: expected a file path when TLS is enabled" in message


def test_tls_files_must_exist_and_are_resolved(tmp_path: Path) -> None:
    document = default_document()
    document["destinations"][0]["tls"] = {
        "enabled": True,
        "ca_file": "ca.pem",
        "cert_file": "node.pem",
        "key_file": "node.key",
    }
    path = write_config(tmp_path, document)
    assert "destinations[0].tls.ca_file: expected an existing file" in config_error(path)
    for name in ("ca.pem", "node.pem", "node.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    tls = load_config(path).destinations[0].tls
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        tmp_path / "ca.pem",
        tmp_path / "node.pem",
        tmp_path / "node.key",
    )


def test_storage_commitment_with_the_reporter_allowed_in(tmp_path: Path) -> None:
    document = default_document()
    document["network"]["allowed_calling_ae_titles"] = ["ACHIEVA_3T", "ORTHANC"]
    document["destinations"][0].update(storage_commitment=True, commitment_timeout_s=30.0)
    (pacs,) = load_config(write_config(tmp_path, document)).destinations
    assert (pacs.storage_commitment, pacs.commitment_timeout_s) == (True, 30.0)


# --- layers: a site file holds only what differs ---------------------------------------------------

FIVE_LINE_SITE = """\
network.ae_title = "NA_NODE"
storage.root = "/srv/sodium"
[[destinations]]
name = "PACS"
ae_title = "HOSPITAL_PACS"
host = "10.1.2.3"
port = 104
"""


def test_a_five_line_site_file_takes_every_other_key_from_the_defaults(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(FIVE_LINE_SITE)
    config, default = load_config(site), load_config(default_config_path())
    assert config.network.ae_title == "NA_NODE" and config.network.port == default.network.port
    assert config.storage.root == Path("/srv/sodium")
    assert config.storage.import_dir == Path("/srv/sodium/import"), "moves with the root"
    assert config.storage.index_database == Path("/srv/sodium/index.sqlite3")
    (destination,) = config.destinations
    assert (destination.ae_title, destination.host, destination.port) == ("HOSPITAL_PACS", "10.1.2.3", 104)
    assert destination.retry == default.destinations[0].retry, "completed from the default destination"
    assert destination.accepts == default.destinations[0].accepts
    assert config.classification == default.classification
    assert config.processing == default.processing and config.sessions == default.sessions


def test_a_site_array_replaces_the_default_whole_and_an_explicit_path_is_kept(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        'storage.root = "state"\nstorage.index_database = "/db/index.sqlite3"\n'
        'sessions.required_roles = ["sodium", "body_coil_pdt2", "head_coil_pdt2", "t1_3d"]\n'
        "destinations = []\n"
    )
    config = load_config(site)
    assert config.storage.root == tmp_path / "state"
    assert config.storage.import_dir == tmp_path / "state" / "import"
    assert config.storage.index_database == Path("/db/index.sqlite3")
    assert Role.T1_2D not in config.sessions.required_roles
    assert config.destinations == ()


def test_an_empty_site_file_is_the_default(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("")
    default = load_config(default_config_path())
    config = load_config(site)
    assert config.processing == default.processing and config.network == default.network
    assert config.storage.root == tmp_path / "var" / "sodium-node", "relative to the site file's folder"


def test_the_site_file_comes_from_the_option_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_environment = tmp_path / "environment.toml"
    monkeypatch.setenv("SODIUM_NODE_CONFIG", str(from_environment))
    assert config_path("given.toml") == Path("given.toml")
    assert config_path(None) == from_environment
    monkeypatch.delenv("SODIUM_NODE_CONFIG")
    expected = Path("/etc/sodium-node/config.toml")
    assert config_path(None) == (expected if expected.is_file() else default_config_path())


def test_the_printed_effective_configuration_reads_back_equal(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(FIVE_LINE_SITE)
    config = load_config(site)
    printed = tmp_path / "effective.toml"
    printed.write_text(effective_toml(config))
    assert load_config(printed) == config
    assert "[[classification.rules]]" in printed.read_text()
