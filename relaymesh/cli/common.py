"""Helpers shared by command modules: opening a root for a command."""

from __future__ import annotations

import argparse
import sys

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
