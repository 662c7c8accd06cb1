"""The package's top level stays small and importable without side effects."""

import subprocess
import sys

import relaymesh


def test_public_names_are_pinned():
    assert relaymesh.__all__ == ["__version__"]


def test_version_matches_installed_metadata():
    from importlib.metadata import version

    assert relaymesh.__version__ == version("relaymesh")


def test_import_loads_no_runtime_modules():
    code = "import sys, relaymesh; print(sorted(m for m in sys.modules if m.startswith(('trio', 'relaymesh.'))))"
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert output.strip() == "[]"
