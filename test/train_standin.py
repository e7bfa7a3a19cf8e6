"""A tiny stand-in dataset for the trainer tests: bright rectangles whose corners are the keypoints.

Tests add it to the trainer's datasets as ``rectangles`` (fixture ``rectangles``); run as a script it is
the train command with it added (for torchrun).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from superpoint_training.common.config import merge_strict


class Rectangles(Dataset):
    default_config = {"name": "rectangles", "size": 16, "image_size": [48, 64], "seed": 0}

    @staticmethod
    def merge_config(config) -> dict:
        return merge_strict(Rectangles.default_config, config)

    def __init__(self, config: dict, split: str, apply_photometric: bool = True):
        self.config = config
        self.offset = {"training": 0, "validation": 10_000, "test": 20_000}[split]

    def __len__(self) -> int:
        return self.config["size"]

    def __getitem__(self, index: int) -> dict:
        h, w = self.config["image_size"]
        rng = np.random.default_rng(self.config["seed"] + self.offset + index)
        image = np.full((h, w), 0.2, np.float32)
        keypoints = np.zeros((h, w), np.float32)
        for _ in range(2):
            x0, y0 = rng.integers(2, w // 2), rng.integers(2, h // 2)
            x1, y1 = x0 + rng.integers(6, w // 2 - 2), y0 + rng.integers(6, h // 2 - 2)
            image[y0 : y1 + 1, x0 : x1 + 1] = rng.uniform(0.5, 1.0)
            for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
                keypoints[y, x] = 1
        return {
            "image": torch.from_numpy(image)[None],
            "keypoint_map": torch.from_numpy(keypoints),
            "valid_mask": torch.ones(h, w),
            "name": f"rect_{self.offset + index}",
        }


if __name__ == "__main__":
    import sys

    from superpoint_training.train import main
    from superpoint_training.training.trainer import DATASETS

    DATASETS["rectangles"] = Rectangles
    sys.exit(main())
