"""What a wheel of agentr holds: pyproject.toml names every package and every non-Python file."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_files() -> dict[str, list[str]]:
    """Every package of the source tree by dotted name, with its files other than Python ones."""
    packages = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        for path, dirs, files in os.walk(ROOT / folder):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not (Path(path) / d).is_symlink()]
            if "__init__.py" in files:
                relative = Path(path).relative_to(ROOT / folder).parts
                packages[".".join((name, *relative))] = sorted(f for f in files if not f.endswith(".py"))
    return packages


def test_every_package_and_data_file_is_declared():
    packages = _package_files()
    assert sorted(SETUPTOOLS["packages"]) == sorted(packages)
    declared = SETUPTOOLS.get("package-data", {})
    assert {name: files for name, files in packages.items() if files} == \
        {name: sorted(files) for name, files in declared.items()}
