"""Steps `count_0`..`count_3` of the line-count example: count one share.

Standard input: the JSON document RelayMesh gives a step with dependencies,
    {"dependencies": {"list": "<output of list_files.py>"}, "input": "1/4"}
The input "K/N" selects share K of N: the files at positions K, K+N, K+2N...
of the sorted list, so the shares are disjoint, cover every file, and have
sizes that differ by at most one.

Standard output: a JSON object {"<relative path>": <lines>, ...}, keys sorted.
A line is counted for every newline byte, plus one for a last line that has
no newline, which is what an editor shows. Files are read as bytes, so no
encoding can make a count fail.

Exit status 2 for malformed input, 1 when a listed file cannot be read.
"""

import json
import os
import sys


class InputError(Exception):
    pass


def parse_share(text):
    try:
        index_text, count_text = text.strip().split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InputError(f"input must look like 'K/N', got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"share {index}/{count} is out of range: need 0 <= K < N")
    return index, count


def read_listing(dependencies):
    if not isinstance(dependencies, dict) or len(dependencies) != 1:
        names = sorted(dependencies) if isinstance(dependencies, dict) else []
        raise InputError(
            f"expected exactly one dependency (the listing step), got {names}"
        )
    name, output = next(iter(dependencies.items()))
    try:
        listing = json.loads(output)
        folder, files = listing["folder"], listing["files"]
    except (ValueError, TypeError, KeyError):
        raise InputError(
            f"dependency {name!r} did not output a listing with 'folder' and 'files'"
        ) from None
    if not isinstance(folder, str) or not isinstance(files, list):
        raise InputError(f"dependency {name!r} output has the wrong shape")
    return folder, files


def count_lines(path):
    with open(path, "rb") as handle:
        data = handle.read()
    newlines = data.count(b"\n")
    return newlines + (1 if data and not data.endswith(b"\n") else 0)


def main():
    try:
        document = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        if not isinstance(document, dict):
            raise InputError("standard input must be a JSON object")
        index, count = parse_share(document.get("input", ""))
        folder, files = read_listing(document.get("dependencies"))
    except (InputError, ValueError) as error:
        sys.stderr.write(f"count_lines: {error}\n")
        return 2

    counts = {}
    for relative in sorted(files)[index::count]:
        try:
            counts[relative] = count_lines(os.path.join(folder, relative))
        except OSError as error:
            sys.stderr.write(f"count_lines: cannot read {relative!r}: {error}\n")
            return 1
    sys.stdout.write(json.dumps(counts, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
