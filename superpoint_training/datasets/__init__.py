"""Datasets for training and evaluation (torch ``Dataset`` classes and their on-disk caches).

Imported lazily so that ``python -m superpoint_training.datasets.synthetic`` runs its module once.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SyntheticShapes", "generate_synthetic_shapes"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
