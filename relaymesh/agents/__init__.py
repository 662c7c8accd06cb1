"""Agents: what runs a step, and the registry that finds one by id.

The worker calls every agent through one protocol (`Agent.run` takes a
`StepContext` and returns an `AgentResult`). Two kinds exist: the built-ins
`echo` and `fail`, and script agents, which run an operator's command as one
child process per attempt. The registry holds both for one root.

The names below are the public surface of the package; a test pins them.
"""

from relaymesh.agents.base import Agent, AgentResult, StepContext, agent_stdin
from relaymesh.agents.builtin import BUILTIN_AGENT_IDS, EchoAgent, FailAgent
from relaymesh.agents.registry import AgentRegistry, load_script_specs
from relaymesh.agents.script import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_SCRIPT_TIMEOUT_MS,
    ScriptAgent,
    ScriptSpec,
)

__all__ = [
    "BUILTIN_AGENT_IDS",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_SCRIPT_TIMEOUT_MS",
    "Agent",
    "AgentRegistry",
    "AgentResult",
    "EchoAgent",
    "FailAgent",
    "ScriptAgent",
    "ScriptSpec",
    "StepContext",
    "agent_stdin",
    "load_script_specs",
]
