"""Batches for the Extractor from a stream of images of mixed sizes (folders, bags): the network
runs one batch per image size, so items are grouped by shape and dtype, with a bound on what waits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


class SizeBatcher:
    """Streams items into batches of images of one size (shape and dtype): :meth:`add` returns a full
    batch, or, when 4 batches' worth wait across many sizes, the largest group (bounded memory);
    :meth:`rest` hands out what is left at the end. ``batch_size`` may be set before the first add."""

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size
        self.groups: dict[tuple, list] = {}
        self.waiting = 0

    def add(self, image: np.ndarray, item: Any) -> list | None:
        key = (image.shape, image.dtype.str)
        group = self.groups.setdefault(key, [])
        group.append(item)
        self.waiting += 1
        if len(group) >= self.batch_size:
            return self._pop(key)
        if self.waiting >= 4 * self.batch_size:
            return self._pop(max(self.groups, key=lambda k: len(self.groups[k])))
        return None

    def rest(self) -> Iterator[list]:
        while self.groups:
            yield self._pop(next(iter(self.groups)))

    def _pop(self, key: tuple) -> list:
        group = self.groups.pop(key)
        self.waiting -= len(group)
        return group
