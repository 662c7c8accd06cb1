"""Step `list` of the line-count example: find the Python files in a folder.

Standard input: the folder to scan, as text (surrounding blanks ignored).
Standard output: one JSON object
    {"folder": "<absolute folder>", "files": ["pkg/mod.py", ...]}
with paths relative to the folder, using '/', sorted. The folder travels
with the list so that the counting steps know where the files are.

Folders whose name starts with '.' (version control, virtual environments)
and __pycache__ folders are skipped. Symbolic links to folders are not
followed, so a link loop cannot make the scan endless.

Exit status 2 when the input does not name a folder.
"""

import json
import os
import sys

SKIPPED_FOLDERS = {"__pycache__"}


def python_files(folder):
    found = []
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(
            name
            for name in folders
            if not name.startswith(".") and name not in SKIPPED_FOLDERS
        )
        for name in files:
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(current, name), folder)
                found.append(path.replace(os.sep, "/"))
    return sorted(found)


def main():
    folder = sys.stdin.buffer.read().decode("utf-8").strip()
    if not folder:
        sys.stderr.write("list_files: expected a folder path on standard input\n")
        return 2
    if not os.path.isdir(folder):
        sys.stderr.write(f"list_files: {folder!r} is not a folder\n")
        return 2
    folder = os.path.abspath(folder)
    listing = {"folder": folder, "files": python_files(folder)}
    sys.stdout.write(json.dumps(listing) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
