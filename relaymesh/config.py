"""Runtime settings of a RelayMesh root, declared in one frozen dataclass.

Every tunable of a node lives in `Settings`. Each field declares its JSON key
(the camelCase form of the attribute), its default, its allowed range and a
description of what it controls and what raising it costs. The loader, the
validator, `describe_settings()` and the generated `docs/settings.md` all read
those declarations, so the documented defaults and ranges cannot drift from
the code. A test compares `docs/settings.md` with `render_settings_markdown()`.

The file `<root>/relaymesh-settings.json` is optional and every key in it is
optional. Loading is strict because a settings mistake that is silently
repaired surfaces much later as a mystery:

- an unknown key is an error that suggests the nearest known key;
- a value of the wrong JSON type is an error. Numeric strings are rejected,
  booleans are not integers, and a float with an integral value (2000.0)
  counts as that integer because many JSON writers emit one;
- a value outside its range is an error and is never clamped;
- a repeated key is an error, whereas `json.loads` keeps the last one;
- malformed JSON is an error that gives the line and column.

Every error is a one-line `ValidationError`, and a `Settings` instance is
valid whichever way it was made: the constructor itself runs the checks, so
`dataclasses.replace` and `with_overrides` cannot produce a bad one either.

Named profiles override a few fields for one kind of use, in the way
hashicorp/memberlist derives `DefaultWANConfig` and `DefaultLocalConfig` from
its LAN defaults. `sim` shortens every
timeout so that simulated clusters reach failure detection and retries in
seconds of virtual time. A file selects one with `"profile": "sim"`, and its
own keys then apply on top.

Integers in open-ended ranges stop at 2**53 - 1, the largest integer that an
IEEE 754 double stores exactly. Many JSON parsers (JavaScript's among them)
read numbers into doubles, and the limit also keeps sums such as
`now + backoff` within SQLite's 64-bit integers.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relaymesh.errors import ValidationError

__all__ = [
    "DEFAULT_SETTINGS",
    "JSON_INTEGER_MAX",
    "PROFILES",
    "PROFILE_KEY",
    "SETTINGS_KEYS",
    "SettingInfo",
    "Settings",
    "changed_fields",
    "describe_settings",
    "json_kind",
    "load_settings",
    "read_json_config",
    "render_settings_markdown",
    "unknown_key_error",
    "validate_setting_value",
]

JSON_INTEGER_MAX = 2**53 - 1

# Key of the settings file that selects a profile. It is the only key that is
# not a setting.
PROFILE_KEY = "profile"

OVERRIDES_SOURCE = "Settings.with_overrides()"
CONSTRUCTOR_SOURCE = "Settings()"


def _setting(
    default: int | bool,
    description: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    at_least: str | None = None,
    below_half_of: str | None = None,
) -> Any:
    """Declare one settings field with its range and description.

    `at_least` and `below_half_of` name another field (by attribute) that
    bounds this one. The description is written over several source lines,
    and its whitespace is collapsed to single spaces here.
    """
    metadata = {
        "minimum": minimum,
        "maximum": maximum,
        "at_least": at_least,
        "below_half_of": below_half_of,
        "description": " ".join(description.split()),
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Validated runtime settings of one root.

    Construction raises ValidationError on a bad value, so every instance is valid.
    """

    lease_timeout_ms: int = _setting(
        15_000,
        """Time a running step's lease stays valid without renewal, after which
        other nodes may reclaim the step. Raising it rides out longer worker
        stalls but delays the recovery of work held by a crashed node.""",
        minimum=100,
        maximum=86_400_000,
    )
    lease_heartbeat_ms: int = _setting(
        2_000,
        """Interval at which a worker renews the leases of its running steps.
        Raising it saves store writes but leaves less slack before a lease
        expires, so it must stay below half the lease timeout.""",
        minimum=10,
        below_half_of="lease_timeout_ms",
    )
    max_attempts: int = _setting(
        3,
        """Attempts a step gets, the first run included, before it is
        dead-lettered. Raising it gives flaky agents more chances but keeps
        hopeless steps cycling longer.""",
        minimum=1,
        maximum=1_000,
    )
    base_backoff_ms: int = _setting(
        1_000,
        """Retry delay after the first failed attempt, doubled after each later
        failure. Raising it spares a struggling dependency but slows recovery
        from brief faults.""",
        minimum=1,
    )
    max_backoff_ms: int = _setting(
        60_000,
        """Cap on the doubled retry delay, before jitter is added. Raising it
        lets retries back off further but leaves steps waiting longer after an
        outage ends.""",
        minimum=1,
        at_least="base_backoff_ms",
    )
    retry_jitter_max_ms: int = _setting(
        250,
        """Maximum random delay added to each retry so that steps which failed
        together do not retry in lockstep. Raising it spreads retries wider but
        delays each one by up to this much.""",
        minimum=0,
        maximum=60_000,
    )
    retry_dispatch_limit: int = _setting(
        32,
        """Batch size of one maintenance pass, which requeues at most this many
        due retries and reclaims at most this many expired leases. Raising it
        drains backlogs faster but makes each store transaction longer.""",
        minimum=1,
        maximum=10_000,
    )
    idempotency_ttl_days: int = _setting(
        7,
        """Days an idempotency key is kept, so that a repeated submit returns
        the original task. Raising it catches later duplicates but keeps more
        rows in the store.""",
        minimum=1,
        maximum=3_650,
    )
    payload_max_bytes: int = _setting(
        10_485_760,
        """Largest payload in bytes that a submit accepts. Raising it admits
        bigger jobs but lets a single job take more disk and memory.""",
        minimum=1,
        maximum=1_073_741_824,
    )
    max_consecutive_high: int = _setting(
        100,
        """Maximum high-priority messages the scheduler claims in a row while
        lower tiers wait (the anti-starvation guard). Raising it favours urgent
        work but lets normal and low work wait longer.""",
        minimum=1,
        maximum=1_000_000,
    )
    graceful_timeout_ms: int = _setting(
        15_000,
        """Time a stopping node gives its running steps to finish before it
        cancels them. Raising it loses less work on shutdown but makes a stop
        take longer.""",
        minimum=0,
        maximum=3_600_000,
    )
    claim_batch_size: int = _setting(
        16,
        """Maximum messages the scheduler claims in one pass over the inbox.
        Raising it cuts the number of passes under load but claims work
        further ahead of the workers that will run it.""",
        minimum=1,
        maximum=1_000,
    )
    poll_interval_ms: int = _setting(
        200,
        """Time an idle scheduler waits before it looks at the inbox again.
        Raising it saves CPU and file-system calls on an idle node but adds up
        to this much latency to new work.""",
        minimum=10,
        maximum=60_000,
    )
    maintenance_interval_ms: int = _setting(
        1_000,
        """Interval between maintenance passes (retry dispatch, lease reclaim,
        sweeping, cleanup). Raising it lowers background load but delays
        retries and recovery by up to this much.""",
        minimum=50,
        maximum=3_600_000,
    )
    sweep_grace_ms: int = _setting(
        30_000,
        """Age after which the sweeper recovers a queued message that has no
        bus file, or a file left in processing/. Raising it avoids racing a
        slow enqueue or claim but recovers lost messages later.""",
        minimum=1_000,
    )
    min_free_disk_bytes: int = _setting(
        0,
        """Free disk space in bytes below which health reports disk pressure,
        where 0 turns the check off. Raising it warns earlier, but above the
        disk's size it reports pressure all the time.""",
        minimum=0,
    )
    audit_max_bytes: int = _setting(
        16 * 1024 * 1024,
        """Size at which the audit log is rotated to audit.log.1. Raising it
        means fewer, larger files, each slower to scan from the end.""",
        minimum=4096,
    )
    audit_keep_files: int = _setting(
        8,
        """Rotated audit files kept besides audit.log; older ones are deleted.
        Raising it keeps more history on disk.""",
        minimum=0,
        maximum=10_000,
    )
    slo_queue_lag_target_ms: int = _setting(
        5_000,
        """Queue lag (age of the oldest step that is ready but not running)
        above which health reports the root as lagging. Raising it tolerates
        bursts but hides a backlog that is not draining.""",
        minimum=1,
    )
    suspect_after_ms: int = _setting(
        30_000,
        """Time without news from a member before it is marked suspect.
        Raising it means fewer false suspicions on a slow network but later
        failure detection.""",
        minimum=100,
        at_least="lease_timeout_ms",
    )
    dead_after_ms: int = _setting(
        60_000,
        """Time without news from a member before it is marked dead and its
        steps are reclaimed. Raising it gives a suspect longer to recover but
        delays the takeover of a dead node's work.""",
        minimum=100,
        at_least="suspect_after_ms",
    )
    suspect_recover_min_ms: int = _setting(
        5_000,
        """Minimum time a member stays suspect before news from it can mark it
        alive again (a flap guard). Raising it damps flapping but keeps a
        recovered member out of the mesh longer.""",
        minimum=0,
    )
    dead_recover_min_ms: int = _setting(
        30_000,
        """Minimum time a member stays dead before news from it can mark it
        alive again (a flap guard). Raising it damps flapping but keeps a
        restarted node out of the mesh longer.""",
        minimum=0,
    )
    pause_worker_when_local_not_alive: bool = _setting(
        True,
        """Whether workers stop claiming steps while their own node is suspect
        or dead, so that they do not race the node that reclaims their work.
        Turning it off keeps a partitioned node working but risks duplicate runs.""",
    )

    def __post_init__(self) -> None:
        current = _attribute_values(self)
        validated = _validate_values(current, CONSTRUCTOR_SOURCE)
        for attribute, value in validated.items():
            # Integral floats such as 2000.0 become ints, so that the stored
            # value has the declared type. The instance is frozen, hence the
            # object-level assignment.
            if type(value) is not type(current[attribute]):
                object.__setattr__(self, attribute, value)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object], source: str) -> Settings:
        """Build settings from camelCase keys over the defaults.

        A `profile` key applies that profile first. `source` names where the
        mapping came from (a file path, say) in error messages.
        """
        if not isinstance(mapping, Mapping):
            raise ValidationError(
                f"settings in {source} must be a JSON object, "
                f"not {_describe_value(mapping)}"
            )
        known_keys = (*SETTINGS_KEYS, PROFILE_KEY)
        for key in mapping:
            if key not in known_keys:
                raise unknown_key_error("settings key", key, source, known_keys)

        values = _attribute_values(DEFAULT_SETTINGS)
        if PROFILE_KEY in mapping:
            profile = _profile_named(mapping[PROFILE_KEY], source)
            for key, value in profile.items():
                values[_ATTRIBUTE_BY_KEY[key]] = value
        for key, value in mapping.items():
            if key != PROFILE_KEY:
                values[_ATTRIBUTE_BY_KEY[key]] = value

        return cls(**_validate_values(values, source))

    def with_overrides(self, **overrides: object) -> Settings:
        """Return a validated copy with the given attributes (snake_case) replaced."""
        attributes = tuple(_ATTRIBUTE_BY_KEY.values())
        for name in overrides:
            if name not in attributes:
                raise unknown_key_error("setting", name, OVERRIDES_SOURCE, attributes)
        values = {**_attribute_values(self), **overrides}
        return Settings(**_validate_values(values, OVERRIDES_SOURCE))

    def to_json(self) -> dict[str, object]:
        """Return every setting under its camelCase key, in declaration order."""
        return {
            key: getattr(self, attribute)
            for key, attribute in _ATTRIBUTE_BY_KEY.items()
        }


@dataclass(frozen=True)
class SettingInfo:
    """Documentation record of one setting, read from the field declaration.

    `minimum` and `maximum` are None where the range is open (a boolean has
    neither). `constraint` is a rule relating this setting to another one,
    such as `>= baseBackoffMs`, or an empty string.
    """

    key: str
    attribute: str
    default: int | bool
    minimum: int | None
    maximum: int | None
    description: str
    constraint: str


def _camel_case(attribute: str) -> str:
    first, *rest = attribute.split("_")
    return first + "".join(word.capitalize() for word in rest)


_FIELDS = dataclasses.fields(Settings)
_ATTRIBUTE_BY_KEY: dict[str, str] = {
    _camel_case(field.name): field.name for field in _FIELDS
}
_FIELD_BY_KEY = {_camel_case(field.name): field for field in _FIELDS}

SETTINGS_KEYS: tuple[str, ...] = tuple(_ATTRIBUTE_BY_KEY)


def _attribute_values(settings: Settings) -> dict[str, Any]:
    return {field.name: getattr(settings, field.name) for field in _FIELDS}


def _constraint_text(field: dataclasses.Field[Any]) -> str:
    if field.metadata["at_least"] is not None:
        return f">= {_camel_case(field.metadata['at_least'])}"
    if field.metadata["below_half_of"] is not None:
        return f"< {_camel_case(field.metadata['below_half_of'])} / 2"
    return ""


def describe_settings() -> list[SettingInfo]:
    """Return the documentation record of every setting, in declaration order."""
    return [
        SettingInfo(
            key=key,
            attribute=field.name,
            default=field.default,
            minimum=field.metadata["minimum"],
            maximum=field.metadata["maximum"],
            description=field.metadata["description"],
            constraint=_constraint_text(field),
        )
        for key, field in _FIELD_BY_KEY.items()
    ]


# --- validation --------------------------------------------------------------


def json_kind(value: object) -> str:
    """Name the JSON type of a parsed value for messages, such as "a string"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _describe_value(value: object) -> str:
    """Show a value as it would appear in JSON, with its kind: `"15" (a string)`."""
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({json_kind(value)})"


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if maximum is None:
        return f">= {minimum}"
    return f"{minimum}..{maximum}"


def unknown_key_error(
    what: str, key: object, where: str, known: Iterable[str]
) -> ValidationError:
    """Build the error for an unknown key, suggesting the nearest known key.

    Without a close match the message lists every known key instead.
    """
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    else:
        hint = "known keys: " + ", ".join(known)
    return ValidationError(f"unknown {what} {key!r} in {where}; {hint}")


def validate_setting_value(key: str, value: object, where: str) -> int | bool:
    """Check one value against the type and range of setting `key`.

    Returns the value as stored (an integral float becomes an int). `where`
    locates the value in the message, for example a file path. Rules between
    settings are not checked here.
    """
    field = _FIELD_BY_KEY[key]
    if isinstance(field.default, bool):
        if not isinstance(value, bool):
            raise ValidationError(
                f"{key!r} in {where} must be true or false, "
                f"not {_describe_value(value)}"
            )
        return value

    integer = _as_integer(value)
    if integer is None:
        raise ValidationError(
            f"{key!r} in {where} must be an integer, not {_describe_value(value)}"
        )
    minimum = field.metadata["minimum"]
    maximum = field.metadata["maximum"]
    if maximum is not None and not minimum <= integer <= maximum:
        raise ValidationError(
            f"{key!r} in {where} is {integer}, outside the allowed range "
            f"{_range_text(minimum, maximum)}"
        )
    if maximum is None and not minimum <= integer <= JSON_INTEGER_MAX:
        raise ValidationError(
            f"{key!r} in {where} is {integer}, outside the allowed range "
            f"{minimum}..{JSON_INTEGER_MAX} (2**53 - 1, the largest integer "
            f"that a JSON parser using doubles stores exactly)"
        )
    return integer


def _as_integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _validate_values(values: Mapping[str, object], where: str) -> dict[str, Any]:
    """Validate every attribute value, then the rules between settings."""
    validated = {
        attribute: validate_setting_value(key, values[attribute], where)
        for key, attribute in _ATTRIBUTE_BY_KEY.items()
    }

    for key, field in _FIELD_BY_KEY.items():
        value = validated[field.name]
        lower = field.metadata["at_least"]
        if lower is not None and value < validated[lower]:
            raise ValidationError(
                f"{key!r} in {where} is {value} but must be at least "
                f"{_camel_case(lower)!r} ({validated[lower]}); raise {key} "
                f"or lower {_camel_case(lower)}"
            )
        upper = field.metadata["below_half_of"]
        if upper is not None and 2 * value >= validated[upper]:
            raise ValidationError(
                f"{key!r} in {where} is {value} but must be less than half of "
                f"{_camel_case(upper)!r} ({validated[upper]}); lower {key} "
                f"or raise {_camel_case(upper)}"
            )
    return validated


# --- profiles ----------------------------------------------------------------

PROFILES: dict[str, Mapping[str, object]] = {
    "local": MappingProxyType({}),
    "sim": MappingProxyType(
        {
            "leaseTimeoutMs": 1_000,
            "leaseHeartbeatMs": 200,
            "baseBackoffMs": 50,
            "maxBackoffMs": 1_000,
            "retryJitterMaxMs": 20,
            "pollIntervalMs": 20,
            "maintenanceIntervalMs": 100,
            "sweepGraceMs": 2_000,
            "gracefulTimeoutMs": 2_000,
            "suspectAfterMs": 2_000,
            "deadAfterMs": 4_000,
        }
    ),
}


def _profile_named(name: object, source: str) -> Mapping[str, object]:
    known = ", ".join(PROFILES)
    if not isinstance(name, str):
        raise ValidationError(
            f"{PROFILE_KEY!r} in {source} must be a string naming a profile "
            f"({known}), not {_describe_value(name)}"
        )
    if name not in PROFILES:
        raise ValidationError(
            f"unknown settings profile {name!r} in {source}; known profiles: {known}"
        )
    return PROFILES[name]


# --- files -------------------------------------------------------------------


def _reject_duplicate_keys(path: Path) -> Callable[[list[tuple[str, Any]]], dict]:
    def build_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValidationError(
                    f"duplicate key {key!r} in {path}; each key may appear once"
                )
            result[key] = value
        return result

    return build_object


def read_json_config(path: Path) -> object:
    """Parse a UTF-8 JSON configuration file.

    A missing file raises FileNotFoundError, which callers turn into their
    defaults. Anything else wrong raises ValidationError: an unreadable file,
    invalid UTF-8, malformed JSON (with line and column) or an object with a
    repeated key.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ValidationError(f"cannot read {path}: {error.strerror}") from error

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValidationError(
            f"{path} is not valid UTF-8 (invalid byte at offset {error.start})"
        ) from error

    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys(path))
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"invalid JSON in {path} at line {error.lineno}, "
            f"column {error.colno}: {error.msg}"
        ) from error
    except RecursionError:
        raise ValidationError(f"invalid JSON in {path}: nested too deeply") from None
    except ValueError as error:  # an integer of more than 4300 digits, say
        raise ValidationError(f"invalid JSON in {path}: {error}") from None


def load_settings(path: Path) -> Settings:
    """Load the settings file at `path`; a missing file means the defaults."""
    try:
        document = read_json_config(path)
    except FileNotFoundError:
        return DEFAULT_SETTINGS
    if not isinstance(document, dict):
        raise ValidationError(
            f"settings file {path} must contain a JSON object, "
            f"not {json_kind(document)}"
        )
    return Settings.from_mapping(document, str(path))


def changed_fields(old: Settings, new: Settings) -> list[str]:
    """Return the camelCase keys whose values differ, sorted."""
    return sorted(
        key
        for key, attribute in _ATTRIBUTE_BY_KEY.items()
        if getattr(old, attribute) != getattr(new, attribute)
    )


DEFAULT_SETTINGS = Settings()


# --- documentation -----------------------------------------------------------

_MARKDOWN_INTRO = """\
# Settings

<!-- Generated by `python -m relaymesh.config > docs/settings.md`.
     Edit the field declarations in relaymesh/config.py, not this file. -->

A root's runtime settings live in `relaymesh-settings.json` at the top of the
root. The file is optional, and so is every key in it: a missing file or key
means the default below. The file is one JSON object with the camelCase keys
of the table.

Loading is strict, and a bad file is rejected with a one-line error:

- an unknown key is an error that suggests the nearest known key;
- integers must be JSON numbers. `2000.0` counts as 2000, but `"2000"` and
  `true` are rejected. Booleans must be `true` or `false`;
- a value outside its allowed range is an error and is never clamped.
  Open ranges (`>= N`) end at 9007199254740991 (2**53 - 1), the largest
  integer that an IEEE 754 double, and so many JSON parsers, store exactly;
- a repeated key is an error, and malformed JSON is reported with its line
  and column.

## Profiles

`"profile": "NAME"` applies a named profile first, and the file's own keys
then override it. For example `{"profile": "sim", "maxAttempts": 5}`.

| profile | values |
|---|---|
"""


def _json_text(value: object) -> str:
    return json.dumps(value)


def _profile_rows() -> list[str]:
    rows = []
    for name, values in PROFILES.items():
        if values:
            shown = ", ".join(f"`{key}` {_json_text(v)}" for key, v in values.items())
        else:
            shown = "the defaults"
        rows.append(f"| `{name}` | {shown} |")
    return rows


def _allowed_text(info: SettingInfo) -> str:
    if isinstance(info.default, bool):
        return "`true` or `false`"
    parts = [_range_text(info.minimum, info.maximum)]
    if info.constraint:
        parts.append(info.constraint)
    return "; ".join(parts)


def render_settings_markdown() -> str:
    """Render docs/settings.md from the field declarations."""
    lines = [_MARKDOWN_INTRO.rstrip("\n"), *_profile_rows(), ""]
    lines += [
        "## Keys",
        "",
        "| key | default | allowed | meaning |",
        "|---|---|---|---|",
    ]
    for info in describe_settings():
        lines.append(
            f"| `{info.key}` | {_json_text(info.default)} | {_allowed_text(info)} "
            f"| {info.description} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_settings_markdown())
