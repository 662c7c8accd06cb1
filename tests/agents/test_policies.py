"""Tests of relaymesh.agents.policies: the backoff formula and strict overrides."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from relaymesh.agents import policies
from relaymesh.agents.policies import (
    RetryPolicies,
    RetryPolicy,
    backoff_bounds_ms,
    backoff_delay_ms,
)
from relaymesh.config import DEFAULT_SETTINGS
from relaymesh.errors import ValidationError

DEFAULT_POLICY = RetryPolicy(
    max_attempts=3, base_backoff_ms=1000, max_backoff_ms=60000, jitter_max_ms=250
)


def write_policies(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "agents" / "retry-policies.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def load_error(tmp_path: Path, document: object, settings=DEFAULT_SETTINGS) -> str:
    """Write `document` as the overrides file and return the one-line load error."""
    path = write_policies(tmp_path, document)
    with pytest.raises(ValidationError) as caught:
        RetryPolicies.load(path, settings)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_public_names_pinned():
    assert sorted(policies.__all__) == [
        "RetryPolicies",
        "RetryPolicy",
        "backoff_bounds_ms",
        "backoff_delay_ms",
    ]


# --- backoff formula ---------------------------------------------------------


@pytest.mark.parametrize(
    ("failed_attempt", "low", "high"),
    [
        (1, 1000, 1250),
        (2, 2000, 2250),
        (3, 4000, 4250),
        (4, 8000, 8250),
        (5, 16000, 16250),
        (6, 32000, 32250),
        (7, 60000, 60250),
        (8, 60000, 60250),
        (9, 60000, 60250),
        (10, 60000, 60250),
    ],
)
def test_backoff_bounds_defaults(failed_attempt, low, high):
    assert backoff_bounds_ms(DEFAULT_POLICY, failed_attempt) == (low, high)


@pytest.mark.parametrize(
    ("policy", "failed_attempt", "low"),
    [
        # The cap binds exactly where the doubled delay first passes it.
        (RetryPolicy(5, 500, 10000, 0), 5, 8000),
        (RetryPolicy(5, 500, 10000, 0), 6, 10000),
        (RetryPolicy(5, 500, 8000, 0), 5, 8000),
        # A base equal to the maximum never grows.
        (RetryPolicy(5, 700, 700, 0), 1, 700),
        (RetryPolicy(5, 700, 700, 0), 4, 700),
        # A maximum that is not base * 2**k is still reached exactly.
        (RetryPolicy(5, 3, 1000, 0), 9, 768),
        (RetryPolicy(5, 3, 1000, 0), 10, 1000),
        (RetryPolicy(5, 1, 1, 0), 1000, 1),
    ],
)
def test_backoff_cap_reached(policy, failed_attempt, low):
    assert backoff_bounds_ms(policy, failed_attempt) == (low, low)


@pytest.mark.parametrize("failed_attempt", [64, 65, 1_000, 10**9, 2**62, 10**30])
def test_backoff_huge_attempt_capped(failed_attempt):
    started = time.perf_counter()
    assert backoff_bounds_ms(DEFAULT_POLICY, failed_attempt) == (60000, 60250)
    assert time.perf_counter() - started < 0.1


def test_backoff_huge_maximum_no_overflow():
    policy = RetryPolicy(3, 1, 2**53 - 1, 0)
    assert backoff_bounds_ms(policy, 54) == (2**53 - 1, 2**53 - 1)
    assert backoff_bounds_ms(policy, 53) == (2**52, 2**52)


def test_backoff_delay_within_bounds():
    rng = random.Random(1234)
    for failed_attempt in range(1, 11):
        low, high = backoff_bounds_ms(DEFAULT_POLICY, failed_attempt)
        for _ in range(200):
            delay = backoff_delay_ms(DEFAULT_POLICY, failed_attempt, rng)
            assert low <= delay <= high, (failed_attempt, delay)


def test_backoff_jitter_covers_both_ends():
    rng = random.Random(7)
    jitters = {backoff_delay_ms(DEFAULT_POLICY, 1, rng) - 1000 for _ in range(5000)}
    assert min(jitters) == 0
    assert max(jitters) == 250
    # A uniform draw over 251 values hits nearly all of them in 5000 tries.
    assert len(jitters) > 240


def test_backoff_jitter_not_clipped_at_cap():
    rng = random.Random(3)
    delays = [backoff_delay_ms(DEFAULT_POLICY, 20, rng) for _ in range(500)]
    assert max(delays) > 60000
    assert max(delays) <= 60250


def test_backoff_delay_seeded_replay():
    first = [
        backoff_delay_ms(DEFAULT_POLICY, n, random.Random(42)) for n in range(1, 6)
    ]
    second = [
        backoff_delay_ms(DEFAULT_POLICY, n, random.Random(42)) for n in range(1, 6)
    ]
    assert first == second
    rng = random.Random(42)
    expected_jitter = rng.randint(0, 250)
    assert (
        backoff_delay_ms(DEFAULT_POLICY, 1, random.Random(42)) == 1000 + expected_jitter
    )


def test_backoff_zero_jitter_still_draws():
    policy = RetryPolicy(3, 100, 1000, 0)
    rng = random.Random(5)
    reference = random.Random(5)
    assert backoff_delay_ms(policy, 2, rng) == 200
    reference.randint(0, 0)
    assert rng.random() == reference.random()


@pytest.mark.parametrize(
    ("failed_attempt", "message"),
    [
        (0, "failed_attempt is 0, but attempts are numbered from 1"),
        (-3, "failed_attempt is -3, but attempts are numbered from 1"),
        (True, "failed_attempt must be an integer, not True"),
        (1.0, "failed_attempt must be an integer, not 1.0"),
        ("2", "failed_attempt must be an integer, not '2'"),
    ],
)
def test_backoff_bad_attempt_rejected(failed_attempt, message):
    with pytest.raises(ValidationError) as caught:
        backoff_bounds_ms(DEFAULT_POLICY, failed_attempt)
    assert str(caught.value) == message
    with pytest.raises(ValidationError):
        backoff_delay_ms(DEFAULT_POLICY, failed_attempt, random.Random(0))


# --- RetryPolicy -------------------------------------------------------------


def test_policy_from_settings():
    settings = DEFAULT_SETTINGS.with_overrides(
        max_attempts=6, base_backoff_ms=10, max_backoff_ms=90, retry_jitter_max_ms=5
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(6, 10, 90, 5)
    assert RetryPolicy.from_settings(DEFAULT_SETTINGS) == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (
            (0, 1, 1, 0),
            "'maxAttempts' in RetryPolicy() is 0, outside the allowed range 1..1000",
        ),
        (
            (1, 0, 1, 0),
            "'baseBackoffMs' in RetryPolicy() is 0, outside the allowed range",
        ),
        (
            (1, 1, 1, -1),
            "'retryJitterMaxMs' in RetryPolicy() is -1, outside the allowed range 0..60000",
        ),
        (
            (1, "5", 10, 0),
            "'baseBackoffMs' in RetryPolicy() must be an integer, not \"5\" (a string)",
        ),
        (
            (1, 20, 10, 0),
            (
                "RetryPolicy() has base_backoff_ms 20 above max_backoff_ms 10; "
                "the base must not exceed the maximum"
            ),
        ),
    ],
)
def test_policy_constructor_validates(arguments, fragment):
    with pytest.raises(ValidationError) as caught:
        RetryPolicy(*arguments)
    assert fragment in str(caught.value)


def test_policy_integral_float_becomes_int():
    policy = RetryPolicy(3.0, 100, 1000, 0)
    assert policy.max_attempts == 3
    assert type(policy.max_attempts) is int


# --- loading overrides -------------------------------------------------------


def test_missing_file_means_no_overrides(tmp_path):
    loaded = RetryPolicies.load(
        tmp_path / "agents" / "retry-policies.json", DEFAULT_SETTINGS
    )
    assert loaded.overrides() == {}
    assert loaded.default == DEFAULT_POLICY
    assert loaded.policy_for("fail") == DEFAULT_POLICY


def test_empty_agents_list_means_no_overrides(tmp_path):
    loaded = RetryPolicies.load(
        write_policies(tmp_path, {"agents": []}), DEFAULT_SETTINGS
    )
    assert loaded.overrides() == {}


def test_full_override_loaded(tmp_path):
    path = write_policies(
        tmp_path,
        {
            "agents": [
                {
                    "id": "fail",
                    "maxAttempts": 5,
                    "baseBackoffMs": 500,
                    "maxBackoffMs": 10000,
                }
            ]
        },
    )
    loaded = RetryPolicies.load(path, DEFAULT_SETTINGS)
    assert loaded.policy_for("fail") == RetryPolicy(5, 500, 10000, 250)
    assert loaded.policy_for("echo") == DEFAULT_POLICY
    assert loaded.overrides() == {"fail": RetryPolicy(5, 500, 10000, 250)}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"id": "a"}, RetryPolicy(3, 1000, 60000, 250)),
        ({"id": "a", "maxAttempts": 1}, RetryPolicy(1, 1000, 60000, 250)),
        ({"id": "a", "baseBackoffMs": 50}, RetryPolicy(3, 50, 60000, 250)),
        ({"id": "a", "maxBackoffMs": 1000}, RetryPolicy(3, 1000, 1000, 250)),
        ({"id": "a", "retryJitterMaxMs": 0}, RetryPolicy(3, 1000, 60000, 0)),
        ({"id": "a", "maxAttempts": 2.0}, RetryPolicy(2, 1000, 60000, 250)),
    ],
)
def test_partial_override_falls_back(tmp_path, entry, expected):
    loaded = RetryPolicies.load(
        write_policies(tmp_path, {"agents": [entry]}), DEFAULT_SETTINGS
    )
    assert loaded.policy_for("a") == expected


def test_fallback_uses_given_settings(tmp_path):
    settings = DEFAULT_SETTINGS.with_overrides(max_attempts=9, retry_jitter_max_ms=7)
    path = write_policies(tmp_path, {"agents": [{"id": "a", "baseBackoffMs": 10}]})
    loaded = RetryPolicies.load(path, settings)
    assert loaded.policy_for("a") == RetryPolicy(9, 10, 60000, 7)
    assert loaded.default == RetryPolicy(9, 1000, 60000, 7)


def test_several_overrides(tmp_path):
    path = write_policies(
        tmp_path,
        {"agents": [{"id": "a", "maxAttempts": 2}, {"id": "b", "maxAttempts": 4}]},
    )
    loaded = RetryPolicies.load(path, DEFAULT_SETTINGS)
    assert loaded.policy_for("a").max_attempts == 2
    assert loaded.policy_for("b").max_attempts == 4
    assert sorted(loaded.overrides()) == ["a", "b"]


def test_overrides_returns_copy(tmp_path):
    path = write_policies(tmp_path, {"agents": [{"id": "a", "maxAttempts": 2}]})
    loaded = RetryPolicies.load(path, DEFAULT_SETTINGS)
    loaded.overrides().clear()
    assert loaded.policy_for("a").max_attempts == 2


def test_from_json_equals_load(tmp_path):
    document = {"agents": [{"id": "a", "maxAttempts": 2}]}
    loaded = RetryPolicies.load(write_policies(tmp_path, document), DEFAULT_SETTINGS)
    assert RetryPolicies.from_json(document, DEFAULT_SETTINGS, "inline") == loaded


# --- validation errors -------------------------------------------------------


def policies_path(tmp_path: Path) -> Path:
    return tmp_path / "agents" / "retry-policies.json"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            [],
            (
                "retry policies in {path} must be a JSON object like "
                '{{"agents": [...]}}, not an array'
            ),
        ),
        (
            {},
            (
                "retry policies in {path} have no 'agents' list; "
                'write {{"agents": []}} for no overrides'
            ),
        ),
        ({"agent": []}, "unknown key 'agent' in {path}; did you mean 'agents'?"),
        (
            {"agents": [], "version": 1},
            "unknown key 'version' in {path}; known keys: agents",
        ),
        (
            {"agents": {}},
            "'agents' in {path} must be a JSON array of policies, not an object",
        ),
        (
            {"agents": [3]},
            "retry policy in {path} at agents[0] must be a JSON object, not a number",
        ),
        (
            {"agents": [{"id": "a"}, {"maxAttempts": 2}]},
            "retry policy in {path} at agents[1] has no 'id'; each entry names its agent",
        ),
        (
            {"agents": [{"id": 5}]},
            "'id' in {path} at agents[0] must be a non-empty string, not 5",
        ),
        (
            {"agents": [{"id": "  "}]},
            "'id' in {path} at agents[0] must be a non-empty string, not '  '",
        ),
        (
            {"agents": [{"id": "fail "}]},
            "'id' 'fail ' in {path} at agents[0] must not start or end with whitespace",
        ),
        (
            {"agents": [{"id": "fail", "maxAtempts": 5}]},
            (
                "unknown retry policy key 'maxAtempts' in {path} at agents[0] (id 'fail'); "
                "did you mean 'maxAttempts'?"
            ),
        ),
        (
            {"agents": [{"id": "fail", "timeoutMs": 5}]},
            (
                "unknown retry policy key 'timeoutMs' in {path} at agents[0] (id 'fail'); "
                "known keys: id, maxAttempts, baseBackoffMs, maxBackoffMs, retryJitterMaxMs"
            ),
        ),
        (
            {"agents": [{"id": "fail", "maxAttempts": "5"}]},
            (
                "'maxAttempts' in {path} at agents[0] (id 'fail') must be an integer, "
                'not "5" (a string)'
            ),
        ),
        (
            {"agents": [{"id": "fail", "baseBackoffMs": True}]},
            (
                "'baseBackoffMs' in {path} at agents[0] (id 'fail') must be an integer, "
                "not true (a boolean)"
            ),
        ),
        (
            {"agents": [{"id": "fail", "maxBackoffMs": 10.5}]},
            (
                "'maxBackoffMs' in {path} at agents[0] (id 'fail') must be an integer, "
                "not 10.5 (a number)"
            ),
        ),
        (
            {"agents": [{"id": "fail", "retryJitterMaxMs": None}]},
            (
                "'retryJitterMaxMs' in {path} at agents[0] (id 'fail') must be an integer, "
                "not null (null)"
            ),
        ),
        (
            {"agents": [{"id": "fail", "maxAttempts": 0}]},
            (
                "'maxAttempts' in {path} at agents[0] (id 'fail') is 0, "
                "outside the allowed range 1..1000"
            ),
        ),
        (
            {"agents": [{"id": "fail", "maxAttempts": 1001}]},
            (
                "'maxAttempts' in {path} at agents[0] (id 'fail') is 1001, "
                "outside the allowed range 1..1000"
            ),
        ),
        (
            {"agents": [{"id": "fail", "baseBackoffMs": 0}]},
            (
                "'baseBackoffMs' in {path} at agents[0] (id 'fail') is 0, "
                "outside the allowed range 1..9007199254740991 (2**53 - 1, the largest "
                "integer that a JSON parser using doubles stores exactly)"
            ),
        ),
        (
            {"agents": [{"id": "fail", "retryJitterMaxMs": -1}]},
            (
                "'retryJitterMaxMs' in {path} at agents[0] (id 'fail') is -1, "
                "outside the allowed range 0..60000"
            ),
        ),
        (
            {"agents": [{"id": "fail", "retryJitterMaxMs": 60001}]},
            (
                "'retryJitterMaxMs' in {path} at agents[0] (id 'fail') is 60001, "
                "outside the allowed range 0..60000"
            ),
        ),
        (
            {"agents": [{"id": "a"}, {"id": "b"}, {"id": "a", "maxAttempts": 2}]},
            (
                "duplicate agent id 'a' in {path} at agents[2], already given at agents[0]; "
                "merge the two entries"
            ),
        ),
        (
            {"agents": [{"id": "fail", "baseBackoffMs": 2000, "maxBackoffMs": 1000}]},
            (
                "'baseBackoffMs' (2000) in {path} at agents[0] (id 'fail') is above "
                "'maxBackoffMs' (1000); set maxBackoffMs to at least 2000 in this entry"
            ),
        ),
        (
            {"agents": [{"id": "fail", "baseBackoffMs": 60001}]},
            (
                "'baseBackoffMs' (60001) in {path} at agents[0] (id 'fail') is above "
                "'maxBackoffMs' (60000, from the settings); "
                "set maxBackoffMs to at least 60001 in this entry"
            ),
        ),
        (
            {"agents": [{"id": "fail", "maxBackoffMs": 999}]},
            (
                "'baseBackoffMs' (1000, from the settings) in {path} at agents[0] "
                "(id 'fail') is above 'maxBackoffMs' (999); "
                "set maxBackoffMs to at least 1000 in this entry"
            ),
        ),
    ],
)
def test_invalid_document_rejected(tmp_path, document, expected):
    message = load_error(tmp_path, document)
    assert message == expected.format(path=policies_path(tmp_path))


def test_malformed_json_names_position(tmp_path):
    path = policies_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"agents": [\n  {"id": "a",}\n]}', encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        RetryPolicies.load(path, DEFAULT_SETTINGS)
    assert str(caught.value).startswith(
        f"invalid JSON in {path} at line 2, column 14: "
    )


def test_duplicate_json_key_rejected(tmp_path):
    path = policies_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"agents": [{"id": "a", "maxAttempts": 2, "maxAttempts": 9}]}')
    with pytest.raises(ValidationError) as caught:
        RetryPolicies.load(path, DEFAULT_SETTINGS)
    assert str(caught.value) == (
        f"duplicate key 'maxAttempts' in {path}; each key may appear once"
    )


def test_one_bad_entry_rejects_file(tmp_path):
    document = {
        "agents": [{"id": "good", "maxAttempts": 2}, {"id": "bad", "maxAttempts": 0}]
    }
    message = load_error(tmp_path, document)
    assert "agents[1] (id 'bad')" in message


# --- agent ids ---------------------------------------------------------------


def test_validate_agent_ids_accepts_known(tmp_path):
    path = write_policies(tmp_path, {"agents": [{"id": "fail", "maxAttempts": 2}]})
    RetryPolicies.load(path, DEFAULT_SETTINGS).validate_agent_ids(["echo", "fail"])


def test_validate_agent_ids_suggests(tmp_path):
    path = write_policies(tmp_path, {"agents": [{"id": "fial", "maxAttempts": 2}]})
    loaded = RetryPolicies.load(path, DEFAULT_SETTINGS)
    with pytest.raises(ValidationError) as caught:
        loaded.validate_agent_ids(["echo", "fail"])
    assert str(caught.value) == (
        f"retry policy in {path} names unknown agent 'fial'; did you mean 'fail'?"
    )


def test_validate_agent_ids_lists_known(tmp_path):
    path = write_policies(tmp_path, {"agents": [{"id": "zzz", "maxAttempts": 2}]})
    loaded = RetryPolicies.load(path, DEFAULT_SETTINGS)
    with pytest.raises(
        ValidationError, match=r"unknown agent 'zzz'; known agents: echo, fail$"
    ):
        loaded.validate_agent_ids(["fail", "echo"])
    with pytest.raises(
        ValidationError, match=r"unknown agent 'zzz'; known agents: none$"
    ):
        loaded.validate_agent_ids([])
