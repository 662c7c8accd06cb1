"""Tests of relaymesh.config: defaults, strict loading, profiles and the docs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relaymesh import config
from relaymesh.config import (
    DEFAULT_SETTINGS,
    JSON_INTEGER_MAX,
    PROFILES,
    SETTINGS_KEYS,
    Settings,
    changed_fields,
    describe_settings,
    load_settings,
    render_settings_markdown,
)
from relaymesh.errors import ValidationError

REPOSITORY = Path(__file__).resolve().parents[1]

# (JSON key, attribute, default, minimum, maximum) in declaration order. This
# table is written out by hand on purpose, so that changing a default or a
# range in config.py needs a deliberate change here too.
EXPECTED_SETTINGS = [
    ("leaseTimeoutMs", "lease_timeout_ms", 15000, 100, 86_400_000),
    ("leaseHeartbeatMs", "lease_heartbeat_ms", 2000, 10, None),
    ("maxAttempts", "max_attempts", 3, 1, 1000),
    ("baseBackoffMs", "base_backoff_ms", 1000, 1, None),
    ("maxBackoffMs", "max_backoff_ms", 60000, 1, None),
    ("retryJitterMaxMs", "retry_jitter_max_ms", 250, 0, 60000),
    ("retryDispatchLimit", "retry_dispatch_limit", 32, 1, 10000),
    ("idempotencyTtlDays", "idempotency_ttl_days", 7, 1, 3650),
    ("payloadMaxBytes", "payload_max_bytes", 10485760, 1, 1073741824),
    ("maxConsecutiveHigh", "max_consecutive_high", 100, 1, 1_000_000),
    ("gracefulTimeoutMs", "graceful_timeout_ms", 15000, 0, 3_600_000),
    ("claimBatchSize", "claim_batch_size", 16, 1, 1000),
    ("pollIntervalMs", "poll_interval_ms", 200, 10, 60000),
    ("maintenanceIntervalMs", "maintenance_interval_ms", 1000, 50, 3_600_000),
    ("sweepGraceMs", "sweep_grace_ms", 30000, 1000, None),
    ("minFreeDiskBytes", "min_free_disk_bytes", 0, 0, None),
    ("auditMaxBytes", "audit_max_bytes", 16 * 1024 * 1024, 4096, None),
    ("auditKeepFiles", "audit_keep_files", 8, 0, 10_000),
    ("sloQueueLagTargetMs", "slo_queue_lag_target_ms", 5000, 1, None),
    ("suspectAfterMs", "suspect_after_ms", 30000, 100, None),
    ("deadAfterMs", "dead_after_ms", 60000, 100, None),
    ("suspectRecoverMinMs", "suspect_recover_min_ms", 5000, 0, None),
    ("deadRecoverMinMs", "dead_recover_min_ms", 30000, 0, None),
    (
        "pauseWorkerWhenLocalNotAlive",
        "pause_worker_when_local_not_alive",
        True,
        None,
        None,
    ),
]
INTEGER_SETTINGS = [row for row in EXPECTED_SETTINGS if row[3] is not None]

SIM_PROFILE = {
    "leaseTimeoutMs": 1000,
    "leaseHeartbeatMs": 200,
    "baseBackoffMs": 50,
    "maxBackoffMs": 1000,
    "retryJitterMaxMs": 20,
    "pollIntervalMs": 20,
    "maintenanceIntervalMs": 100,
    "sweepGraceMs": 2000,
    "gracefulTimeoutMs": 2000,
    "suspectAfterMs": 2000,
    "deadAfterMs": 4000,
}


def write_settings(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "relaymesh-settings.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """Write `text` as the settings file and return the one-line load error."""
    path = tmp_path / "relaymesh-settings.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- declarations ------------------------------------------------------------


def test_public_names_pinned():
    assert sorted(config.__all__) == sorted(
        [
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
    )


def test_settings_keys_in_declaration_order():
    assert SETTINGS_KEYS == tuple(row[0] for row in EXPECTED_SETTINGS)


@pytest.mark.parametrize(
    ("key", "attribute", "default", "_min", "_max"), EXPECTED_SETTINGS
)
def test_default_value(key, attribute, default, _min, _max):
    value = getattr(DEFAULT_SETTINGS, attribute)
    assert value == default
    assert type(value) is type(default)
    assert DEFAULT_SETTINGS.to_json()[key] == default


def test_describe_settings_matches_table():
    infos = describe_settings()
    assert [info.key for info in infos] == [row[0] for row in EXPECTED_SETTINGS]
    for info, (key, attribute, default, minimum, maximum) in zip(
        infos, EXPECTED_SETTINGS
    ):
        assert info.attribute == attribute, key
        assert info.default == default, key
        assert info.minimum == minimum, key
        assert info.maximum == maximum, key


def test_describe_settings_descriptions_present():
    for info in describe_settings():
        assert len(info.description) > 40, info.key
        assert "  " not in info.description, info.key
        assert "|" not in info.description, info.key


def test_describe_settings_constraints():
    constraints = {info.key: info.constraint for info in describe_settings()}
    assert constraints["leaseHeartbeatMs"] == "< leaseTimeoutMs / 2"
    assert constraints["maxBackoffMs"] == ">= baseBackoffMs"
    assert constraints["suspectAfterMs"] == ">= leaseTimeoutMs"
    assert constraints["deadAfterMs"] == ">= suspectAfterMs"
    others = {key for key, text in constraints.items() if text}
    assert others == {
        "leaseHeartbeatMs",
        "maxBackoffMs",
        "suspectAfterMs",
        "deadAfterMs",
    }


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_SETTINGS.max_attempts = 5  # type: ignore[misc]


def test_to_json_round_trip():
    settings = DEFAULT_SETTINGS.with_overrides(
        max_attempts=7, pause_worker_when_local_not_alive=False
    )
    document = settings.to_json()
    assert list(document) == list(SETTINGS_KEYS)
    assert document["maxAttempts"] == 7
    assert document["pauseWorkerWhenLocalNotAlive"] is False
    assert Settings.from_mapping(document, "round trip") == settings


# --- loading -----------------------------------------------------------------


def test_missing_file_means_defaults(tmp_path):
    assert load_settings(tmp_path / "relaymesh-settings.json") == DEFAULT_SETTINGS


def test_missing_folder_means_defaults(tmp_path):
    assert (
        load_settings(tmp_path / "absent" / "relaymesh-settings.json")
        == DEFAULT_SETTINGS
    )


def test_empty_object_means_defaults(tmp_path):
    assert load_settings(write_settings(tmp_path, {})) == DEFAULT_SETTINGS


def test_file_values_override_defaults(tmp_path):
    path = write_settings(
        tmp_path,
        {
            "leaseTimeoutMs": 20000,
            "maxAttempts": 9,
            "pauseWorkerWhenLocalNotAlive": False,
        },
    )
    settings = load_settings(path)
    assert settings.lease_timeout_ms == 20000
    assert settings.max_attempts == 9
    assert settings.pause_worker_when_local_not_alive is False
    assert settings.base_backoff_ms == 1000


def test_integral_float_becomes_int(tmp_path):
    settings = load_settings(write_settings(tmp_path, {"leaseHeartbeatMs": 2500.0}))
    assert settings.lease_heartbeat_ms == 2500
    assert type(settings.lease_heartbeat_ms) is int


# Values of related settings that keep the rules between settings satisfied
# when one setting sits at a bound, so that only its range is under test.
MAX_LEASE = {
    "leaseTimeoutMs": 86_400_000,
    "suspectAfterMs": 86_400_000,
    "deadAfterMs": 86_400_000,
}
MIN_LEASE = {"leaseTimeoutMs": 100, "leaseHeartbeatMs": 10}
RELATED_AT_BOUNDS = {
    "leaseTimeoutMs": {**MAX_LEASE, "leaseHeartbeatMs": 10},
    "leaseHeartbeatMs": MAX_LEASE,
    "baseBackoffMs": {"maxBackoffMs": JSON_INTEGER_MAX},
    "maxBackoffMs": {"baseBackoffMs": 1},
    "suspectAfterMs": {**MIN_LEASE, "deadAfterMs": JSON_INTEGER_MAX},
    "deadAfterMs": {**MIN_LEASE, "suspectAfterMs": 100},
}


@pytest.mark.parametrize(
    ("key", "attribute", "_default", "minimum", "maximum"), INTEGER_SETTINGS
)
def test_range_bounds_accepted(tmp_path, key, attribute, _default, minimum, maximum):
    related = RELATED_AT_BOUNDS.get(key, {})
    highest = JSON_INTEGER_MAX if maximum is None else maximum
    if key == "leaseHeartbeatMs":
        highest = 86_400_000 // 2 - 1
    for value in (minimum, highest):
        path = write_settings(tmp_path, {**related, key: value})
        assert getattr(load_settings(path), attribute) == value


@pytest.mark.parametrize(
    ("key", "_attribute", "_default", "minimum", "maximum"), INTEGER_SETTINGS
)
def test_below_minimum_rejected(tmp_path, key, _attribute, _default, minimum, maximum):
    allowed = f"{minimum}..{maximum if maximum is not None else JSON_INTEGER_MAX}"
    message = load_error(tmp_path, json.dumps({key: minimum - 1}))
    assert message.startswith(f"'{key}' in {tmp_path / 'relaymesh-settings.json'} ")
    assert f"is {minimum - 1}, outside the allowed range {allowed}" in message


@pytest.mark.parametrize(
    ("key", "_attribute", "_default", "minimum", "maximum"), INTEGER_SETTINGS
)
def test_above_maximum_rejected(tmp_path, key, _attribute, _default, minimum, maximum):
    too_big = (JSON_INTEGER_MAX if maximum is None else maximum) + 1
    message = load_error(tmp_path, json.dumps({key: too_big}))
    assert f"'{key}' in " in message
    assert f"is {too_big}, outside the allowed range {minimum}.." in message


def test_open_range_names_json_limit(tmp_path):
    message = load_error(tmp_path, '{"sweepGraceMs": 1e30}')
    assert "outside the allowed range 1000..9007199254740991" in message
    assert "2**53 - 1" in message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('{"leaseTimeoutMs": "15000"}', '"15000" (a string)'),
        ('{"leaseTimeoutMs": true}', "true (a boolean)"),
        ('{"leaseTimeoutMs": false}', "false (a boolean)"),
        ('{"leaseTimeoutMs": 2000.5}', "2000.5 (a number)"),
        ('{"leaseTimeoutMs": null}', "null (null)"),
        ('{"leaseTimeoutMs": [15000]}', "[15000] (an array)"),
        ('{"leaseTimeoutMs": {"ms": 1}}', '{"ms": 1} (an object)'),
        ('{"leaseTimeoutMs": NaN}', "NaN (a number)"),
        ('{"leaseTimeoutMs": Infinity}', "Infinity (a number)"),
    ],
)
def test_integer_wrong_type_rejected(tmp_path, text, shown):
    message = load_error(tmp_path, text)
    path = tmp_path / "relaymesh-settings.json"
    assert message == f"'leaseTimeoutMs' in {path} must be an integer, not {shown}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1, "1 (a number)"),
        (0, "0 (a number)"),
        ("true", '"true" (a string)'),
        (None, "null (null)"),
    ],
)
def test_boolean_wrong_type_rejected(tmp_path, value, shown):
    message = load_error(tmp_path, json.dumps({"pauseWorkerWhenLocalNotAlive": value}))
    path = tmp_path / "relaymesh-settings.json"
    assert message == (
        f"'pauseWorkerWhenLocalNotAlive' in {path} must be true or false, not {shown}"
    )


def test_unknown_key_suggests_nearest(tmp_path):
    message = load_error(tmp_path, '{"leaseTimoutMs": 5000}')
    path = tmp_path / "relaymesh-settings.json"
    assert message == (
        f"unknown settings key 'leaseTimoutMs' in {path}; did you mean 'leaseTimeoutMs'?"
    )


def test_unknown_key_suggests_snake_case_fix(tmp_path):
    message = load_error(tmp_path, '{"max_attempts": 5}')
    assert message.endswith("did you mean 'maxAttempts'?")


def test_unknown_key_without_match_lists_keys(tmp_path):
    message = load_error(tmp_path, '{"zzzz": 5}')
    assert "unknown settings key 'zzzz'" in message
    assert "known keys: leaseTimeoutMs, leaseHeartbeatMs, " in message
    assert message.endswith("pauseWorkerWhenLocalNotAlive, profile")


def test_unknown_key_checked_before_values(tmp_path):
    message = load_error(tmp_path, '{"maxAttempts": 0, "maxAtempts": 4}')
    assert message.startswith("unknown settings key 'maxAtempts'")


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('{"maxAttempts": 3,}', 1, 19),
        ('{\n  "maxAttempts": 3\n  "baseBackoffMs": 10\n}', 3, 3),
        ("", 1, 1),
        ("{'maxAttempts': 3}", 1, 2),
    ],
)
def test_malformed_json_names_position(tmp_path, text, line, column):
    message = load_error(tmp_path, text)
    path = tmp_path / "relaymesh-settings.json"
    assert message.startswith(
        f"invalid JSON in {path} at line {line}, column {column}: "
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "an array"), ("3", "a number"), ('"x"', "a string"), ("null", "null")],
)
def test_non_object_file_rejected(tmp_path, text, kind):
    message = load_error(tmp_path, text)
    path = tmp_path / "relaymesh-settings.json"
    assert message == f"settings file {path} must contain a JSON object, not {kind}"


def test_duplicate_key_rejected(tmp_path):
    message = load_error(tmp_path, '{"maxAttempts": 3, "maxAttempts": 4}')
    path = tmp_path / "relaymesh-settings.json"
    assert message == f"duplicate key 'maxAttempts' in {path}; each key may appear once"


def test_invalid_utf8_rejected(tmp_path):
    path = tmp_path / "relaymesh-settings.json"
    path.write_bytes(b'{"maxAttempts": 3, "x\xff": 1}')
    with pytest.raises(
        ValidationError, match=r"is not valid UTF-8 \(invalid byte at offset 21\)"
    ):
        load_settings(path)


def test_unreadable_path_rejected(tmp_path):
    folder = tmp_path / "relaymesh-settings.json"
    folder.mkdir()
    with pytest.raises(
        ValidationError, match=r"^cannot read .*relaymesh-settings\.json: "
    ):
        load_settings(folder)


# --- rules between settings --------------------------------------------------


@pytest.mark.parametrize(
    ("document", "accepted"),
    [
        ({"leaseHeartbeatMs": 7499}, True),
        ({"leaseHeartbeatMs": 7500}, False),
        (
            {"leaseTimeoutMs": 1001, "leaseHeartbeatMs": 500, "suspectAfterMs": 2000},
            True,
        ),
        (
            {"leaseTimeoutMs": 1001, "leaseHeartbeatMs": 501, "suspectAfterMs": 2000},
            False,
        ),
    ],
)
def test_heartbeat_below_half_lease(tmp_path, document, accepted):
    path = write_settings(tmp_path, document)
    if accepted:
        assert load_settings(path).lease_heartbeat_ms == document["leaseHeartbeatMs"]
        return
    message = load_error(tmp_path, json.dumps(document))
    heartbeat = document["leaseHeartbeatMs"]
    timeout = document.get("leaseTimeoutMs", 15000)
    assert message == (
        f"'leaseHeartbeatMs' in {path} is {heartbeat} but must be less than half of "
        f"'leaseTimeoutMs' ({timeout}); lower leaseHeartbeatMs or raise leaseTimeoutMs"
    )


@pytest.mark.parametrize(
    ("document", "key", "lower_key", "value", "lower"),
    [
        ({"maxBackoffMs": 999}, "maxBackoffMs", "baseBackoffMs", 999, 1000),
        ({"baseBackoffMs": 60001}, "maxBackoffMs", "baseBackoffMs", 60000, 60001),
        ({"suspectAfterMs": 14999}, "suspectAfterMs", "leaseTimeoutMs", 14999, 15000),
        ({"leaseTimeoutMs": 30001}, "suspectAfterMs", "leaseTimeoutMs", 30000, 30001),
        ({"deadAfterMs": 29999}, "deadAfterMs", "suspectAfterMs", 29999, 30000),
    ],
)
def test_at_least_rules(tmp_path, document, key, lower_key, value, lower):
    message = load_error(tmp_path, json.dumps(document))
    path = tmp_path / "relaymesh-settings.json"
    assert message == (
        f"'{key}' in {path} is {value} but must be at least '{lower_key}' ({lower}); "
        f"raise {key} or lower {lower_key}"
    )


@pytest.mark.parametrize(
    "document",
    [
        {"baseBackoffMs": 5000, "maxBackoffMs": 5000},
        {"suspectAfterMs": 15000},
        {"suspectAfterMs": 15000, "deadAfterMs": 15000},
    ],
)
def test_at_least_rules_accept_equal(tmp_path, document):
    settings = load_settings(write_settings(tmp_path, document))
    assert settings.to_json() == {**DEFAULT_SETTINGS.to_json(), **document}


# --- profiles ----------------------------------------------------------------


def test_profile_tables():
    assert set(PROFILES) == {"local", "sim"}
    assert dict(PROFILES["local"]) == {}
    assert dict(PROFILES["sim"]) == SIM_PROFILE


def test_profile_local_is_defaults(tmp_path):
    assert (
        load_settings(write_settings(tmp_path, {"profile": "local"}))
        == DEFAULT_SETTINGS
    )


def test_profile_sim_applied(tmp_path):
    settings = load_settings(write_settings(tmp_path, {"profile": "sim"}))
    assert settings.to_json() == {**DEFAULT_SETTINGS.to_json(), **SIM_PROFILE}


def test_file_keys_override_profile(tmp_path):
    path = write_settings(
        tmp_path, {"leaseTimeoutMs": 1500, "profile": "sim", "maxAttempts": 5}
    )
    settings = load_settings(path)
    assert settings.lease_timeout_ms == 1500
    assert settings.max_attempts == 5
    assert settings.lease_heartbeat_ms == 200


def test_profile_then_rules_checked(tmp_path):
    message = load_error(tmp_path, '{"profile": "sim", "leaseHeartbeatMs": 500}')
    assert "'leaseHeartbeatMs'" in message
    assert "less than half of 'leaseTimeoutMs' (1000)" in message


def test_unknown_profile_lists_known(tmp_path):
    message = load_error(tmp_path, '{"profile": "fast"}')
    path = tmp_path / "relaymesh-settings.json"
    assert (
        message
        == f"unknown settings profile 'fast' in {path}; known profiles: local, sim"
    )


def test_profile_must_be_string(tmp_path):
    message = load_error(tmp_path, '{"profile": 1}')
    assert message.endswith(
        "must be a string naming a profile (local, sim), not 1 (a number)"
    )


def test_profiles_cannot_be_mutated():
    with pytest.raises(TypeError):
        PROFILES["sim"]["leaseTimeoutMs"] = 5  # type: ignore[index]


# --- from_mapping, with_overrides, construction ------------------------------


def test_from_mapping_names_source():
    with pytest.raises(ValidationError) as caught:
        Settings.from_mapping({"maxAttempts": 0}, "the request body")
    assert str(caught.value) == (
        "'maxAttempts' in the request body is 0, outside the allowed range 1..1000"
    )


def test_from_mapping_rejects_non_mapping():
    with pytest.raises(
        ValidationError,
        match=r"^settings in cli must be a JSON object, not \[1\] \(an array\)$",
    ):
        Settings.from_mapping([1], "cli")  # type: ignore[arg-type]


def test_with_overrides_replaces_values():
    settings = DEFAULT_SETTINGS.with_overrides(
        lease_timeout_ms=20000, claim_batch_size=4
    )
    assert settings.lease_timeout_ms == 20000
    assert settings.claim_batch_size == 4
    assert DEFAULT_SETTINGS.lease_timeout_ms == 15000
    assert changed_fields(DEFAULT_SETTINGS, settings) == [
        "claimBatchSize",
        "leaseTimeoutMs",
    ]


def test_with_overrides_keeps_other_values():
    base = DEFAULT_SETTINGS.with_overrides(max_attempts=8)
    assert base.with_overrides(claim_batch_size=2).max_attempts == 8


def test_with_overrides_validates_range():
    with pytest.raises(ValidationError) as caught:
        DEFAULT_SETTINGS.with_overrides(poll_interval_ms=5)
    assert str(caught.value) == (
        "'pollIntervalMs' in Settings.with_overrides() is 5, outside the allowed "
        "range 10..60000"
    )


def test_with_overrides_validates_type():
    with pytest.raises(
        ValidationError, match=r"must be an integer, not \"20\" \(a string\)$"
    ):
        DEFAULT_SETTINGS.with_overrides(claim_batch_size="20")
    with pytest.raises(
        ValidationError, match=r"must be an integer, not true \(a boolean\)$"
    ):
        DEFAULT_SETTINGS.with_overrides(claim_batch_size=True)


def test_with_overrides_validates_rules():
    with pytest.raises(
        ValidationError, match=r"less than half of 'leaseTimeoutMs' \(15000\)"
    ):
        DEFAULT_SETTINGS.with_overrides(lease_heartbeat_ms=8000)


def test_with_overrides_unknown_name_suggests():
    with pytest.raises(ValidationError) as caught:
        DEFAULT_SETTINGS.with_overrides(lease_timout_ms=5000)
    assert str(caught.value) == (
        "unknown setting 'lease_timout_ms' in Settings.with_overrides(); "
        "did you mean 'lease_timeout_ms'?"
    )


def test_with_overrides_normalises_float():
    settings = DEFAULT_SETTINGS.with_overrides(max_attempts=4.0)
    assert settings.max_attempts == 4
    assert type(settings.max_attempts) is int


def test_constructor_validates():
    with pytest.raises(ValidationError, match=r"^'maxAttempts' in Settings\(\) is 0, "):
        Settings(max_attempts=0)


def test_dataclasses_replace_validates():
    with pytest.raises(ValidationError, match=r"'deadAfterMs' in Settings\(\) is 100 "):
        dataclasses.replace(DEFAULT_SETTINGS, dead_after_ms=100)


# --- changed_fields ----------------------------------------------------------


def test_changed_fields_none():
    assert changed_fields(DEFAULT_SETTINGS, Settings()) == []


def test_changed_fields_sorted_keys():
    new = DEFAULT_SETTINGS.with_overrides(
        pause_worker_when_local_not_alive=False, base_backoff_ms=10, max_attempts=1
    )
    assert changed_fields(DEFAULT_SETTINGS, new) == [
        "baseBackoffMs",
        "maxAttempts",
        "pauseWorkerWhenLocalNotAlive",
    ]
    assert changed_fields(new, DEFAULT_SETTINGS) == changed_fields(
        DEFAULT_SETTINGS, new
    )


# --- documentation -----------------------------------------------------------


def test_docs_match_rendered_markdown():
    docs = (REPOSITORY / "docs" / "settings.md").read_text(encoding="utf-8")
    assert docs == render_settings_markdown(), (
        "docs/settings.md is stale; run: python -m relaymesh.config > docs/settings.md"
    )


def test_rendered_markdown_has_every_key():
    text = render_settings_markdown()
    for key, _attribute, default, minimum, maximum in EXPECTED_SETTINGS:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert len(rows) == 1, key
        cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
        assert cells[1] == json.dumps(default), key
        if minimum is not None:
            expected = (
                f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            )
            assert cells[2].startswith(expected), key


def test_rendered_markdown_lists_profiles():
    text = render_settings_markdown()
    assert "| `local` | the defaults |" in text
    assert "`leaseTimeoutMs` 1000" in text
    assert "`deadAfterMs` 4000" in text


def test_module_main_prints_markdown():
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    completed = subprocess.run(
        [sys.executable, "-m", "relaymesh.config"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPOSITORY,
        env=environment,
        start_new_session=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == render_settings_markdown()
