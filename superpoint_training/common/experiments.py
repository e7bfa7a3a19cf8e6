"""Where runs write: ``$SUPERPOINT_EXPER_DIR`` (default ``experiments/``), written once."""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "SUPERPOINT_EXPER_DIR"


def experiments_root() -> Path:
    """The folder that holds one folder per experiment (``$SUPERPOINT_EXPER_DIR``, else ``experiments``)."""
    return Path(os.environ.get(ENVIRONMENT_VARIABLE, "experiments"))


def exports_root() -> Path:
    """The folder of label exports: ``<experiments root>/outputs``."""
    return experiments_root() / "outputs"
