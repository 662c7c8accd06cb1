"""Hot reload in a running node: all fields or none, rejected files recorded."""

from __future__ import annotations

import json

import trio

from relaymesh.actors.node import Node
from relaymesh.executor import InlineExecutor

from .test_node import wait_for


async def test_file_change_reloads_and_invalid_file_is_rejected(
    autojump_clock, open_runtime, settings_file, tmp_path
):
    settings_file(leaseHeartbeatMs=2000)
    runtime = open_runtime()
    settings_path = tmp_path / "root" / "relaymesh-settings.json"
    node = Node(runtime, InlineExecutor(), "node-a", workers=1, settings_reload_ms=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)

        settings_path.write_text(
            json.dumps({"leaseHeartbeatMs": 500, "maxAttempts": 5})
        )
        await wait_for(lambda: runtime.settings.lease_heartbeat_ms == 500)
        assert runtime.settings.max_attempts == 5

        # One valid field and one invalid: nothing applies.
        settings_path.write_text(
            json.dumps({"leaseHeartbeatMs": 700, "maxAttempts": 0})
        )
        await wait_for(
            lambda: runtime.store.settings_history(1)[0]["result"] == "rejected"
        )
        assert runtime.settings.lease_heartbeat_ms == 500
        assert runtime.settings.max_attempts == 5

        # The node still works on the old settings.
        task = runtime.submit("echo", "still alive")
        await wait_for(
            lambda: runtime.store.task_view(task.task_id)["status"] == "SUCCESS"
        )
        node.stop()

    history = runtime.store.settings_history(10)
    assert [row["result"] for row in history] == ["rejected", "reloaded", "loaded"]
    # The test's registry had a sleep agent that scripts.json does not
    # declare, so the reload also reports the agents as changed.
    assert history[1]["changedFields"] == [
        "leaseHeartbeatMs",
        "maxAttempts",
        "agents/scripts.json",
    ]
    assert "maxAttempts" in history[0]["error"]
    assert history[0]["changedFields"] == []


async def test_reload_request_reaches_running_node(
    autojump_clock, open_runtime, tmp_path
):
    runtime = open_runtime()
    node = Node(runtime, InlineExecutor(), "node-a", workers=1, settings_reload_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        (tmp_path / "root" / "relaymesh-settings.json").write_text('{"maxAttempts": 7}')
        await trio.sleep(30)
        assert runtime.settings.max_attempts == 3  # file watching is off

        # Another process (the CLI) asks for a reload through the store.
        other = open_runtime(2)
        generation = other.store.request_settings_reload(other.clock_ms())
        await wait_for(lambda: runtime.settings.max_attempts == 7)
        node.stop()

    (row,) = runtime.store.settings_history(10, generation=generation)
    assert row["nodeId"] == "node-a"
    assert row["trigger"] == "reload_request"
    assert row["changedFields"] == ["maxAttempts", "agents/scripts.json"]


async def test_new_script_agent_reaches_running_workers(
    autojump_clock, open_runtime, tmp_path
):
    runtime = open_runtime()
    node = Node(runtime, InlineExecutor(), "node-a", workers=1, settings_reload_ms=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        scripts = tmp_path / "root" / "agents" / "scripts.json"
        scripts.write_text(
            json.dumps({"agents": [{"id": "hello", "command": ["true"]}]})
        )
        await wait_for(lambda: runtime.agents.get("hello") is not None)
        node.stop()
    (row,) = [
        r for r in runtime.store.settings_history(10) if r["result"] == "reloaded"
    ]
    assert row["trigger"] == "file_changed"
    assert "agents/scripts.json" in row["changedFields"]
