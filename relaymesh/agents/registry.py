"""The agents of a root: the built-ins plus the operator's script agents.

Script agents are declared in `<root>/agents/scripts.json`::

    {"agents": [
      {"id": "count-lines",
       "command": ["python3", "agents/scripts/count_lines.py"],
       "timeoutMs": 60000,
       "env": {"LC_ALL": "C.UTF-8"},
       "cwd": "work"}
    ]}

Only `id` and `command` are required. A missing file means no script agents.

The file is read strictly: an unknown key, a wrong type or a duplicate id is
an error naming the file, the entry and what is allowed, and nothing is
registered. Silently skipping a bad entry, as the earlier implementation
did, turns a typo into "unknown agent" errors far from their cause. A script
agent may not take the id of a built-in: replacing `echo` would quietly
change what every smoke test and health check exercises.

Paths are made independent of the directory a command is started from:

- a command token that is a relative path to an existing file inside the
  root becomes that file's absolute path, so `agents/scripts/count.py` works
  from any working folder (other tokens, such as `python3` or `--verbose`,
  are kept as written);
- `cwd` is taken relative to the root, and defaults to the root itself.
  Whether it exists is checked when a step starts the script, where a
  missing folder fails that step with a message naming it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from relaymesh.agents.base import Agent
from relaymesh.agents.builtin import BUILTIN_AGENT_IDS, builtin_agents
from relaymesh.agents.script import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_SCRIPT_TIMEOUT_MS,
    ScriptAgent,
    ScriptSpec,
)
from relaymesh.errors import ValidationError
from relaymesh.paths import RootLayout

__all__ = ["AgentRegistry", "load_script_specs"]

AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TIMEOUT_MS_MIN = 100
TIMEOUT_MS_MAX = 86_400_000
_ENTRY_KEYS = ("command", "cwd", "env", "id", "timeoutMs")


def load_script_specs(layout: RootLayout) -> list[ScriptSpec]:
    """Read and validate `<root>/agents/scripts.json` (no file: no script agents)."""
    path = layout.scripts_file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ValidationError(f"{path}: cannot read script agents: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: "
            f"{error.msg}"
        ) from None
    except RecursionError:
        raise ValidationError(f"{path}: JSON is nested too deeply") from None
    except ValueError as error:  # an integer of more than 4300 digits, say
        raise ValidationError(f"{path}: invalid JSON: {error}") from None

    if not isinstance(document, dict) or set(document) != {"agents"}:
        if isinstance(document, dict):
            found = "keys " + ", ".join(sorted(document)) if document else "no keys"
        else:
            found = _kind(document)
        raise ValidationError(
            f'{path}: expected an object with the single key "agents", found {found}'
        )
    entries = document["agents"]
    if not isinstance(entries, list):
        raise ValidationError(
            f'{path}: "agents" must be a list of objects, found {_kind(entries)}'
        )

    specs: list[ScriptSpec] = []
    first_index: dict[str, int] = {}
    root = Path(os.path.abspath(layout.root))
    for index, entry in enumerate(entries):
        spec = _parse_entry(path, index, entry, root)
        if spec.agent_id in first_index:
            raise ValidationError(
                f"{path}: agents[{index}] (id '{spec.agent_id}'): duplicate id, "
                f"already declared by agents[{first_index[spec.agent_id]}]; "
                f"ids must be unique"
            )
        first_index[spec.agent_id] = index
        specs.append(spec)
    return specs


def _parse_entry(path: Path, index: int, entry: Any, root: Path) -> ScriptSpec:
    where = f"{path}: agents[{index}]"
    if not isinstance(entry, dict):
        raise ValidationError(f"{where}: must be an object, found {_kind(entry)}")

    # The id comes first so that every later message can name the entry.
    agent_id = entry.get("id")
    if agent_id is None:
        raise ValidationError(f'{where}: missing "id"')
    if not isinstance(agent_id, str) or not AGENT_ID_PATTERN.fullmatch(agent_id):
        raise ValidationError(
            f"{where}: id {agent_id!r} is not allowed; use 1 to 64 letters, "
            f"digits, '_', '.' or '-'"
        )
    where = f"{where} (id '{agent_id}')"
    if agent_id in BUILTIN_AGENT_IDS:
        raise ValidationError(
            f"{where}: agent id '{agent_id}' is built in; choose another id"
        )
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise ValidationError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_ENTRY_KEYS)})"
        )

    command = entry.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(
            isinstance(token, str) and token and "\0" not in token for token in command
        )
    ):
        raise ValidationError(
            f'{where}: "command" must be a non-empty list of non-empty strings '
            f"without NUL characters, found {command!r}"
        )

    timeout_ms = entry.get("timeoutMs", DEFAULT_SCRIPT_TIMEOUT_MS)
    if (
        isinstance(timeout_ms, bool)
        or not isinstance(timeout_ms, int)
        or not TIMEOUT_MS_MIN <= timeout_ms <= TIMEOUT_MS_MAX
    ):
        raise ValidationError(
            f'{where}: "timeoutMs" must be an integer from {TIMEOUT_MS_MIN} to '
            f"{TIMEOUT_MS_MAX}, found {timeout_ms!r}"
        )

    env = entry.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(value, str) and "\0" not in value for value in env.values()
    ):
        raise ValidationError(
            f'{where}: "env" must be an object whose values are strings without NUL '
            f"characters, found {env!r}"
        )
    bad_names = [name for name in env if not name or "=" in name or "\0" in name]
    if bad_names:
        raise ValidationError(
            f'{where}: "env" has an invalid variable name {bad_names[0]!r}; '
            f"names must be non-empty without '=' or NUL"
        )

    cwd = entry.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise ValidationError(
            f'{where}: "cwd" must be a non-empty string (a folder, absolute or '
            f"relative to the root), found {cwd!r}"
        )

    return ScriptSpec(
        agent_id=agent_id,
        command=tuple(_resolve_token(token, root) for token in command),
        timeout_ms=timeout_ms,
        env=dict(env),
        cwd=root / cwd if cwd is not None else root,
    )


def _resolve_token(token: str, root: Path) -> str:
    """Return the absolute path for a relative path to a file inside the root."""
    if Path(token).is_absolute():
        return token
    # Lexical normalisation keeps symlinked scripts working while still
    # refusing tokens such as "../x" that climb out of the root.
    candidate = Path(os.path.normpath(root / token))
    try:
        is_file = candidate.is_relative_to(root) and candidate.is_file()
    except OSError:
        # A long inline program ("python3 -c '...'") is no file name at all.
        is_file = False
    return str(candidate) if is_file else token


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return "a number"
    return names.get(type(value), type(value).__name__)


class AgentRegistry:
    """Agent id to agent, fixed when built; reloading builds a new registry."""

    def __init__(self, agents: Iterable[Agent]) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            if agent.agent_id in self._agents:
                raise ValidationError(
                    f"agent id '{agent.agent_id}' is registered twice; "
                    f"ids must be unique"
                )
            self._agents[agent.agent_id] = agent

    @classmethod
    def load(
        cls,
        layout: RootLayout,
        *,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> AgentRegistry:
        """Build the registry of the built-in agents and the root's script agents."""
        scripts = [
            ScriptAgent(spec, max_output_bytes=max_output_bytes)
            for spec in load_script_specs(layout)
        ]
        return cls([*builtin_agents(), *scripts])

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def require(self, agent_id: str) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise ValidationError(
                f"unknown agent '{agent_id}' (known: {', '.join(self.ids())})"
            )
        return agent

    def ids(self) -> list[str]:
        return sorted(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def describe(self) -> list[dict[str, object]]:
        """Return one row per agent, sorted by id, for the agent listing."""
        rows: list[dict[str, object]] = []
        for agent_id in self.ids():
            agent = self._agents[agent_id]
            spec = agent.spec if isinstance(agent, ScriptAgent) else None
            rows.append(
                {
                    "agentId": agent_id,
                    "kind": agent.kind,
                    "command": list(spec.command) if spec else None,
                    "timeoutMs": spec.timeout_ms if spec else None,
                }
            )
        return rows
