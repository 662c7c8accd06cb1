"""Retry policies: the attempt limit and backoff delays of each agent.

A policy is four numbers: the attempt limit, the base and maximum backoff and
the maximum jitter. The settings give the default policy, and
`<root>/agents/retry-policies.json` may override any subset of the numbers
per agent::

    {"agents": [{"id": "fail", "maxAttempts": 5, "baseBackoffMs": 500,
                 "maxBackoffMs": 10000}]}

Keys not given in an entry fall back to the settings (`maxAttempts`,
`baseBackoffMs`, `maxBackoffMs`, `retryJitterMaxMs`).

Backoff is capped exponential with additive jitter. After failed attempt n
the delay is `min(max_backoff, base_backoff * 2**(n - 1))` plus a uniform
integer in `[0, jitter_max]`. The jitter is added after the cap, so the
delay may exceed `max_backoff_ms` by up to `jitter_max_ms`. Clipping it at
the cap instead would send every capped step back at the same instant after
a long outage, which is the thundering herd that jitter exists to prevent.
"Full jitter" (a uniform delay in `[0, capped]`) spreads load further but
makes a short delay possible after many failures, and operators reading a
retry schedule expect it to grow.

The overrides file is loaded strictly, like the settings file. Any unknown
key, wrong type, out-of-range value, duplicate id or base above max rejects
the whole file with an error that names the entry. Skipping a bad entry
would quietly give that agent the default policy, which is found only when
it dead-letters too early or retries too long.

Policies depend on the settings for their fallbacks, so a caller that
reloads the settings loads the policies again with the new settings.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from relaymesh.config import (
    Settings,
    json_kind,
    read_json_config,
    unknown_key_error,
    validate_setting_value,
)
from relaymesh.errors import ValidationError

__all__ = [
    "RetryPolicies",
    "RetryPolicy",
    "backoff_bounds_ms",
    "backoff_delay_ms",
]

# JSON key of each overridable number, with the RetryPolicy attribute it sets.
# The keys are the settings keys, so ranges and messages are shared with them.
_ATTRIBUTE_BY_KEY = {
    "maxAttempts": "max_attempts",
    "baseBackoffMs": "base_backoff_ms",
    "maxBackoffMs": "max_backoff_ms",
    "retryJitterMaxMs": "jitter_max_ms",
}
_ENTRY_KEYS = ("id", *_ATTRIBUTE_BY_KEY)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt limit and backoff of one agent.

    Construction raises ValidationError on a bad value.
    """

    max_attempts: int
    base_backoff_ms: int
    max_backoff_ms: int
    jitter_max_ms: int

    def __post_init__(self) -> None:
        for key, attribute in _ATTRIBUTE_BY_KEY.items():
            value = getattr(self, attribute)
            checked = validate_setting_value(key, value, "RetryPolicy()")
            if type(checked) is not type(value):
                # The dataclass is frozen, so 2000.0 is replaced by 2000 here.
                object.__setattr__(self, attribute, checked)
        if self.base_backoff_ms > self.max_backoff_ms:
            raise ValidationError(
                f"RetryPolicy() has base_backoff_ms {self.base_backoff_ms} above "
                f"max_backoff_ms {self.max_backoff_ms}; the base must not exceed "
                f"the maximum"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """Build the default policy that agents without an override use."""
        return cls(
            max_attempts=settings.max_attempts,
            base_backoff_ms=settings.base_backoff_ms,
            max_backoff_ms=settings.max_backoff_ms,
            jitter_max_ms=settings.retry_jitter_max_ms,
        )


def _check_failed_attempt(failed_attempt: object) -> int:
    if isinstance(failed_attempt, bool) or not isinstance(failed_attempt, int):
        raise ValidationError(
            f"failed_attempt must be an integer, not {failed_attempt!r}"
        )
    if failed_attempt < 1:
        raise ValidationError(
            f"failed_attempt is {failed_attempt}, but attempts are numbered from 1"
        )
    return failed_attempt


def backoff_bounds_ms(policy: RetryPolicy, failed_attempt: int) -> tuple[int, int]:
    """Return the smallest and largest delay after attempt `failed_attempt` fails.

    The smallest is the capped exponential delay, and the largest adds the
    maximum jitter. Attempts are numbered from 1.
    """
    _check_failed_attempt(failed_attempt)
    # Doubling the base more than bit_length(max) times always passes the cap,
    # so limiting the exponent gives the same result without building a huge
    # integer for attempt numbers such as 10**9.
    doublings = min(failed_attempt - 1, policy.max_backoff_ms.bit_length())
    capped = min(policy.max_backoff_ms, policy.base_backoff_ms << doublings)
    return capped, capped + policy.jitter_max_ms


def backoff_delay_ms(
    policy: RetryPolicy, failed_attempt: int, rng: random.Random
) -> int:
    """Draw the delay before the next attempt, after attempt `failed_attempt` failed.

    Each call takes exactly one draw from `rng`, even with zero jitter, so that
    a seeded simulation replays the same sequence whatever the policy.
    """
    capped, _ = backoff_bounds_ms(policy, failed_attempt)
    return capped + rng.randint(0, policy.jitter_max_ms)


class RetryPolicies:
    """Retry policy of every agent: its override if it has one, else the default."""

    def __init__(
        self,
        default: RetryPolicy,
        overrides: Mapping[str, RetryPolicy] | None = None,
        source: str = "retry policies",
    ) -> None:
        self._default = default
        self._overrides = dict(overrides or {})
        self._source = source

    @classmethod
    def load(cls, path: Path, settings: Settings) -> RetryPolicies:
        """Load the overrides file at `path`; a missing file means no overrides.

        `path` is the file itself, normally `RootLayout(root).retry_policies_file`.
        """
        try:
            document = read_json_config(path)
        except FileNotFoundError:
            return cls(RetryPolicy.from_settings(settings), source=str(path))
        return cls.from_json(document, settings, str(path))

    @classmethod
    def from_json(
        cls, document: object, settings: Settings, source: str
    ) -> RetryPolicies:
        """Build policies from a parsed overrides document.

        `source` names the document (a file path, say) in error messages.
        """
        entries = _entries_of(document, source)
        default = RetryPolicy.from_settings(settings)

        overrides: dict[str, RetryPolicy] = {}
        first_index: dict[str, int] = {}
        for index, entry in enumerate(entries):
            agent_id, policy = _parse_entry(entry, index, default, source)
            if agent_id in first_index:
                raise ValidationError(
                    f"duplicate agent id {agent_id!r} in {source} at agents[{index}], "
                    f"already given at agents[{first_index[agent_id]}]; "
                    f"merge the two entries"
                )
            first_index[agent_id] = index
            overrides[agent_id] = policy
        return cls(default, overrides, source)

    @property
    def default(self) -> RetryPolicy:
        """Policy of every agent without an override."""
        return self._default

    def policy_for(self, agent_id: str) -> RetryPolicy:
        """Return the policy of `agent_id`: its override, else the default."""
        return self._overrides.get(agent_id, self._default)

    def overrides(self) -> dict[str, RetryPolicy]:
        """Return a copy of the per-agent overrides, keyed by agent id."""
        return dict(self._overrides)

    def validate_agent_ids(self, known_agent_ids: Iterable[str]) -> None:
        """Raise ValidationError if an override names an agent not in the list.

        Loading cannot check this alone because the agent registry is built
        separately. An override for a misspelt id would never apply.
        """
        known = sorted(known_agent_ids)
        for agent_id in self._overrides:
            if agent_id in known:
                continue
            close = difflib.get_close_matches(agent_id, known, n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
            else:
                hint = "known agents: " + (", ".join(known) or "none")
            raise ValidationError(
                f"retry policy in {self._source} names unknown agent "
                f"{agent_id!r}; {hint}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicies):
            return NotImplemented
        return (self._default, self._overrides) == (other._default, other._overrides)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RetryPolicies(default={self._default!r}, overrides={self._overrides!r})"
        )


def _entries_of(document: object, source: str) -> list[object]:
    """Return the `agents` list of an overrides document, checking its shape."""
    shape = '{"agents": [...]}'
    if not isinstance(document, dict):
        raise ValidationError(
            f"retry policies in {source} must be a JSON object like {shape}, "
            f"not {json_kind(document)}"
        )
    for key in document:
        if key != "agents":
            raise unknown_key_error("key", key, source, ("agents",))
    if "agents" not in document:
        raise ValidationError(
            f"retry policies in {source} have no 'agents' list; "
            f'write {{"agents": []}} for no overrides'
        )
    entries = document["agents"]
    if not isinstance(entries, list):
        raise ValidationError(
            f"'agents' in {source} must be a JSON array of policies, "
            f"not {json_kind(entries)}"
        )
    return entries


def _parse_entry(
    entry: object, index: int, default: RetryPolicy, source: str
) -> tuple[str, RetryPolicy]:
    """Validate one entry of the `agents` list and build its policy."""
    position = f"{source} at agents[{index}]"
    if not isinstance(entry, dict):
        raise ValidationError(
            f"retry policy in {position} must be a JSON object, not {json_kind(entry)}"
        )

    # The id comes first so that every later message can name it.
    if "id" not in entry:
        raise ValidationError(
            f"retry policy in {position} has no 'id'; each entry names its agent"
        )
    agent_id = entry["id"]
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ValidationError(
            f"'id' in {position} must be a non-empty string, not {agent_id!r}"
        )
    if agent_id != agent_id.strip():
        raise ValidationError(
            f"'id' {agent_id!r} in {position} must not start or end with whitespace"
        )
    where = f"{position} (id {agent_id!r})"

    for key in entry:
        if key not in _ENTRY_KEYS:
            raise unknown_key_error("retry policy key", key, where, _ENTRY_KEYS)

    values = {
        attribute: getattr(default, attribute)
        for attribute in _ATTRIBUTE_BY_KEY.values()
    }
    for key, attribute in _ATTRIBUTE_BY_KEY.items():
        if key in entry:
            values[attribute] = validate_setting_value(key, entry[key], where)

    base, maximum = values["base_backoff_ms"], values["max_backoff_ms"]
    if base > maximum:
        base_origin = "" if "baseBackoffMs" in entry else ", from the settings"
        max_origin = "" if "maxBackoffMs" in entry else ", from the settings"
        raise ValidationError(
            f"'baseBackoffMs' ({base}{base_origin}) in {where} is above "
            f"'maxBackoffMs' ({maximum}{max_origin}); set maxBackoffMs to at "
            f"least {base} in this entry"
        )
    return agent_id, RetryPolicy(**values)
