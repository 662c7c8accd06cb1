"""Workflow files: parse and validate a DAG of steps before anything is stored.

A workflow file is a JSON object with one key, `steps`, a list of steps:

    {"steps": [
      {"id": "list", "agent": "list-python-files", "input": "src"},
      {"id": "count", "agent": "count-lines", "input": "", "dependsOn": ["list"],
       "priority": "high"}
    ]}

Every problem is reported with the step it concerns and what is allowed, and
all of them are found before the store or the bus is touched: duplicate or
malformed ids, unknown agents, dependencies on unknown steps, cycles (with
the path that closes the loop), and inputs over the payload limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from relaymesh.errors import ValidationError
from relaymesh.paths import PRIORITIES
from relaymesh.store.records import NewStep

__all__ = ["MAX_WORKFLOW_STEPS", "STEP_ID_PATTERN", "parse_priority", "parse_workflow"]

MAX_WORKFLOW_STEPS = 10_000
STEP_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STEP_KEYS = ("id", "agent", "input", "priority", "dependsOn")


def parse_priority(value: object, where: str) -> str:
    """Return "high", "normal" or "low" for a case-insensitive priority name."""
    if not isinstance(value, str) or value.lower() not in PRIORITIES:
        raise ValidationError(
            f"{where}: priority {value!r} is not one of high, normal, low"
        )
    return value.lower()


def load_workflow_file(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"workflow file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValidationError(f"cannot read workflow file {path}: {error}") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys(path))
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"workflow file {path} is not valid JSON: {error.msg}"
            f" at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise ValidationError(f"workflow file {path} is nested too deeply") from None
    except ValueError as error:  # an integer of more than 4300 digits, say
        raise ValidationError(
            f"workflow file {path} is not valid JSON: {error}"
        ) from None


def _unique_keys(path: Path):
    """A json object hook that rejects a key given twice in one object."""

    def build(pairs: list[tuple[str, object]]) -> dict:
        document: dict = {}
        for key, value in pairs:
            if key in document:
                raise ValidationError(
                    f"workflow file {path} gives the key {key!r} twice"
                )
            document[key] = value
        return document

    return build


def parse_workflow(
    document: object,
    source: str,
    agent_exists: Callable[[str], bool],
    known_agents: Callable[[], list[str]],
    payload_max_bytes: int,
) -> list[NewStep]:
    """Validate a parsed workflow document and return its steps in file order."""
    if not isinstance(document, dict):
        raise ValidationError(
            f"{source}: a workflow must be a JSON object with 'steps'"
        )
    extra = sorted(set(document) - {"steps"})
    if extra:
        raise ValidationError(
            f"{source}: unknown top-level key {extra[0]!r}; the only key is 'steps'"
        )
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ValidationError(f"{source}: 'steps' must be a non-empty list of steps")
    if len(raw_steps) > MAX_WORKFLOW_STEPS:
        raise ValidationError(
            f"{source}: {len(raw_steps)} steps; a workflow may have at most"
            f" {MAX_WORKFLOW_STEPS}"
        )

    steps = [
        _parse_step(raw, index, source, agent_exists, known_agents, payload_max_bytes)
        for index, raw in enumerate(raw_steps)
    ]
    names = [step.name for step in steps]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValidationError(f"{source}: duplicate step id {name!r}")
        seen.add(name)
    for step in steps:
        for dependency in step.depends_on:
            if dependency not in seen:
                others = ", ".join(sorted(seen - {step.name})) or "none"
                raise ValidationError(
                    f"{source}: step {step.name!r} depends on unknown step"
                    f" {dependency!r} (known: {others})"
                )
    cycle = find_cycle({step.name: step.depends_on for step in steps})
    if cycle:
        raise ValidationError(
            f"{source}: workflow has a dependency cycle: {' -> '.join(cycle)}"
            " (each step depends on the next)"
        )
    return steps


def _parse_step(
    raw: object,
    index: int,
    source: str,
    agent_exists: Callable[[str], bool],
    known_agents: Callable[[], list[str]],
    payload_max_bytes: int,
) -> NewStep:
    where = f"{source}: step #{index + 1}"
    if not isinstance(raw, dict):
        raise ValidationError(f"{where} must be a JSON object")
    unknown = sorted(set(raw) - set(STEP_KEYS))
    if unknown:
        raise ValidationError(
            f"{where} has unknown key {unknown[0]!r} (allowed: {', '.join(STEP_KEYS)})"
        )
    name = raw.get("id")
    if not isinstance(name, str) or not STEP_ID_PATTERN.fullmatch(name):
        raise ValidationError(
            f"{where}: id {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    where = f"{source}: step {name!r}"
    agent = raw.get("agent")
    if not isinstance(agent, str) or not agent:
        raise ValidationError(f"{where}: 'agent' must be a non-empty string")
    if not agent_exists(agent):
        raise ValidationError(
            f"{where}: unknown agent {agent!r} (known: {', '.join(known_agents())})"
        )
    text = raw.get("input", "")
    if not isinstance(text, str):
        raise ValidationError(
            f"{where}: 'input' must be a string (got {type(text).__name__});"
            " encode structured input as a JSON string"
        )
    size = len(text.encode("utf-8"))
    if size > payload_max_bytes:
        raise ValidationError(
            f"{where}: input is {size} bytes; the limit is {payload_max_bytes}"
            " (payloadMaxBytes)"
        )
    priority = parse_priority(raw.get("priority", "normal"), where)
    depends_on = raw.get("dependsOn", [])
    if not isinstance(depends_on, list) or not all(
        isinstance(item, str) for item in depends_on
    ):
        raise ValidationError(f"{where}: 'dependsOn' must be a list of step ids")
    if name in depends_on:
        raise ValidationError(f"{where} depends on itself")
    if len(set(depends_on)) != len(depends_on):
        raise ValidationError(f"{where}: 'dependsOn' lists a step twice")
    return NewStep(name, agent, priority, text, tuple(depends_on))


def find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str] | None:
    """Return one cycle as a path that starts and ends at the same step, or None.

    Iterative depth-first search with three colours, so a 10,000-step chain
    does not hit Python's recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in graph:
        if colour[start] != white:
            continue
        path = [start]
        iterators = [iter(graph[start])]
        colour[start] = grey
        while iterators:
            advanced = False
            for successor in iterators[-1]:
                if colour[successor] == grey:
                    return path[path.index(successor) :] + [successor]
                if colour[successor] == white:
                    colour[successor] = grey
                    path.append(successor)
                    iterators.append(iter(graph[successor]))
                    advanced = True
                    break
            if not advanced:
                colour[path.pop()] = black
                iterators.pop()
    return None
