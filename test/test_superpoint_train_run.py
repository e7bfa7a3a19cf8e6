"""SuperPoint training on a few real photos: the losses go down, and the CLI trains end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from superpoint_training import tasks, trainer
from superpoint_training.datasets.image_folder import preprocess
from superpoint_training.model import SuperPoint
from superpoint_training.superpoint_task import SuperPointTask

CONFIG = Path(__file__).resolve().parents[1] / "config" / "superpoint_coco.yaml"
SIZE = (48, 64)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The task and dataset names the configs use (registered by tasks.py / trainer.py in the package)."""
    monkeypatch.setitem(tasks.TASKS, "superpoint", tasks.TASKS.get("superpoint", SuperPointTask))
    monkeypatch.setitem(trainer.DATASETS, "image_folder",
                        trainer.DATASETS.get("image_folder", "superpoint_training.datasets.image_folder:ImageFolder"))


def photos() -> list[np.ndarray]:
    from skimage import data

    rgb = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [preprocess(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), SIZE) for im in rgb]


def corner_labels(gray: np.ndarray) -> np.ndarray:
    """Stand-in labels (Shi-Tomasi corners) in the export's (N, 2) xy layout."""
    corners = cv2.goodFeaturesToTrack(gray, 40, 0.01, 4)
    return np.zeros((0, 2), np.float32) if corners is None else corners[:, 0].astype(np.float32)


def write_folder(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    labels = root / "exper" / "outputs" / "labels"
    labels.mkdir(parents=True)
    for i, gray in enumerate(photos()):
        cv2.imwrite(str(root / "images" / f"p{i}.png"), gray)
        np.savez(labels / f"p{i}.npz", keypoints=corner_labels(gray), image_size=np.array(SIZE))


def test_a_few_iterations_lower_both_losses():
    torch.manual_seed(0)
    config = trainer.build_config(CONFIG, [
        "data.images=unused", "data.labels=", "data.validation_patches=",
        "data.augmentation.photometric.enable=false", "loss.lambda_d=250.0", "loss.lambda_loss=0.001",
    ])
    task = SuperPointTask(config, torch.device("cpu"))
    model = SuperPoint(task.model_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gray = photos()
    images = torch.from_numpy(np.stack(gray)).float().div(255)[:, None]
    kmaps = torch.zeros(len(gray), *SIZE)
    for i, g in enumerate(gray):
        xy = np.round(corner_labels(g)).astype(int)
        kmaps[i, xy[:, 1], xy[:, 0]] = 1
    batch = {"image": images, "keypoint_map": kmaps, "valid_mask": torch.ones(len(gray), *SIZE)}
    fixed = task.augment({k: v.clone() for k, v in batch.items()})  # one fixed pair set to measure on

    def measure() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            _, scalars, _ = task.loss(model, fixed)
        model.train()
        return {k: float(v) for k, v in scalars.items()}

    before = measure()
    for _ in range(25):
        loss, _, _ = task.loss(model, task.augment(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = measure()
    assert after["detector_loss"] < before["detector_loss"]
    assert after["warped_detector_loss"] < before["warped_detector_loss"]
    assert after["descriptor_loss"] < before["descriptor_loss"]
    assert after["nonfinite_batches"] == 0


def test_train_cli_end_to_end_with_validation_patches(tmp_path, monkeypatch):
    write_folder(tmp_path)
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "exper"))
    overrides = [
        f"data.images={tmp_path / 'images'}", "data.labels=labels", f"data.resize={list(SIZE)}",
        "data.validation_size=2", "data.validation_patches=patches",
        "train.iterations=2", "train.batch_size=2", "train.num_workers=0", "train.device=cpu",
        "train.num_threads=1", "train.log_every=1", "train.checkpoint_every=2", "train.image_every=1",
        "validation.every=2", "validation.batch_size=2",
    ]
    from superpoint_training import train as train_cli

    argv = [str(CONFIG), "sp_tiny", "--no_progress"]
    for override in overrides:
        argv += ["--set", override]
    assert train_cli.main(argv) == 0
    folder = tmp_path / "exper" / "sp_tiny"
    weights = torch.load(folder / "weights.pth", weights_only=False)
    assert weights["model_config"] == {"variant": "v6", "descriptor_dim": 256} and weights["iteration"] == 2
    metrics = yaml.safe_load((folder / "metrics.yaml").read_text())[-1]
    assert {"precision", "patches/repeatability", "patches/matching_score"} <= set(metrics)
    assert (tmp_path / "exper" / "outputs" / "patches" / "COMPLETE").is_file()
