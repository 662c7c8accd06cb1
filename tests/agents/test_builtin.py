"""The built-in agents, the result record and the stdin contract."""

from __future__ import annotations

import json

import pytest

import relaymesh.agents
from relaymesh.agents import (
    AgentResult,
    EchoAgent,
    FailAgent,
    StepContext,
    agent_stdin,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def make_context(
    input_text: str = "hello", dependencies: dict[str, str] | None = None
) -> StepContext:
    return StepContext(
        task_id="tsk_1",
        step_id="stp_tsk_1_main",
        step_name="main",
        attempt=1,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=None,
        traceparent=f"00-{TRACE_ID}-{SPAN_ID}-01",
        input=input_text,
        dependency_outputs=dependencies or {},
    )


def test_public_names_are_pinned():
    assert sorted(relaymesh.agents.__all__) == sorted(
        [
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
    )
    for name in relaymesh.agents.__all__:
        assert hasattr(relaymesh.agents, name), name


async def test_echo_reports_ids_trace_and_input():
    result = await EchoAgent().run(make_context("payload"))
    assert result.ok
    assert result.outcome == "SUCCESS"
    assert result.error == ""
    assert json.loads(result.output) == {
        "agent": "echo",
        "taskId": "tsk_1",
        "stepId": "stp_tsk_1_main",
        "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01",
        "received": "payload",
    }


async def test_echo_output_is_valid_json_for_any_characters():
    nasty = 'quote " backslash \\ tab \t nul \x00 newline \n unicode é ✓ \u2028'
    result = await EchoAgent().run(make_context(nasty))
    assert json.loads(result.output)["received"] == nasty


async def test_echo_includes_dependency_outputs_only_when_present():
    plain = json.loads((await EchoAgent().run(make_context())).output)
    assert "dependencies" not in plain
    context = make_context("x", {"b": "out-b", "a": "out-a"})
    with_deps = json.loads((await EchoAgent().run(context)).output)
    assert with_deps["dependencies"] == {"a": "out-a", "b": "out-b"}


async def test_fail_agent_always_fails_with_its_message():
    for attempt in (1, 2):
        result = await FailAgent().run(make_context(str(attempt)))
        assert not result.ok
        assert result.outcome == "FAILED"
        assert result.error == "intentional failure from fail agent"


def test_builtin_agents_declare_id_and_kind():
    assert (EchoAgent.agent_id, EchoAgent.kind) == ("echo", "builtin")
    assert (FailAgent.agent_id, FailAgent.kind) == ("fail", "builtin")


def test_stdin_without_dependencies_is_the_input_verbatim():
    assert agent_stdin(make_context('{"not": "wrapped"}\n')) == '{"not": "wrapped"}\n'


def test_stdin_with_dependencies_is_sorted_json():
    context = make_context("0/4", {"zeta": "z", "alpha": '["a.py"]'})
    text = agent_stdin(context)
    assert json.loads(text) == {
        "input": "0/4",
        "dependencies": {"alpha": '["a.py"]', "zeta": "z"},
    }
    assert text.index('"alpha"') < text.index('"zeta"')
    assert text.index('"dependencies"') < text.index('"input"')


@pytest.mark.parametrize(
    "fields",
    [
        {"ok": True, "outcome": "FAILED"},
        {"ok": True, "error": "boom"},
        {"ok": False, "outcome": "SUCCESS"},
        {"ok": False, "outcome": "CRASHED"},
    ],
)
def test_agent_result_rejects_inconsistent_fields(fields):
    with pytest.raises(ValueError):
        AgentResult(**fields)


def test_failure_folds_the_error_onto_one_line():
    result = AgentResult.failure("first line\nsecond\tline  ", outcome="TIMEOUT")
    assert result.error == "first line second line"
    assert result.outcome == "TIMEOUT"
    assert not result.ok
