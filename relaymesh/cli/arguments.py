"""Argument parsing shared by every command: the parser class and the value
checks that argparse calls, each with an error that names what is allowed."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr, status 2."""

    def error(self, message: str) -> NoReturn:
        hint = f"see '{self.prog} --help'"
        if "invalid choice" in message and self._subparsers is not None:
            hint = self._choice_hint(message) or hint
        sys.stderr.write(f"{self.prog}: error: {message} ({hint})\n")
        raise SystemExit(2)

    def _choice_hint(self, message: str) -> str | None:
        """Suggest the nearest command, or explain where options belong."""
        chosen = message.split("'")[1] if "'" in message else ""
        if chosen.startswith("-") or "/" in chosen:
            return "options come after the command: relaymesh COMMAND [OPTIONS]"
        commands = [
            name
            for action in self._subparsers._group_actions
            for name in getattr(action, "choices", {}) or {}
        ]
        nearest = difflib.get_close_matches(chosen, commands, n=1)
        return f"did you mean '{nearest[0]}'?" if nearest else None


def integer_in(minimum: int, maximum: int | None = None):
    """Return an argparse type that accepts an integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: must be at least {minimum}{upper}"
            )
        return value

    parse.__name__ = "integer"
    return parse


def days(text: str) -> float:
    """Parse a non-negative number of days (fractions allowed) for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 0 <= value <= 36500 or value != value:
        raise argparse.ArgumentTypeError(f"{text} days is out of range: 0 to 36500")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        help="root folder (default: $RELAYMESH_ROOT, then ./relaymesh-data)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON even on a terminal"
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="log level on stderr (default: warning; info for node)",
    )
