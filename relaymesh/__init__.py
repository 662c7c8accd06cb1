"""RelayMesh: reliable jobs for heterogeneous agents.

On one host a root (a folder with a SQLite store and a file bus) is a
durable queue of tasks and workflows; `relaymesh node` runs them. The
command line is `relaymesh.cli.main`; the runtime that it drives is
`relaymesh.runtime.Runtime`. Importing this package imports nothing else,
so that a command pays only for what it uses.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("relaymesh")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
