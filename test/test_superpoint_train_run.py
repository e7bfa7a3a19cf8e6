"""SuperPoint training on a few real photos: the losses go down, and the CLI trains end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from superpoint_training.data.images import resize_crop
from superpoint_training.model.network import SuperPoint
from superpoint_training.training import trainer
from superpoint_training.training.superpoint_task import SuperPointTask

CONFIG = Path(__file__).resolve().parents[1] / "config" / "superpoint_coco.yaml"
SIZE = (48, 64)


def photos() -> list[np.ndarray]:
    from skimage import data

    rgb = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [resize_crop(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), SIZE) for im in rgb]


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


@pytest.mark.parametrize("descriptor_loss", ["dense_hinge", "reference"])
def test_a_few_iterations_lower_both_losses(one_thread, descriptor_loss):
    torch.manual_seed(0)
    config = trainer.build_config(CONFIG, [
        "data.images=unused", "data.labels=", "data.validation_patches=", "loss.preset=",
        "data.augmentation.photometric.enable=false", "loss.lambda_d=250.0", "loss.lambda_loss=1.0",
        f"loss.descriptor={descriptor_loss}",
    ])
    task = SuperPointTask(config, torch.device("cpu"))
    model = SuperPoint(task.model_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gray = photos()[:2]
    images = torch.from_numpy(np.stack(gray)).float().div(255)[:, None]
    kmaps = torch.zeros(len(gray), *SIZE)
    for i, g in enumerate(gray):
        xy = np.round(corner_labels(g)).astype(int)
        kmaps[i, xy[:, 1], xy[:, 0]] = 1
    batch = {"image": images, "keypoint_map": kmaps, "valid_mask": torch.ones(len(gray), *SIZE)}
    fixed = task.pairs(batch, torch.Generator().manual_seed(5))  # one fixed set of pairs to measure on

    def measure() -> dict[str, float]:
        with torch.no_grad():  # training mode: BatchNorm on batch statistics, as in the loss being optimised
            _, scalars, _ = task.loss(model, fixed)
        return {k: float(v) for k, v in scalars.items()}

    before = measure()
    for _ in range(8):
        loss, _, _ = task.loss(model, task.augment(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = measure()
    assert after["detector_loss"] < 0.8 * before["detector_loss"]
    assert after["warped_detector_loss"] < before["warped_detector_loss"]
    # the reference's loss normalises the similarities over all cell pairs: it falls more slowly
    assert after["descriptor_loss"] < {"dense_hinge": 0.5, "reference": 0.9}[descriptor_loss] * before["descriptor_loss"]
    assert after["nonfinite_batches"] == 0


def test_nan_guards(one_thread):
    config = trainer.build_config(CONFIG, ["data.images=unused", "data.labels=", "data.validation_patches="])
    task = SuperPointTask(config, torch.device("cpu"))
    model = SuperPoint(task.model_config())
    images = torch.rand(2, 1, *SIZE)
    images[0, 0, :5, :5] = float("nan")
    batch = task.augment({"image": images, "keypoint_map": torch.zeros(2, *SIZE)})
    assert torch.isfinite(batch["image"]).all() and torch.isfinite(batch["warped_image"]).all()
    loss, scalars, _ = task.loss(model, batch)
    assert torch.isfinite(loss) and scalars["nonfinite_batches"] == 0
    # a batch whose loss is not finite gives no gradient and is counted
    batch["homography"] = torch.full((2, 3, 3), float("nan"))
    task.weights["lambda_d"] = float("inf")
    loss, scalars, _ = task.loss(model, batch)
    loss.backward()
    assert loss.item() == 0 and scalars["nonfinite_batches"] == 1
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_train_cli_end_to_end_with_validation_patches(tmp_path, monkeypatch, one_thread):
    write_folder(tmp_path)
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "exper"))
    overrides = [
        f"data.images={tmp_path / 'images'}", "data.labels=labels", f"data.resize={list(SIZE)}",
        "data.validation_size=2", "data.validation_patches=patches",
        "train.iterations=2", "train.batch_size=2", "train.num_workers=0", "train.device=cpu",
        "train.log_every=1", "train.checkpoint_every=2", "train.image_every=1",
        "validation.every=2", "validation.batch_size=2",
    ]
    from superpoint_training import train as train_cli

    argv = [str(CONFIG), "sp_tiny", "--no_progress"]
    for override in overrides:
        argv += ["--set", override]
    assert train_cli.main(argv) == 0
    folder = tmp_path / "exper" / "sp_tiny"
    weights = torch.load(folder / "weights.pth", weights_only=False)
    momentum = yaml.safe_load(CONFIG.read_text())["model"].get("batchnorm_momentum", 0.1)
    stored = {"variant": "v6", "descriptor_dim": 256, **({"batchnorm_momentum": momentum} if momentum != 0.1 else {})}
    assert weights["model_config"] == stored and weights["iteration"] == 2  # the config's network
    metrics = yaml.safe_load((folder / "metrics.yaml").read_text())[-1]
    assert {"precision", "patches/repeatability", "patches/matching_score"} <= set(metrics)
    assert (tmp_path / "exper" / "outputs" / "patches" / "COMPLETE").is_file()
