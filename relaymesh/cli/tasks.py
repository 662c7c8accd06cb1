"""Commands about tasks: init, agents, submit, submit-workflow, task, tasks,
workflow, stats, members."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relaymesh.cli.arguments import integer_in
from relaymesh.cli.common import open_runtime
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError, ValidationError
from relaymesh.fsm import TaskState
from relaymesh.paths import resolve_root
from relaymesh.runtime import Runtime

TASK_STATES = [state.value for state in TaskState]


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("init", parents=[common], help="create a root")
    parser.set_defaults(handler=run_init)

    parser = commands.add_parser("agents", parents=[common], help="list the agents")
    parser.set_defaults(handler=run_agents)

    parser = commands.add_parser("submit", parents=[common], help="submit one step")
    parser.add_argument("--agent", required=True, help="agent id (see 'agents')")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="the input text")
    source.add_argument("--payload", help="the input as JSON text (validated)")
    source.add_argument(
        "--input-file", help="read the input from a file, or '-' for standard input"
    )
    parser.add_argument(
        "--priority",
        type=str.lower,
        choices=("high", "normal", "low"),
        default="normal",
    )
    parser.add_argument(
        "--idempotency-key",
        help="submitting the same key again returns the existing task"
        " (default: a hash of agent and input)",
    )
    parser.set_defaults(handler=run_submit)

    parser = commands.add_parser(
        "submit-workflow", parents=[common], help="submit a workflow file (a DAG)"
    )
    parser.add_argument("--file", required=True, help="workflow JSON file")
    parser.add_argument("--idempotency-key")
    parser.set_defaults(handler=run_submit_workflow)

    parser = commands.add_parser(
        "task", parents=[common], help="show a task with its steps and attempts"
    )
    parser.add_argument("task_id")
    parser.add_argument(
        "--output",
        metavar="STEP",
        help="print only the raw output of this step (its id in the workflow,"
        " or 'main' for a task made by submit)",
    )
    parser.set_defaults(handler=run_task)

    parser = commands.add_parser("tasks", parents=[common], help="list tasks")
    parser.add_argument("--status", type=str.upper, choices=TASK_STATES)
    parser.add_argument("--limit", type=integer_in(1, 10_000), default=50)
    parser.add_argument("--offset", type=integer_in(0), default=0)
    parser.set_defaults(handler=run_tasks)

    parser = commands.add_parser(
        "workflow", parents=[common], help="show a workflow's steps and dependencies"
    )
    parser.add_argument("task_id")
    parser.set_defaults(handler=run_workflow)

    parser = commands.add_parser(
        "stats", parents=[common], help="counts by status, queue depths, totals"
    )
    parser.set_defaults(handler=run_stats)

    parser = commands.add_parser(
        "health",
        parents=[common],
        help="check store, folders, disk space, queue lag and (with --node-id) a node",
    )
    parser.add_argument("--node-id", help="also check this node's membership row")
    parser.set_defaults(handler=run_health)

    parser = commands.add_parser("members", parents=[common], help="list nodes")
    parser.set_defaults(handler=run_members)


def run_init(args: argparse.Namespace, out: Output) -> int:
    runtime = Runtime.open(resolve_root(args.root))
    runtime.close()
    root = str(runtime.layout.root)
    out.document(
        {"root": root, "initialized": True}, f"Initialized RelayMesh at: {root}"
    )
    return 0


def run_agents(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    out.rows(runtime.agents.describe(), ["agentId", "kind", "command", "timeoutMs"])
    return 0


def _read_input(args: argparse.Namespace) -> str:
    if args.input is not None:
        return args.input
    if args.payload is not None:
        import json

        try:
            json.loads(args.payload)
        except json.JSONDecodeError as error:
            raise ValidationError(f"--payload is not valid JSON: {error}") from None
        except RecursionError:
            raise ValidationError("--payload is nested too deeply") from None
        except ValueError as error:
            raise ValidationError(f"--payload is not valid JSON: {error}") from None
        return args.payload
    if args.input_file == "-":
        data = sys.stdin.buffer.read()
        where = "standard input"
    else:
        try:
            data = Path(args.input_file).read_bytes()
        except OSError as error:
            raise ValidationError(
                f"cannot read --input-file {args.input_file}: {error.strerror}"
            ) from None
        where = args.input_file
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValidationError(f"{where} is not UTF-8 text: {error}") from None


def _submit_document(result) -> dict:
    message = (
        "task deduplicated by idempotency key"
        if result.deduplicated
        else "task submitted"
    )
    return {
        "taskId": result.task_id,
        "deduplicated": result.deduplicated,
        "status": result.status,
        "result": result.result,
        "message": message,
    }


def run_submit(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    text = _read_input(args)
    result = runtime.submit(args.agent, text, args.priority, args.idempotency_key)
    document = _submit_document(result)
    out.document(document, f"{document['message']}: {result.task_id} ({result.status})")
    return 0


def run_submit_workflow(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    result = runtime.submit_workflow(Path(args.file), args.idempotency_key)
    document = _submit_document(result)
    document["message"] = document["message"].replace("task", "workflow", 1)
    out.document(document, f"{document['message']}: {result.task_id} ({result.status})")
    return 0


def _require_task(runtime: Runtime, task_id: str) -> dict:
    view = runtime.store.task_view(task_id)
    if view is None:
        raise NotFoundError(
            f"task {task_id!r} not found (list tasks with 'relaymesh tasks')"
        )
    return view


def run_task(args: argparse.Namespace, out: Output) -> int:
    view = _require_task(open_runtime(args, read_only=True), args.task_id)
    if args.output is not None:
        names = [step["name"] for step in view["steps"]]
        step = next(
            (step for step in view["steps"] if step["name"] == args.output), None
        )
        if step is None:
            raise NotFoundError(
                f"task {args.task_id} has no step {args.output!r} (steps: {', '.join(names)})"
            )
        if step["resultPayload"] is None:
            raise NotFoundError(
                f"step {args.output!r} has no output yet (it is {step['status']})"
            )
        print(step["resultPayload"])
        return 0
    if out.json:
        out.document(view)
        return 0
    print(f"task {view['taskId']}  {view['status']}  trace {view['traceId']}")
    if view["lastError"]:
        print(f"last error: {view['lastError']}")
    if view["resultPayload"] is not None:
        print(f"result: {view['resultPayload'][:2000]}")
    out.rows(
        view["steps"],
        ["name", "agentId", "status", "attempt", "dependsOn", "blockedBy", "lastError"],
        title="steps",
    )
    rows = [
        {
            "step": step["name"],
            "attempt": attempt["attempt"],
            "node": attempt["nodeId"],
            "outcome": attempt["outcome"],
            "duration ms": (attempt["endedAtMs"] or 0) - attempt["startedAtMs"]
            if attempt["endedAtMs"]
            else None,
            "error": attempt["error"],
        }
        for step in view["steps"]
        for attempt in step["attempts"]
    ]
    out.rows(
        rows,
        ["step", "attempt", "node", "outcome", "duration ms", "error"],
        title="attempts",
    )
    return 0


def run_tasks(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    rows = runtime.store.list_tasks(args.status, args.limit, args.offset)
    out.rows(rows, ["taskId", "kind", "status", "lastError", "updatedAtMs"])
    return 0


def run_workflow(args: argparse.Namespace, out: Output) -> int:
    view = _require_task(open_runtime(args, read_only=True), args.task_id)
    steps = [
        {
            key: step[key]
            for key in (
                "stepId",
                "name",
                "agentId",
                "status",
                "attempt",
                "priority",
                "enqueued",
                "blockedBy",
                "dependsOn",
                "leaseOwner",
                "lastError",
                "createdAtMs",
                "updatedAtMs",
                "attempts",
            )
        }
        for step in view["steps"]
    ]
    document = {
        "task": {
            key: view[key]
            for key in (
                "taskId",
                "kind",
                "status",
                "traceId",
                "lastError",
                "createdAtMs",
                "updatedAtMs",
            )
        },
        "steps": steps,
    }
    if out.json:
        out.document(document)
        return 0
    print(f"workflow {view['taskId']}  {view['status']}")
    out.rows(
        steps,
        ["name", "agentId", "status", "attempt", "dependsOn", "blockedBy", "lastError"],
    )
    return 0


def run_stats(args: argparse.Namespace, out: Output) -> int:
    stats = open_runtime(args, read_only=True).stats()
    if out.json:
        out.document(stats)
        return 0
    for group in ("taskStatus", "stepStatus", "messageState"):
        counts = ", ".join(
            f"{key} {value}" for key, value in sorted(stats[group].items())
        )
        print(f"{group}: {counts or 'none'}")
    for key, value in stats.items():
        if not isinstance(value, dict):
            print(f"{key}: {value}")
    return 0


def run_health(args: argparse.Namespace, out: Output) -> int:
    report = open_runtime(args, read_only=True).health(args.node_id)
    lines = [f"{'ok' if report['ok'] else 'UNHEALTHY'}"]
    for name, check in report["checks"].items():
        facts = ", ".join(
            f"{key} {value}"
            for key, value in check.items()
            if key != "ok" and value != []
        )
        verdict = "ok" if check["ok"] else "FAIL"
        lines.append(f"  {name}: {verdict}  {facts}".rstrip())
    out.lines(report, lines)
    return 0 if report["ok"] else 1


def run_members(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    out.rows(
        runtime.store.members(),
        ["nodeId", "status", "pid", "lastHeartbeatMs", "incarnation"],
    )
    return 0
