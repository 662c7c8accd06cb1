"""Set up a RelayMesh root to run the line-count example.

    python3 examples/workflows/line-count/prepare.py \
        --root ./relaymesh-data --target ./some/project

does three things:

1. copies scripts/*.py into <root>/agents/scripts/;
2. adds the agents of scripts.json to <root>/agents/scripts.json, with the
   "{python}" token replaced by the interpreter running this file (or
   --python); agents already declared there under other ids are kept, and
   the example's own ids are replaced;
3. writes the workflow with "{target}" replaced by the absolute --target
   folder, to --workflow-out (default <root>/line-count.workflow.json), and
   prints that path.

Placeholders are replaced in the parsed JSON, never in the raw text, so a
path containing quotes or backslashes still yields valid files.
Only the standard library is used.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def substitute(value, placeholder, replacement):
    if isinstance(value, str):
        return value.replace(placeholder, replacement)
    if isinstance(value, list):
        return [substitute(item, placeholder, replacement) for item in value]
    if isinstance(value, dict):
        return {
            key: substitute(item, placeholder, replacement)
            for key, item in value.items()
        }
    return value


def install_scripts(root, python):
    scripts_folder = root / "agents" / "scripts"
    scripts_folder.mkdir(parents=True, exist_ok=True)
    for script in sorted((HERE / "scripts").glob("*.py")):
        shutil.copyfile(script, scripts_folder / script.name)

    declared = json.loads((HERE / "scripts.json").read_text(encoding="utf-8"))
    ours = substitute(declared, "{python}", python)["agents"]
    registry_file = root / "agents" / "scripts.json"
    existing = []
    if registry_file.exists():
        try:
            existing = json.loads(registry_file.read_text(encoding="utf-8"))["agents"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(
                f"prepare: {registry_file} exists but is not a script agent file "
                f'({{"agents": [...]}}); fix or move it, then run again'
            ) from None
    our_ids = {agent["id"] for agent in ours}
    kept = [agent for agent in existing if agent.get("id") not in our_ids]
    merged = {"agents": kept + ours}
    registry_file.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return registry_file


def write_workflow(target, destination):
    workflow = json.loads((HERE / "workflow.json").read_text(encoding="utf-8"))
    workflow = substitute(workflow, "{target}", target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(json.dumps(workflow, indent=2) + "\n", encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the RelayMesh root folder")
    parser.add_argument("--target", required=True, help="the folder to scan")
    parser.add_argument("--workflow-out", help="where to write the workflow file")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the scripts"
    )
    options = parser.parse_args(argv)

    target = os.path.abspath(options.target)
    if not os.path.isdir(target):
        parser.error(f"--target {options.target!r} is not a folder")
    root = Path(options.root).resolve()
    destination = Path(
        options.workflow_out or root / "line-count.workflow.json"
    ).resolve()

    install_scripts(root, options.python)
    write_workflow(target, destination)
    print(destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
