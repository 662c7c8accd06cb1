"""Structured logging: one line per event, `key=value` pairs after a name.

Each subsystem has its own logger (`relaymesh.node`, `relaymesh.lease`, ...).
Callers log an event name and context fields; values are quoted when they
contain spaces or quotes, so a line can be split back into fields. Payloads
and secrets are never passed in.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["configure_logging", "event"]


def _format_value(value: object) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log `name` with `fields` as key=value pairs, if `level` is enabled.

    Fields whose value is None are left out.
    """
    if not logger.isEnabledFor(level):
        return
    pairs = " ".join(
        f"{key}={_format_value(value)}"
        for key, value in fields.items()
        if value is not None
    )
    logger.log(level, f"{name} {pairs}" if pairs else name)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        line = (
            f"{stamp}.{millis:03d}Z {record.levelname.lower()} {record.name}"
            f" {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info") -> None:
    """Send RelayMesh's logs to stderr at `level` (debug, info, warning, error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("relaymesh")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
