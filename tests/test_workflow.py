"""Tests of relaymesh/workflow.py: every way a workflow file can be wrong.

Each bad file is submitted through the runtime, and the test checks both the
message (it names the step, the bad value and what is allowed) and that the
store and the bus are exactly as they were. The earlier implementation wrote
payload files before it finished checking, so "changes nothing" is checked
on every file of the root, not only on the database.

The size tests make sure validation is iterative: a chain of thousands of
steps is ordinary input and must not hit Python's recursion limit.
"""

from __future__ import annotations

import json

import pytest

from relaymesh.errors import ValidationError
from relaymesh.workflow import (
    MAX_WORKFLOW_STEPS,
    find_cycle,
    load_workflow_file,
    parse_priority,
    parse_workflow,
)


def step(name: str, *depends_on: str, agent: str = "echo", **extra) -> dict:
    document = {"id": name, "agent": agent, "input": f"input of {name}"}
    if depends_on:
        document["dependsOn"] = list(depends_on)
    document.update(extra)
    return document


def rejected(driver, document: object) -> str:
    """Submit `document` as a workflow file; return the error, checking no change."""
    driver.runtime.submit("echo", "unrelated task already in the store")
    before = driver.snapshot()
    path = driver.write_workflow(document)
    with pytest.raises(ValidationError) as caught:
        driver.runtime.submit_workflow(path)
    assert driver.snapshot() == before
    message = str(caught.value)
    assert "\n" not in message
    return message


def parse(document: object, agents=("echo", "fail"), limit: int = 1000):
    return parse_workflow(
        document,
        "wf.json",
        agent_exists=lambda agent: agent in agents,
        known_agents=lambda: sorted(agents),
        payload_max_bytes=limit,
    )


# Rejected files, through the runtime -------------------------------------------


def test_cycle_is_rejected_with_its_path(driver):
    message = rejected(
        driver,
        {"steps": [step("a", "c"), step("b", "a"), step("c", "b"), step("d")]},
    )
    assert "cycle" in message
    assert "a -> c -> b -> a" in message


def test_cycle_behind_an_acyclic_prefix_reports_only_the_loop(driver):
    message = rejected(
        driver,
        {
            "steps": [
                step("start"),
                step("x", "start", "z"),
                step("y", "x"),
                step("z", "y"),
            ]
        },
    )
    assert "x -> z -> y -> x" in message
    assert "start ->" not in message


def test_self_dependency_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a", "a")]})
    assert "'a' depends on itself" in message


def test_unknown_dependency_names_it_and_the_known_ids(driver):
    message = rejected(driver, {"steps": [step("a"), step("c"), step("b", "a", "x")]})
    assert "step 'b' depends on unknown step 'x'" in message
    assert "(known: a, c)" in message


def test_unknown_agent_names_it_and_the_known_agents(driver):
    message = rejected(driver, {"steps": [step("a"), step("b", "a", agent="nope")]})
    assert "step 'b'" in message
    assert "unknown agent 'nope'" in message
    assert "echo" in message
    assert "fail" in message


def test_duplicate_ids_are_rejected(driver):
    message = rejected(driver, {"steps": [step("a"), step("b"), step("a")]})
    assert "duplicate step id 'a'" in message


@pytest.mark.parametrize(
    "bad_id", ["", "has space", "x" * 65, "slash/name", "ünï", None, 7, ["a"]]
)
def test_bad_ids_are_rejected(driver, bad_id):
    document = {"steps": [{"id": bad_id, "agent": "echo", "input": ""}]}
    message = rejected(driver, document)
    assert "step #1" in message
    assert repr(bad_id) in message
    assert "1-64 characters" in message


def test_missing_id_is_rejected(driver):
    message = rejected(driver, {"steps": [{"agent": "echo", "input": "x"}]})
    assert "step #1: id None" in message


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"a": 1}, "dict"), (["a"], "list"), (5, "int"), (None, "NoneType")],
)
def test_non_string_input_is_rejected(driver, value, kind):
    message = rejected(driver, {"steps": [step("a", input=value)]})
    assert "step 'a'" in message
    assert f"'input' must be a string (got {kind})" in message


def test_extra_top_level_key_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a")], "name": "nightly"})
    assert "unknown top-level key 'name'" in message
    assert "'steps'" in message


def test_extra_step_key_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a"), step("b", deps=["a"])]})
    assert "step #2 has unknown key 'deps'" in message
    assert "dependsOn" in message


@pytest.mark.parametrize(
    "document", [{"steps": []}, {}, {"steps": "a"}, {"steps": None}]
)
def test_empty_or_missing_steps_are_rejected(driver, document):
    message = rejected(driver, document)
    assert "'steps' must be a non-empty list" in message


@pytest.mark.parametrize("document", [[step("a")], '"steps"', 3])
def test_document_that_is_not_an_object_is_rejected(driver, document):
    message = rejected(driver, document)
    assert "must be a JSON object" in message


def test_step_that_is_not_an_object_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a"), "b"]})
    assert "step #2 must be a JSON object" in message


def test_bad_priority_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a", priority="urgent")]})
    assert "step 'a'" in message
    assert "'urgent' is not one of high, normal, low" in message


@pytest.mark.parametrize("depends_on", ["a", [1], {"a": 1}])
def test_malformed_depends_on_is_rejected(driver, depends_on):
    message = rejected(driver, {"steps": [step("a"), step("b", dependsOn=depends_on)]})
    assert "'dependsOn' must be a list of step ids" in message


def test_repeated_dependency_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a"), step("b", "a", "a")]})
    assert "lists a step twice" in message


def test_empty_agent_is_rejected(driver):
    message = rejected(driver, {"steps": [step("a", agent="")]})
    assert "'agent' must be a non-empty string" in message


def test_malformed_json_reports_line_and_column(driver):
    text = '{"steps": [\n  {"id": "a", "agent": "echo", "input": "x"},\n  {"id": }\n]}'
    message = rejected(driver, text)
    assert "is not valid JSON" in message
    assert "line 3 column 10" in message


def test_invalid_utf8_file_is_rejected(driver):
    path = driver.write_workflow("{}")
    path.write_bytes(b'{"steps": "\xff"}')
    with pytest.raises(ValidationError, match="cannot read workflow file"):
        driver.runtime.submit_workflow(path)
    assert driver.row_counts()["tasks"] == 0


def test_first_error_in_file_order_is_reported(driver):
    # Both steps are bad; the message is about the first.
    message = rejected(driver, {"steps": [step("a", agent="nope"), step("b", "zzz")]})
    assert "step 'a'" in message
    assert "zzz" not in message


# Accepted files ------------------------------------------------------------------


def test_valid_workflow_keeps_file_order_defaults_and_priorities():
    steps = parse(
        {
            "steps": [
                {"id": "fetch", "agent": "echo", "input": "url"},
                {
                    "id": "parse",
                    "agent": "echo",
                    "dependsOn": ["fetch"],
                    "priority": "HIGH",
                },
                {
                    "id": "store.v2",
                    "agent": "fail",
                    "input": "",
                    "dependsOn": ["parse"],
                },
            ]
        }
    )
    assert [s.name for s in steps] == ["fetch", "parse", "store.v2"]
    assert [s.priority for s in steps] == ["normal", "high", "normal"]
    assert steps[1].input_text == ""
    assert steps[2].depends_on == ("parse",)


def test_dependency_may_be_declared_after_its_dependant():
    steps = parse({"steps": [step("b", "a"), step("a")]})
    assert [s.name for s in steps] == ["b", "a"]


def test_diamond_is_not_a_cycle():
    steps = parse(
        {"steps": [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]}
    )
    assert len(steps) == 4


def test_input_limit_is_in_bytes_and_inclusive():
    assert parse({"steps": [step("a", input="é" * 5)]}, limit=10)
    with pytest.raises(ValidationError, match="input is 11 bytes; the limit is 10"):
        parse({"steps": [step("a", input="é" * 5 + "!")]}, limit=10)


def test_chain_of_5000_steps_validates_without_recursion_error():
    chain = [step("s0")] + [step(f"s{i}", f"s{i - 1}") for i in range(1, 5000)]
    steps = parse({"steps": chain})
    assert len(steps) == 5000
    assert steps[-1].depends_on == ("s4998",)


def test_chain_of_5000_steps_closing_a_cycle_reports_the_whole_loop():
    chain = [step("s0", "s4999")] + [step(f"s{i}", f"s{i - 1}") for i in range(1, 5000)]
    with pytest.raises(ValidationError) as caught:
        parse({"steps": chain})
    message = str(caught.value)
    assert message.count(" -> ") == 5000
    assert "s0 -> s4999 -> s4998" in message


def test_too_many_steps_is_rejected():
    many = [step(f"s{i}") for i in range(MAX_WORKFLOW_STEPS + 1)]
    with pytest.raises(ValidationError, match=f"at most {MAX_WORKFLOW_STEPS}"):
        parse({"steps": many})


# Helpers ---------------------------------------------------------------------------


def test_find_cycle_returns_none_for_a_dag_and_a_closed_path_for_a_loop():
    assert find_cycle({"a": (), "b": ("a",), "c": ("a", "b")}) is None
    assert find_cycle({"a": ("b",), "b": ("a",)}) == ["a", "b", "a"]


@pytest.mark.parametrize(("value", "expected"), [("HIGH", "high"), ("low", "low")])
def test_parse_priority_is_case_insensitive(value, expected):
    assert parse_priority(value, "here") == expected


def test_parse_priority_names_where_the_value_came_from():
    with pytest.raises(ValidationError, match="--priority: priority 3 is not one of"):
        parse_priority(3, "--priority")


def test_load_workflow_file_parses_json(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"steps": [step("a")]}))
    assert load_workflow_file(path) == {"steps": [step("a")]}


def test_repeated_key_in_a_step_is_rejected(driver):
    text = '{"steps": [{"id": "a", "agent": "echo", "agent": "fail", "input": "x"}]}'
    message = rejected(driver, text)
    assert "gives the key 'agent' twice" in message
