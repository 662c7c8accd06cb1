"""Helpers shared by command modules: opening a root for a command."""

from __future__ import annotations

import argparse

from relaymesh.paths import resolve_root
from relaymesh.runtime import Runtime


def open_runtime(args: argparse.Namespace, *, create: bool = False) -> Runtime:
    """Open the root named by --root; unless `create`, it must already exist."""
    return Runtime.open(resolve_root(args.root), must_exist=not create)
