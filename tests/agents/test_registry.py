"""Loading script agents from a root, and looking agents up by id."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from relaymesh.agents import (
    AgentRegistry,
    EchoAgent,
    ScriptAgent,
    StepContext,
    load_script_specs,
)
from relaymesh.errors import ValidationError
from relaymesh.paths import RootLayout


def write_scripts(root: Path, document: object) -> Path:
    path = RootLayout(root).scripts_file
    path.parent.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_text(text)
    return path


def agents(*entries: dict) -> dict:
    return {"agents": list(entries)}


def test_missing_file_means_only_builtins(tmp_path):
    layout = RootLayout(tmp_path)
    assert load_script_specs(layout) == []
    assert AgentRegistry.load(layout).ids() == ["echo", "fail"]


def test_entry_paths_resolve_against_root(tmp_path):
    (tmp_path / "agents" / "scripts").mkdir(parents=True)
    script = tmp_path / "agents" / "scripts" / "count.py"
    script.write_text("print(1)\n")
    write_scripts(
        tmp_path,
        agents(
            {
                "id": "count-lines",
                "command": ["python3", "agents/scripts/count.py", "--fast"],
                "timeoutMs": 5000,
                "env": {"K": "V"},
                "cwd": "work",
            },
            {"id": "plain", "command": ["true"]},
        ),
    )
    count, plain = load_script_specs(RootLayout(tmp_path))

    assert count.agent_id == "count-lines"
    assert count.command == ("python3", str(script), "--fast")
    assert count.timeout_ms == 5000
    assert dict(count.env) == {"K": "V"}
    assert count.cwd == tmp_path / "work"

    assert plain.command == ("true",)
    assert plain.timeout_ms == 60_000
    assert dict(plain.env) == {}
    assert plain.cwd == tmp_path


def test_tokens_outside_root_stay_verbatim(tmp_path):
    root = tmp_path / "root"
    (root / "agents").mkdir(parents=True)
    (tmp_path / "outside.py").write_text("")
    write_scripts(
        root, agents({"id": "a", "command": ["python3", "../outside.py", "agents"]})
    )
    (spec,) = load_script_specs(RootLayout(root))
    assert spec.command == ("python3", "../outside.py", "agents")


def test_long_inline_program_token_is_kept(tmp_path):
    program = "print(" + "1 + " * 200 + "1)"
    write_scripts(tmp_path, agents({"id": "a", "command": ["python3", "-c", program]}))
    (spec,) = load_script_specs(RootLayout(tmp_path))
    assert spec.command == ("python3", "-c", program)


def test_absolute_cwd_is_kept(tmp_path):
    write_scripts(tmp_path, agents({"id": "a", "command": ["true"], "cwd": "/tmp"}))
    (spec,) = load_script_specs(RootLayout(tmp_path))
    assert spec.cwd == Path("/tmp")


SCRIPTS = "agents/scripts.json"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"agents": [', "not valid JSON at line 1, column 13"),
        ('{\n  "agents": [}\n', "not valid JSON at line 2, column 14"),
        ("[]", 'expected an object with the single key "agents", found a list'),
        ({"agents": [], "extra": 1}, "found keys agents, extra"),
        ({}, "found no keys"),
        ({"agents": {}}, '"agents" must be a list of objects, found an object'),
        (agents("x"), "agents[0]: must be an object, found a string"),
        (agents({"command": ["true"]}), 'agents[0]: missing "id"'),
        (
            agents({"id": "has space", "command": ["true"]}),
            "agents[0]: id 'has space' is not allowed; use 1 to 64 letters",
        ),
        (agents({"id": "a" * 65, "command": ["true"]}), "is not allowed"),
        (agents({"id": "", "command": ["true"]}), "id '' is not allowed"),
        (agents({"id": 7, "command": ["true"]}), "id 7 is not allowed"),
        (
            agents({"id": "ok", "command": ["true"], "timeout": 5}),
            "agents[0] (id 'ok'): unknown key 'timeout' "
            "(allowed: command, cwd, env, id, timeoutMs)",
        ),
        (agents({"id": "ok"}), "(id 'ok'): \"command\" must be a non-empty list"),
        (agents({"id": "ok", "command": []}), "non-empty list of non-empty strings"),
        (agents({"id": "ok", "command": "true"}), "found 'true'"),
        (agents({"id": "ok", "command": ["true", ""]}), "non-empty strings"),
        (agents({"id": "ok", "command": ["true", 3]}), "non-empty strings"),
        (agents({"id": "ok", "command": ["a\u0000b"]}), "without NUL characters"),
        (
            agents({"id": "ok", "command": ["true"], "timeoutMs": 99}),
            '"timeoutMs" must be an integer from 100 to 86400000, found 99',
        ),
        (
            agents({"id": "ok", "command": ["true"], "timeoutMs": 86_400_001}),
            "found 86400001",
        ),
        (agents({"id": "ok", "command": ["true"], "timeoutMs": "500"}), "found '500'"),
        (agents({"id": "ok", "command": ["true"], "timeoutMs": True}), "found True"),
        (agents({"id": "ok", "command": ["true"], "timeoutMs": 500.0}), "found 500.0"),
        (
            agents({"id": "ok", "command": ["true"], "env": {"K": 1}}),
            '"env" must be an object whose values are strings',
        ),
        (agents({"id": "ok", "command": ["true"], "env": ["K"]}), '"env" must be'),
        (
            agents({"id": "ok", "command": ["true"], "env": {"K": "a\u0000"}}),
            "strings without NUL",
        ),
        (
            agents({"id": "ok", "command": ["true"], "env": {"A=B": "x"}}),
            "invalid variable name 'A=B'",
        ),
        (agents({"id": "ok", "command": ["true"], "cwd": ""}), '"cwd" must be'),
        (agents({"id": "ok", "command": ["true"], "cwd": 1}), '"cwd" must be'),
        (
            agents({"id": "echo", "command": ["true"]}),
            "agents[0] (id 'echo'): agent id 'echo' is built in; choose another id",
        ),
        (
            agents({"id": "fail", "command": ["true"]}),
            "agent id 'fail' is built in",
        ),
        (
            agents(
                {"id": "a", "command": ["true"]},
                {"id": "b", "command": ["true"]},
                {"id": "a", "command": ["false"]},
            ),
            "agents[2] (id 'a'): duplicate id, already declared by agents[0]",
        ),
    ],
)
def test_bad_file_error_names_entry(tmp_path, document, expected):
    path = write_scripts(tmp_path, document)
    with pytest.raises(ValidationError) as caught:
        load_script_specs(RootLayout(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_bad_file_registers_nothing(tmp_path):
    write_scripts(
        tmp_path,
        agents({"id": "good", "command": ["true"]}, {"id": "bad", "command": []}),
    )
    with pytest.raises(ValidationError, match=r"agents\[1\] \(id 'bad'\)"):
        AgentRegistry.load(RootLayout(tmp_path))


def test_registry_lookups(tmp_path):
    write_scripts(
        tmp_path,
        agents(
            {"id": "zeta", "command": ["true"], "timeoutMs": 2500},
            {"id": "alpha", "command": ["false"]},
        ),
    )
    registry = AgentRegistry.load(RootLayout(tmp_path))

    assert registry.ids() == ["alpha", "echo", "fail", "zeta"]
    assert isinstance(registry.get("echo"), EchoAgent)
    assert isinstance(registry.require("zeta"), ScriptAgent)
    assert registry.get("nope") is None
    assert "alpha" in registry
    assert "nope" not in registry
    with pytest.raises(ValidationError) as caught:
        registry.require("nope")
    assert str(caught.value) == "unknown agent 'nope' (known: alpha, echo, fail, zeta)"


def test_describe_lists_every_agent_sorted(tmp_path):
    write_scripts(tmp_path, agents({"id": "zeta", "command": ["true", "-x"]}))
    rows = AgentRegistry.load(RootLayout(tmp_path)).describe()
    assert rows == [
        {"agentId": "echo", "kind": "builtin", "command": None, "timeoutMs": None},
        {"agentId": "fail", "kind": "builtin", "command": None, "timeoutMs": None},
        {
            "agentId": "zeta",
            "kind": "script",
            "command": ["true", "-x"],
            "timeoutMs": 60_000,
        },
    ]


def test_registry_rejects_duplicate_ids():
    with pytest.raises(ValidationError, match="'echo' is registered twice"):
        AgentRegistry([EchoAgent(), EchoAgent()])


async def test_script_path_resolves_from_another_working_folder(tmp_path):
    (tmp_path / "agents" / "scripts").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "agents" / "scripts" / "where.py").write_text(
        "import os\nprint(os.path.basename(os.getcwd()))\n"
    )
    write_scripts(
        tmp_path,
        agents(
            {
                "id": "where",
                "command": [sys.executable, "agents/scripts/where.py"],
                "cwd": "work",
            }
        ),
    )
    agent = AgentRegistry.load(RootLayout(tmp_path)).require("where")
    context = StepContext(
        task_id="t",
        step_id="s",
        step_name="main",
        attempt=1,
        trace_id="0" * 32,
        span_id="1" * 16,
        parent_span_id=None,
        traceparent=f"00-{'0' * 32}-{'1' * 16}-01",
        input="",
    )
    result = await agent.run(context)
    assert result.ok, result.error
    assert result.output == "work"
