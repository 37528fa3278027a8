"""Read the site's `config.toml` once, over the built-in defaults, into a frozen `NodeConfig`.

Layers: the shipped `config.toml` (`default_config_path`) holds every key with its default; a site
file holds only what differs (`layered`). Which site file: ``--config``, else `CONFIG_ENVIRONMENT`,
else `SITE_CONFIG_PATH` if it exists, else the defaults alone (`config_path`).

Every problem becomes a `ConfigError` naming the file, the dotted key and what was expected, e.g.
``/etc/sodium-node/config.toml: network.port: expected an integer between 1 and 65535, got 0``.
The models live in `sodium_node.config_models`; this module reads, layers, validates and explains.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
import tomli_w
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from sodium_node.config_models import (
    ClassificationConfig,
    ClassificationRule,
    DestinationConfig,
    Expect,
    KeyedValueError,
    LateSeriesAction,
    LoggingConfig,
    LogLevel,
    MrAcquisitionType,
    NetworkConfig,
    NodeConfig,
    ObjectKind,
    OutputConfig,
    ProcessingConfig,
    ProducedObjects,
    PsfSource,
    PvcMethod,
    ReceiveFieldCorrection,
    RegistrationConfig,
    RetryConfig,
    Role,
    SegmentationMethod,
    SessionsConfig,
    StorageConfig,
    TimeoutAction,
    TlsConfig,
    render_value,
)
from sodium_node.errors import ConfigError

__all__ = [
    "ClassificationConfig",
    "ClassificationRule",
    "DestinationConfig",
    "LateSeriesAction",
    "LogLevel",
    "LoggingConfig",
    "MrAcquisitionType",
    "NetworkConfig",
    "NodeConfig",
    "ObjectKind",
    "OutputConfig",
    "ProcessingConfig",
    "ProducedObjects",
    "PsfSource",
    "PvcMethod",
    "ReceiveFieldCorrection",
    "RegistrationConfig",
    "RetryConfig",
    "Role",
    "SegmentationMethod",
    "SessionsConfig",
    "StorageConfig",
    "TimeoutAction",
    "TlsConfig",
    "config_path",
    "default_config_path",
    "effective_toml",
    "layered",
    "load_config",
    "parse_config",
]

CONFIG_ENVIRONMENT = "SODIUM_NODE_CONFIG"
SITE_CONFIG_PATH = Path("/etc/sodium-node/config.toml")
UNDER_ROOT = {"import_dir": "import", "index_database": "index.sqlite3"}
"""``[storage]`` keys whose default follows the site's ``root``: ``<root>/import`` and so on."""

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPOSITORY_DIR = _PACKAGE_DIR.parent

Location = tuple[str | int, ...]


def default_config_path() -> Path:
    """The shipped default: the repository's top-level `config.toml`, else its packaged copy."""
    top_level = _REPOSITORY_DIR / "config.toml"
    if top_level.is_file() and (_REPOSITORY_DIR / "pyproject.toml").is_file():
        return top_level
    return _PACKAGE_DIR / "default_config.toml"


def config_path(given: str | Path | None = None) -> Path:
    """The site file: ``given`` (``--config``), else ``$SODIUM_NODE_CONFIG``, else
    ``/etc/sodium-node/config.toml`` if it exists, else the built-in defaults file."""
    if given:
        return Path(given)
    if os.environ.get(CONFIG_ENVIRONMENT):
        return Path(os.environ[CONFIG_ENVIRONMENT])
    if SITE_CONFIG_PATH.is_file():
        return SITE_CONFIG_PATH
    return default_config_path()


def load_config(path: Path) -> NodeConfig:
    """Read ``path`` over the built-in defaults and validate; relative paths are taken relative to its
    folder (those of the defaults too: a site file that sets no ``storage.root`` keeps its state in
    ``var/sodium-node`` beside it)."""
    return parse_config(layered(_read_toml(path), _defaults_document()), source=path)


@functools.cache
def _defaults_document() -> dict[str, Any]:
    """The shipped `config.toml` as a TOML document, read once (`layered` copies, never changes it)."""
    return _read_toml(default_config_path())


def layered(site: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The site's values over the defaults.

    Tables are merged key by key; any other value, arrays included, replaces the default whole
    (a site's ``[[classification.rules]]`` are its rules). Each of the site's ``[[destinations]]`` is
    merged over the default destination, so that it needs only its name, AE title, host and port.
    A site that moves ``storage.root`` takes ``import_dir`` and ``index_database`` with it unless it
    sets them (`UNDER_ROOT`). Values of the wrong type are kept as given, for validation to explain.
    """
    merged = _merge_tables(site, defaults)
    destinations, template = site.get("destinations"), defaults.get("destinations")
    if isinstance(destinations, list) and isinstance(template, list) and template:
        merged["destinations"] = [
            _merge_tables(item, template[0]) if isinstance(item, Mapping) else item for item in destinations
        ]
    storage = site.get("storage")
    if isinstance(storage, Mapping) and isinstance(storage.get("root"), str):
        for key, name in UNDER_ROOT.items():
            if key not in storage:
                merged["storage"][key] = str(Path(storage["root"]) / name)
    return merged


def _merge_tables(site: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(defaults))
    for key, value in site.items():
        default = defaults.get(key)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            merged[key] = _merge_tables(value, default)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def effective_toml(config: NodeConfig) -> str:
    """The whole configuration in effect, as TOML (what `sodium-node check-config --print` shows)."""
    return tomli_w.dumps(_without_none(config.model_dump(mode="json")))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the file: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: expected UTF-8 text, got byte 0x{raw[error.start]:02x} at offset {error.start}"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return data


def parse_config(data: Mapping[str, Any], *, source: Path) -> NodeConfig:
    """Validate an already parsed TOML document; ``source`` names it in errors and anchors relative paths."""
    document = json.dumps(data, default=_json_scalar)
    context = {"config_dir": source.resolve().parent}
    try:
        # JSON mode: strict, yet TOML strings may become enums and paths, arrays tuples.
        return NodeConfig.model_validate_json(document, strict=True, context=context)
    except ValidationError as error:
        # Unknown keys first: a misspelt key also shows up as its correct twin's wrong default.
        details = sorted(error.errors(), key=lambda detail: detail["type"] != "extra_forbidden")
        problems = tuple(f"{source}: {_explain(detail)}" for detail in details)
        more = (
            f" (and {len(problems) - 1} more: sodium-node check-config lists them)"
            if len(problems) > 1
            else ""
        )
        raise ConfigError(problems[0] + more, problems=problems) from None


def _json_scalar(value: object) -> str:
    """TOML dates and times are never valid here; pass them on as text so the error can show them."""
    return str(value)


def _explain(detail: ErrorDetails) -> str:
    """One problem as ``key: expected ..., got ...``."""
    location: Location = tuple(detail["loc"])
    error_type = detail["type"]
    if error_type == "value_error":
        cause = detail.get("ctx", {}).get("error")
        subkey = cause.subkey if isinstance(cause, KeyedValueError) else ()
        return f"{_dotted(location + subkey)}: {cause}"
    if error_type == "extra_forbidden":
        parent = _annotation_at(NodeConfig, location[:-1])
        table = _model(parent[0]) if parent else None
        keys = ", ".join(table.model_fields) if table else "no keys"
        return f"{_dotted(location)}: unknown key {location[-1]!r}; expected one of: {keys}"
    if error_type == "missing" and location and isinstance(location[-1], int):
        location = location[:-1]  # a fixed-length array that is too short: explain the array
    expected = _describe(_annotation_at(NodeConfig, location))
    if error_type == "missing" and isinstance(detail["input"], Mapping):
        return f"{_dotted(location)}: missing key; expected {expected}"
    return f"{_dotted(location)}: expected {expected}, got {render_value(detail['input'])}"


def _dotted(location: Location) -> str:
    """``("classification", "rules", 2, "role")`` as ``classification.rules[2].role``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _model(annotation: object) -> type[BaseModel] | None:
    base = _strip(annotation)[0]
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


def _strip(annotation: object) -> tuple[object, list[object]]:
    """The bare type under ``Annotated``/``X | None`` and the metadata found on the way."""
    metadata: list[object] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def _annotation_at(root: type[BaseModel], location: Location) -> tuple[object, list[object]] | None:
    """The annotation of the value at ``location`` and its field's constraints; ``None`` if unknown."""
    annotation: object = root
    metadata: list[object] = []
    for part in location:
        base = _strip(annotation)[0]
        if isinstance(part, str):
            model = _model(base)
            field = model.model_fields.get(part) if model else None
            if field is None:
                return None
            annotation, metadata = field.annotation, list(field.metadata)
        elif get_origin(base) is tuple:
            args = get_args(base)
            variable = len(args) == 2 and args[1] is Ellipsis
            annotation, metadata = (args[0] if variable else args[min(part, len(args) - 1)]), []
        else:
            return None
    return annotation, metadata


def _describe(found: tuple[object, list[object]] | None) -> str:
    """What a value must be, in words: ``an integer between 1 and 65535``."""
    if found is None:
        return "a valid value"
    base, inner = _strip(found[0])
    metadata = found[1] + inner
    for item in metadata:
        if isinstance(item, Expect):
            return item.text
    if base is bool:
        return "true or false"
    if base is int:
        return "an integer" + _bounds(metadata)
    if base is float:
        return "a number" + _bounds(metadata)
    if base is str:
        return "a string" + _lengths(metadata, "character")
    if base is Path:
        return "a path (string)"
    if get_origin(base) is re.Pattern:
        return "a regular expression (string)"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "one of " + ", ".join(render_value(member.value) for member in base)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "a table"
    if get_origin(base) is tuple:
        args = get_args(base)
        if len(args) == 2 and args[1] is Ellipsis:
            if _model(args[0]) is not None:
                return "an array of tables" + _lengths(metadata, "table")
            return f"an array{_lengths(metadata, 'item')}, each {_describe((args[0], []))}"
        return f"an array of {len(args)} items, each {_describe((args[0], []))}"
    return "a valid value"


def _bounds(metadata: list[object]) -> str:
    low = next((m for m in metadata if isinstance(m, annotated_types.Ge | annotated_types.Gt)), None)
    high = next((m for m in metadata if isinstance(m, annotated_types.Le | annotated_types.Lt)), None)
    if isinstance(low, annotated_types.Ge) and isinstance(high, annotated_types.Le):
        return f" between {low.ge} and {high.le}"
    parts = []
    if isinstance(low, annotated_types.Ge):
        parts.append(f">= {low.ge}")
    elif isinstance(low, annotated_types.Gt):
        parts.append(f"> {low.gt}")
    if isinstance(high, annotated_types.Le):
        parts.append(f"<= {high.le}")
    elif isinstance(high, annotated_types.Lt):
        parts.append(f"< {high.lt}")
    return (" " + " and ".join(parts)) if parts else ""


def _lengths(metadata: list[object], unit: str) -> str:
    low = next((m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)), 0)
    high = next((m.max_length for m in metadata if isinstance(m, annotated_types.MaxLen)), None)
    if high is not None:
        return f" of {low} to {high} {unit}s"
    if low == 1:
        return " (not empty)"
    return f" of at least {low} {unit}s" if low else ""
