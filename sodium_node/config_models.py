"""The configuration's typed, frozen models: one class per `config.toml` section.

Every key of the file is required (the shipped `config.toml` is the complete, documented template)
except the optional ones typed ``X | None`` below. Validators raise `KeyedValueError` with messages
of the form "expected ..., got ..."; `sodium_node.config` turns them into one-line `ConfigError`s.
Relative paths are resolved against the folder given in the validation context (``config_dir``).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)


class Expect:
    """Annotation metadata: what a value must be, in words, for error messages."""

    def __init__(self, text: str) -> None:
        self.text = text


class KeyedValueError(ValueError):
    """A validation failure; ``subkey`` continues the failing location (e.g. ``("rules", 2, "role")``)."""

    def __init__(self, message: str, *, subkey: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.subkey = subkey


def render_value(value: object) -> str:
    """A value as it would read in TOML, shortened: ``"11112"``, ``true``, ``[1, 2]``, ``a table``."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(render_value(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, enum.Enum):
        text = render_value(value.value)
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Role(enum.Enum):
    """What a received series is for in the sodium pipeline."""

    SODIUM = "sodium"
    BODY_COIL_PDT2 = "body_coil_pdt2"
    HEAD_COIL_PDT2 = "head_coil_pdt2"
    T1_3D = "t1_3d"
    T1_2D = "t1_2d"
    LESION_SEG = "lesion_seg"
    IGNORED = "ignored"


PROCESSING_ROLES = (Role.SODIUM, Role.BODY_COIL_PDT2, Role.HEAD_COIL_PDT2, Role.T1_3D)
"""The roles the processing pipeline reads; ``lesion_seg`` is used when present, ``t1_2d`` never.
``sessions.minimum_roles`` must hold them all: a job without one fails."""


class TimeoutAction(enum.Enum):
    """What to do with a session still incomplete at its forced timeout."""

    PROCESS_IF_MINIMUM = "process_if_minimum"
    MARK_INCOMPLETE = "mark_incomplete"


class LateSeriesAction(enum.Enum):
    """What to do with a series that arrives after its session was processed."""

    REPROCESS = "reprocess"
    IGNORE = "ignore"


class MrAcquisitionType(enum.Enum):
    """MR Acquisition Type (0018,0023)."""

    TWO_D = "2D"
    THREE_D = "3D"


class PvcMethod(enum.Enum):
    """Partial-volume correction: geometric transfer matrix, the published CSF removal, or none."""

    GTM = "gtm"
    PAPER = "paper"
    NONE = "none"


class ReceiveFieldCorrection(enum.Enum):
    """The sodium coil's receive field: estimated from the session, a supplied map, or left in."""

    ESTIMATE = "estimate"
    MAP = "map"
    NONE = "none"


class PsfSource(enum.Enum):
    """Where the sodium image's PSF width comes from: measured on the vials' edges, or configured."""

    VIALS = "vials"
    CONFIGURED = "configured"


class SegmentationMethod(enum.Enum):
    """Tissue segmentation of the 3D T1: built in, or external maps (sent with the session or made
    by ``segmentation_command``)."""

    BUILTIN = "builtin"
    EXTERNAL = "external"


class ObjectKind(enum.Enum):
    """The kinds of DICOM object the node produces and destinations accept."""

    PARAMETRIC_MAP = "parametric_map"
    MR_FALLBACK = "mr_fallback"
    SEG = "seg"
    SR = "sr"
    SUMMARY = "summary"


class LogLevel(enum.Enum):
    """Lowest level logged; the values are the `logging` module's level names."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # printable ASCII without backslash
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_NUCLEUS = re.compile(r"[0-9]{1,3}[A-Za-z]{1,2}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

AeTitle = Annotated[str, Expect("an AE title: 1 to 16 printable ASCII characters, no backslash")]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]
Minutes = Annotated[float, Field(gt=0)]
Megahertz = Annotated[float, Field(gt=0)]
PositiveMillimolar = Annotated[float, Field(gt=0)]
HostName = Annotated[str, Field(pattern=r"^\S{1,253}$"), Expect("a host name or IP address (no spaces)")]
Regex = Annotated[re.Pattern[str] | None, Expect("a regular expression (string)")]


def check_ae_title(value: str) -> str:
    if not _AE_TITLE.fullmatch(value) or value != value.strip():
        raise KeyedValueError(
            "expected an AE title: 1 to 16 printable ASCII characters, no backslash, no leading or "
            f"trailing space, got {render_value(value)}"
        )
    return value


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """An absolute path; a relative one is taken relative to the config file's folder."""
    if value.is_absolute():
        return value
    config_dir = info.context.get("config_dir") if isinstance(info.context, dict) else None
    if not isinstance(config_dir, Path):
        raise KeyedValueError(f"expected an absolute path (no config folder known), got {value}")
    return (config_dir / value).resolve()


def check_unique(values: tuple[Any, ...], what: str) -> None:
    for index, value in enumerate(values):
        if value in values[:index]:
            raise KeyedValueError(
                f"expected {what} without repetition, got {render_value(value)} twice", subkey=(index,)
            )


class Section(BaseModel):
    """Base of every section: unknown keys, coercions and mutation are all refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NetworkConfig(Section):
    """The DICOM listener the scanner sends to (pynetdicom's AE settings)."""

    ae_title: AeTitle
    host: HostName
    port: Port
    max_associations: Annotated[int, Field(ge=1, le=1000)]
    max_pdu_size_bytes: Annotated[int, Expect("0 (unlimited) or an integer between 4096 and 4294967295")]
    allowed_calling_ae_titles: tuple[AeTitle, ...]
    acse_timeout_s: Seconds
    dimse_timeout_s: Seconds
    network_timeout_s: Seconds

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _calling_ae_titles(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for index, value in enumerate(values):
            try:
                check_ae_title(value)
            except KeyedValueError as error:
                raise KeyedValueError(str(error), subkey=(index,)) from None
        check_unique(values, "AE titles")
        return values

    @field_validator("max_pdu_size_bytes")
    @classmethod
    def _max_pdu(cls, value: int) -> int:
        if value != 0 and not 4096 <= value <= 0xFFFFFFFF:
            raise KeyedValueError(
                f"expected 0 (unlimited) or an integer between 4096 and 4294967295, got {value}"
            )
        return value


class StorageConfig(Section):
    """Where received instances, jobs and outputs live. Absolute paths after loading."""

    root: Path
    import_dir: Path
    index_database: Path
    fsync_before_ack: bool
    import_settle_s: Annotated[float, Field(gt=0)]
    receipt_retention_days: Annotated[float, Field(gt=0)]
    min_free_disk_mib: Annotated[float, Field(ge=0)]

    @field_validator("root", "import_dir", "index_database")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    # These live under one root so that moving a file between them is an atomic rename.
    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def dead_letter_dir(self) -> Path:
        return self.root / "dead_letter"

    @property
    def result_versions_dir(self) -> Path:
        """One ledger per sodium series numbering its result versions (``dicom_out.versions``)."""
        return self.root / "result_versions"


class SessionsConfig(Section):
    """How received series are grouped into a session and when a session is ready."""

    grouping_window_minutes: Minutes
    quiet_period_s: Annotated[float, Field(ge=0)]
    forced_timeout_minutes: Minutes
    timeout_action: TimeoutAction
    required_roles: Annotated[tuple[Role, ...], Field(min_length=1)]
    minimum_roles: Annotated[tuple[Role, ...], Field(min_length=1)]
    late_series_action: LateSeriesAction
    max_job_attempts: Annotated[int, Field(ge=1, le=100)]

    @field_validator("forced_timeout_minutes")
    @classmethod
    def _timeout_after_quiet_period(cls, value: float, info: ValidationInfo) -> float:
        quiet_period_s = info.data.get("quiet_period_s")
        if quiet_period_s is not None and value * 60.0 <= quiet_period_s:
            raise KeyedValueError(
                f"expected a number of minutes longer than quiet_period_s ({quiet_period_s:g} s), "
                f"got {value:g}"
            )
        return value

    @field_validator("required_roles", "minimum_roles")
    @classmethod
    def _roles(cls, values: tuple[Role, ...]) -> tuple[Role, ...]:
        check_unique(values, "roles")
        for index, role in enumerate(values):
            if role is Role.IGNORED:
                raise KeyedValueError('expected a role other than "ignored", got "ignored"', subkey=(index,))
        return values

    @field_validator("minimum_roles")
    @classmethod
    def _minimum_within_required(cls, values: tuple[Role, ...], info: ValidationInfo) -> tuple[Role, ...]:
        required = info.data.get("required_roles")
        needed = [role for role in PROCESSING_ROLES if role not in values]
        if needed:
            raise KeyedValueError(
                "expected a list containing every role processing reads "
                f"({', '.join(role.value for role in PROCESSING_ROLES)}), got {render_value(values)} "
                f"(no {', '.join(role.value for role in needed)})"
            )
        for index, role in enumerate(values):
            if required is not None and role not in required:
                raise KeyedValueError(
                    f"expected roles that are also in required_roles, got {render_value(role)}",
                    subkey=(index,),
                )
        return values


class ClassificationRule(Section):
    """One rule: a series gets ``role`` when every condition given here holds (omitted = not checked).

    Text comparisons ignore case; regular expressions are searched (not anchored) case-insensitively.
    """

    role: Role
    sop_class_uids: tuple[str, ...] | None = None
    imaged_nucleus: str | None = None
    imaging_frequency_mhz_range: tuple[Megahertz, Megahertz] | None = None
    receive_coil_regex: Regex = None
    transmit_coil_regex: Regex = None
    series_description_regex: Regex = None
    protocol_name_regex: Regex = None
    mr_acquisition_type: MrAcquisitionType | None = None
    min_echoes: Annotated[int, Field(ge=1)] | None = None

    @field_validator(
        "receive_coil_regex",
        "transmit_coil_regex",
        "series_description_regex",
        "protocol_name_regex",
        mode="plain",
    )
    @classmethod
    def _compile(cls, value: object) -> re.Pattern[str] | None:
        if value is None or isinstance(value, re.Pattern):
            return value
        if not isinstance(value, str):
            raise KeyedValueError(f"expected a regular expression (string), got {render_value(value)}")
        try:
            return re.compile(value, re.IGNORECASE)
        except re.error as error:
            raise KeyedValueError(
                f"expected a valid regular expression, got {render_value(value)} ({error})"
            ) from None

    @field_serializer(
        "receive_coil_regex", "transmit_coil_regex", "series_description_regex", "protocol_name_regex"
    )
    def _pattern_text(self, value: re.Pattern[str] | None) -> str | None:
        return None if value is None else value.pattern

    @field_validator("sop_class_uids")
    @classmethod
    def _uids(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if values is None:
            return None
        for index, uid in enumerate(values):
            if len(uid) > 64 or not _UID.fullmatch(uid):
                raise KeyedValueError(
                    f"expected a DICOM UID (digits and dots, at most 64 characters), got {render_value(uid)}",
                    subkey=(index,),
                )
        if not values:
            raise KeyedValueError("expected at least one SOP Class UID (omit the key to match any), got []")
        return values

    @field_validator("imaged_nucleus")
    @classmethod
    def _nucleus(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _NUCLEUS.fullmatch(value):
            raise KeyedValueError(f'expected a nucleus such as "1H" or "23NA", got {render_value(value)}')
        return value.upper()

    @field_validator("imaging_frequency_mhz_range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] >= value[1]:
            raise KeyedValueError(
                f"expected [minimum, maximum] with minimum < maximum, got {render_value(value)}"
            )
        return value

    @property
    def has_conditions(self) -> bool:
        return any(getattr(self, name) is not None for name in type(self).model_fields if name != "role")


class ClassificationConfig(Section):
    """Ordered rules; the first rule whose conditions all hold gives the series its role."""

    rules: Annotated[tuple[ClassificationRule, ...], Field(min_length=1)]

    @field_validator("rules")
    @classmethod
    def _catch_all_last(cls, rules: tuple[ClassificationRule, ...]) -> tuple[ClassificationRule, ...]:
        for index, rule in enumerate(rules[:-1]):
            if not rule.has_conditions:
                raise KeyedValueError(
                    "expected at least one match condition (a rule without any matches every series, "
                    "so only the last rule may have none), got only role",
                    subkey=(index,),
                )
        return rules


class RegistrationConfig(Section):
    """Mutual-information rigid registrations (SimpleITK), multi-resolution."""

    histogram_bins: Annotated[int, Field(ge=8, le=256)]
    sampling_fraction: Annotated[float, Field(gt=0, le=1)]
    random_seed: Annotated[int, Field(ge=0, le=0xFFFFFFFF)]
    shrink_factors: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)]
    smoothing_sigmas_mm: Annotated[tuple[Annotated[float, Field(ge=0)], ...], Field(min_length=1)]
    max_iterations: Annotated[int, Field(ge=1)]
    qc_min_mutual_information: Annotated[float, Field(ge=0)]

    @field_validator("smoothing_sigmas_mm")
    @classmethod
    def _one_sigma_per_level(cls, values: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        shrink_factors = info.data.get("shrink_factors")
        if shrink_factors is not None and len(values) != len(shrink_factors):
            raise KeyedValueError(
                f"expected one sigma per shrink factor ({len(shrink_factors)}), got {len(values)}"
            )
        return values


class ProcessingConfig(Section):
    """Calibration, registration, segmentation and partial-volume correction settings."""

    phantom_concentrations_mM: tuple[PositiveMillimolar, PositiveMillimolar]
    phantom_erosion_voxels: Annotated[int, Field(ge=2)]
    psf_fwhm_factor: Annotated[float, Field(gt=0)]
    psf_source: PsfSource
    csf_tsc_mM: PositiveMillimolar
    pvc_method: PvcMethod
    segmentation: SegmentationMethod
    segmentation_command: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(
        default=None, validate_default=True
    )
    lesion_dilation_mm: Annotated[float, Field(ge=0)]
    receive_field_correction: ReceiveFieldCorrection
    max_step_minutes: Minutes
    registration: RegistrationConfig

    @field_validator("phantom_concentrations_mM")
    @classmethod
    def _distinct(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] == value[1]:
            raise KeyedValueError(f"expected two distinct concentrations > 0, got {render_value(value)}")
        return value

    @field_validator("segmentation_command")
    @classmethod
    def _command_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """Optional even when segmentation is "external": maps may come with each session (the
        pipeline stops a session that has neither maps nor a command to make them)."""
        if value is not None and not value:
            raise KeyedValueError("expected a command (a non-empty array of strings) or no key, got []")
        return value


class ProducedObjects(Section):
    """Which kinds of DICOM object each processed session produces."""

    parametric_map: bool
    mr_fallback: bool
    seg: bool
    sr: bool
    summary: bool

    def kinds(self) -> frozenset[ObjectKind]:
        return frozenset(kind for kind in ObjectKind if getattr(self, kind.value))


LongString = Annotated[
    str,
    Field(max_length=64, pattern=r"^[^\\\x00-\x1f]*$"),
    Expect("a string of at most 64 characters, without backslash or control characters"),
]


class OutputConfig(Section):
    """Identity and numbering of the DICOM objects we create."""

    series_number_offset: Annotated[int, Field(ge=1, le=1_000_000)]
    institution_name: LongString
    institution_department_name: LongString
    send_failed_qc: bool
    """Whether results whose QC failed (a ``fail`` verdict) are queued for the destinations."""
    produce: ProducedObjects


class TlsConfig(Section):
    enabled: bool
    ca_file: Path | None = Field(default=None, validate_default=True)
    cert_file: Path | None = Field(default=None, validate_default=True)
    key_file: Path | None = Field(default=None, validate_default=True)

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_when_enabled(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            if info.data.get("enabled"):
                raise KeyedValueError("expected a file path when TLS is enabled, got nothing")
            return None
        path = resolve_path(value, info)
        if info.data.get("enabled") and not path.is_file():
            raise KeyedValueError(f"expected an existing file, got {path} (not found)")
        return path


class RetryConfig(Section):
    """Failed sends are retried with exponential back-off until they are this old."""

    initial_backoff_s: Seconds
    max_backoff_s: Seconds
    max_age_hours: Annotated[float, Field(gt=0)]

    @field_validator("max_backoff_s")
    @classmethod
    def _not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("initial_backoff_s")
        if initial is not None and value < initial:
            raise KeyedValueError(f"expected a value >= initial_backoff_s ({initial:g}), got {value:g}")
        return value


class DestinationConfig(Section):
    """A DICOM peer (PACS) that receives our results by C-STORE."""

    name: Annotated[str, Expect("a name of letters, digits, '_', '.' or '-' (at most 64)")]
    ae_title: AeTitle
    host: HostName
    port: Port
    accepts: Annotated[tuple[ObjectKind, ...], Field(min_length=1)]
    storage_commitment: bool
    commitment_timeout_s: Seconds
    tls: TlsConfig
    retry: RetryConfig

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise KeyedValueError(
                "expected a name of letters, digits, '_', '.' or '-' (at most 64, used as a folder name), "
                f"got {render_value(value)}"
            )
        return value

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("accepts")
    @classmethod
    def _accepts(cls, values: tuple[ObjectKind, ...]) -> tuple[ObjectKind, ...]:
        check_unique(values, "object kinds")
        return values


class RetentionConfig(Section):
    """How long the node keeps patient data it has finished with (node/retention.py); 0 = for ever."""

    delivered_session_days: Annotated[float, Field(ge=0)]
    quarantine_days: Annotated[float, Field(ge=0)]


class LoggingConfig(Section):
    level: LogLevel
    file: Path | None = None
    keep_days: Annotated[int, Field(ge=0, le=3650)]

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)


class NodeConfig(Section):
    """The whole configuration of one node, as read from one `config.toml`."""

    network: NetworkConfig
    storage: StorageConfig
    sessions: SessionsConfig
    classification: ClassificationConfig
    processing: ProcessingConfig
    output: OutputConfig
    destinations: tuple[DestinationConfig, ...]
    retention: RetentionConfig
    logging: LoggingConfig

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, values: tuple[DestinationConfig, ...]) -> tuple[DestinationConfig, ...]:
        names = tuple(destination.name.lower() for destination in values)
        for index, name in enumerate(names):
            if name in names[:index]:
                raise KeyedValueError(
                    f"expected a name no other destination uses (case-insensitive), got {render_value(name)}",
                    subkey=(index, "name"),
                )
        return values

    @model_validator(mode="after")
    def _commitment_reports_are_let_in(self) -> NodeConfig:
        """A PACS with storage commitment reports on an association of its own, from its AE title."""
        allowed = self.network.allowed_calling_ae_titles
        for index, destination in enumerate(self.destinations):
            if destination.storage_commitment and allowed and destination.ae_title not in allowed:
                raise KeyedValueError(
                    f"expected a list that includes {render_value(destination.ae_title)} "
                    f"(destinations[{index}] uses storage commitment: its report comes from that AE "
                    f"title), or [] for any, got {render_value(allowed)}",
                    subkey=("network", "allowed_calling_ae_titles"),
                )
        return self

    @model_validator(mode="after")
    def _required_roles_are_classified(self) -> NodeConfig:
        classified = {rule.role for rule in self.classification.rules}
        for index, role in enumerate(self.sessions.required_roles):
            if role not in classified:
                raise KeyedValueError(
                    f"expected roles some [[classification.rules]] assigns, got {render_value(role)}",
                    subkey=("sessions", "required_roles", index),
                )
        return self
