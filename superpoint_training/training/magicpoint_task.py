"""MagicPoint: detector-only training on images with ground-truth corners (Synthetic Shapes)."""

from __future__ import annotations

import torch

from ..common.config import ConfigError
from ..model.keypoints import logits_to_scores
from ..model.network import ModelConfig
from .detector_metrics import evaluate_detector
from .losses import detector_loss
from .task import Task, overlay


class MagicPointTask(Task):
    """Detector-only training on images with ground-truth corners (Synthetic Shapes)."""

    name = "magicpoint"

    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        augmentation = config["data"].get("augmentation", {})
        self.photometric = None
        if self.photometric_on_device and augmentation.get("photometric", {}).get("enable", False):
            from ..data.augmentation import PhotometricAugmentation

            self.photometric = PhotometricAugmentation(augmentation["photometric"])
        self.homographic = None
        if augmentation.get("homographic", {}).get("enable", False):
            from ..data.homographies import HomographicAugmentation

            self.homographic = HomographicAugmentation(augmentation["homographic"])

    def model_config(self) -> ModelConfig:
        model_config = super().model_config()
        if model_config.descriptor_dim:
            raise ConfigError("model.descriptor_dim: task magicpoint trains a detector only: set it to 0")
        return model_config

    def augment(self, batch: dict) -> dict:
        if self.photometric is not None:  # the reference's order: photometric, then homographic
            batch = dict(batch, image=self.photometric(batch["image"]))
        if self.homographic is not None:
            batch = self.homographic(batch)
        return batch

    def loss(self, model, batch):
        logits, _ = model(batch["image"])
        loss = detector_loss(logits, batch["keypoint_map"], batch.get("valid_mask"))
        return loss, {"detector_loss": loss.detach()}, {"logits": logits.detach()}

    def validate(self, model, batches):
        options = self.config["validation"]
        return evaluate_detector(
            model,
            batches,
            self.device,
            distance_threshold=options["distance_threshold"],
            detection_threshold=options["detection_threshold"],
            nms_radius=options["nms_radius"],
            remove_borders=options["remove_borders"],
            min_score=options["min_score"],
        )

    def images(self, batch, outputs, count=4):
        n = min(count, batch["image"].shape[0])
        heat = logits_to_scores(outputs["logits"][:n])
        picture = overlay(batch["image"][:n], batch["keypoint_map"][:n], heat)
        result = {"train/prediction": picture.cpu()}
        if "valid_mask" in batch:
            result["train/valid_mask"] = torch.cat(list(batch["valid_mask"][:n].float()), dim=1)[None].cpu()
        return result
