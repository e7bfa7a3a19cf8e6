"""Per-image predictions cached on disk, keyed by everything that changes them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..common.files import atomic_path
from ..data.hpatches import HPatches
from .methods import Method, Protocol

CACHE_VERSION = 1
# Protocol fields read only when the metrics are computed from the cached points: changing them
# (e.g. --ransac-orders 20 after a run with 5) reuses the predictions.
METRIC_ONLY_FIELDS = ("top_k", "distance", "ransac_orders")


def settings_hash(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


class Cache:
    """Per-image predictions of one method under one protocol and dataset resizing."""

    def __init__(self, root: Path, protocol: Protocol, method: Method, dataset: HPatches):
        self.settings = {
            "version": CACHE_VERSION,
            **method.settings,
            "protocol": {k: v for k, v in asdict(protocol).items() if k not in METRIC_ONLY_FIELDS},
            "resize": dataset.resize,
            "short_side": dataset.short_side if dataset.resize == "short_side" else None,
        }
        self.folder = Path(root) / protocol.name / f"{method.label}-{settings_hash(self.settings)}"
        self.dataset = dataset

    def path(self, sequence: str, index: int) -> Path:
        return self.folder / sequence / f"{index}.npz"

    def stamp(self, sequence: str, index: int) -> str:
        """The source image's identity: a regenerated dataset at the same path misses the cache."""
        source = self.dataset.path(sequence, index)
        stat = source.stat()
        return f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def valid(self, sequence: str, index: int) -> bool:
        path = self.path(sequence, index)
        if not path.exists():
            return False
        try:
            with np.load(path) as data:
                return str(data["stamp"]) == self.stamp(sequence, index)
        except (OSError, ValueError, KeyError):
            return False

    def save(self, sequence: str, index: int, keypoints, scores, descriptors, image_size) -> None:
        path = self.path(sequence, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "keypoints": np.asarray(keypoints, np.float32),
            "scores": np.asarray(scores, np.float32),
            "image_size": np.asarray(image_size, np.int64),
            "stamp": np.asarray(self.stamp(sequence, index)),
        }
        if descriptors is not None:
            descriptors = np.asarray(descriptors)
            # float16 halves the cache (glue-factory's default too); ORB's packed bits stay uint8
            arrays["descriptors"] = descriptors.astype(np.float16) if descriptors.dtype.kind == "f" else descriptors
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def load(self, sequence: str, index: int) -> dict[str, np.ndarray]:
        with np.load(self.path(sequence, index)) as data:
            return {key: data[key] for key in data.files}

    def write_settings(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(self.settings, indent=2, default=str))
