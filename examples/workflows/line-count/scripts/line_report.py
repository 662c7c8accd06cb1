"""Step `report` of the line-count example: add the shares up.

Standard input: the JSON document RelayMesh gives a step with dependencies,
    {"dependencies": {"count_0": "{\"a.py\": 12}", ...}, "input": "5"}
Every dependency output is one share from count_lines.py. The input is how
many of the largest files to list (empty means 5).

Standard output: a JSON report, indented for reading:
    {"totalFiles": 6, "totalLines": 41,
     "largest": [{"file": "pkg/b.py", "lines": 20}, ...]}
Largest first; files with equal counts in path order.

Exit status 2 for malformed input, including a file counted by two shares
(which would mean the sharding is wrong and the totals with it).
"""

import json
import sys

DEFAULT_TOP = 5


class InputError(Exception):
    pass


def merge_shares(dependencies):
    if not isinstance(dependencies, dict) or not dependencies:
        raise InputError("expected the outputs of the counting steps as dependencies")
    merged = {}
    for name in sorted(dependencies):
        try:
            share = json.loads(dependencies[name])
        except ValueError:
            raise InputError(f"dependency {name!r} did not output JSON") from None
        if not isinstance(share, dict) or not all(
            isinstance(lines, int) and lines >= 0 for lines in share.values()
        ):
            raise InputError(f"dependency {name!r} is not a {{file: lines}} object")
        for path, lines in share.items():
            if path in merged:
                raise InputError(f"file {path!r} was counted by two shares")
            merged[path] = lines
    return merged


def parse_top(text):
    text = text.strip()
    if not text:
        return DEFAULT_TOP
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"input must be a positive number of files, got {text!r}")
    return int(text)


def build_report(counts, top):
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "totalFiles": len(counts),
        "totalLines": sum(counts.values()),
        "largest": [{"file": path, "lines": lines} for path, lines in ranked[:top]],
    }


def main():
    try:
        document = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        if not isinstance(document, dict):
            raise InputError("standard input must be a JSON object")
        top = parse_top(document.get("input", ""))
        counts = merge_shares(document.get("dependencies"))
    except (InputError, ValueError) as error:
        sys.stderr.write(f"line_report: {error}\n")
        return 2
    sys.stdout.write(json.dumps(build_report(counts, top), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
