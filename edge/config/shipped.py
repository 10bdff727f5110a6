"""The example sites shipped with the package: configs/ in a checkout, edge/examples/ once
installed (setup.py puts them there), so `-c configs/demo.yaml` works from any directory."""

from __future__ import annotations

from pathlib import Path

from drivers.fileerrors import or_shipped

_EDGE = Path(__file__).resolve().parents[1]


def examples_dir() -> Path:
    installed = _EDGE / "examples"
    return installed if installed.is_dir() else _EDGE.parent / "configs"


def config_path(given: str) -> Path:
    """The site file `given` names, else the shipped example of that name."""
    return or_shipped(given, examples_dir())
