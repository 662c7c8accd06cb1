"""Helpers shared by command modules: opening a root for a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relaymesh.bus import write_atomically
from relaymesh.errors import ValidationError
from relaymesh.paths import resolve_root
from relaymesh.runtime import Runtime


def open_runtime(args: argparse.Namespace, *, read_only: bool = False) -> Runtime:
    """Open the root named by --root, which `relaymesh init` must have created.

    A read-only command opens the root even when a configuration file is
    invalid: it warns on stderr and uses the defaults in its place.
    """
    runtime = Runtime.open(resolve_root(args.root), must_exist=True, lenient=read_only)
    for error in runtime.configuration_errors:
        sys.stderr.write(
            f"relaymesh: warning: {error} (using defaults for this command)\n"
        )
    return runtime


def check_output_path(option: str) -> None:
    """Reject an --out that names a folder, before any work is done."""
    if option != "-" and Path(option).is_dir():
        raise ValidationError(f"--out {option} is a folder; give a file name")


def write_output(option: str, text: str) -> Path | None:
    """Write `text` to the --out file (atomically), or to stdout for '-'.

    Returns the file written, or None when the text went to stdout.
    """
    if option == "-":
        print(text, end="")
        return None
    check_output_path(option)
    target = Path(option)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, text.encode("utf-8"))
    except (FileExistsError, NotADirectoryError):
        raise ValidationError(
            f"cannot write --out {target}: a part of its folder path is a file"
        ) from None
    except OSError as error:
        raise ValidationError(
            f"cannot write --out {target}: {error.strerror}"
        ) from None
    return target
