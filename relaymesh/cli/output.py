"""How commands print: JSON for programs, tables for people.

When stdout is not a terminal, or `--json` is given, a command prints one
JSON document (camelCase field names). On a terminal it prints a table or a
short summary with rich. Errors always go to stderr as one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

__all__ = ["Output"]


class Output:
    def __init__(self, force_json: bool) -> None:
        self.json = force_json or not sys.stdout.isatty()

    def document(self, value: object, summary: str | None = None) -> None:
        """Print `value` as JSON, or `summary` (if given) on a terminal."""
        if self.json or summary is None:
            print(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            print(summary)

    def rows(
        self,
        value: list[dict],
        columns: Sequence[str],
        title: str | None = None,
    ) -> None:
        """Print a list of records as JSON or as a table of `columns`."""
        if self.json:
            print(json.dumps(value, indent=2, ensure_ascii=False))
            return
        if not value:
            print(f"(no {title or 'rows'})")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            # Ids keep their full width so that they can be copied into the
            # next command; other long values fold over lines, never cut.
            widest = max(len(_cell(column, record.get(column))) for record in value)
            is_id = column.endswith("Id") or column == "step"
            table.add_column(
                column, overflow="fold", min_width=widest if is_id else None
            )
        for record in value:
            table.add_row(*(_cell(column, record.get(column)) for column in columns))
        Console().print(table)

    def lines(self, value: object, lines: Iterable[str]) -> None:
        if self.json:
            print(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            for line in lines:
                print(line)


def _cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column.endswith("AtMs") and isinstance(value, int) and value > 0:
        return _local_time(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _local_time(epoch_ms: int) -> str:
    """Format epoch milliseconds as local time, to the millisecond."""
    import time

    seconds, millis = divmod(epoch_ms, 1000)
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"
    )
