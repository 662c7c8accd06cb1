"""Helpers shared by command modules: opening a root for a command."""

from __future__ import annotations

import argparse

from relaymesh.paths import resolve_root
from relaymesh.runtime import Runtime


def open_runtime(args: argparse.Namespace) -> Runtime:
    """Open the root named by --root, which `relaymesh init` must have created."""
    return Runtime.open(resolve_root(args.root), must_exist=True)
