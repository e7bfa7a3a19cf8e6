"""The trainer's contract with what it trains: one :class:`Task` per kind of run (MagicPoint,
SuperPoint); the trainer keeps devices, DDP, the optimizer, checkpoints, logging and signals."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from ..common.config import ConfigError
from ..model.network import STRIDE, ModelConfig


class Task:
    """What a training run optimises; the trainer calls:

    - ``model_config()``: the network to build (MagicPoint: v6 without descriptor head);
    - ``augment(batch)``: batched augmentation on the device (homographic warps, and photometric
      changes when ``photometric_on_device``: then the dataset is built with ``apply_photometric=False``),
      training only;
    - ``loss(model, batch)``: the loss and the scalars to log, plus the outputs kept for images;
    - ``validate(model, batches)``: the validation metrics (a dict of floats);
    - ``images(batch, outputs)``: a few (3, H, W) pictures for TensorBoard;
    - ``trained_modules()``: modules besides the network that the loss trains (SuperPoint: the
      sub-pixel refinement), optimised, moved to the device and gradient-averaged under DDP with it;
      ``load_pretrained_modules(weights)``: their start from the pretrained file;
      ``module_learning_rate(name)``: its rate (None: the network's); ``module_records()`` /
      ``load_module_records(state)``: what the weights files store of them.
    """

    name = "task"

    def __init__(self, config: dict, device: torch.device):
        self.config = config
        self.device = device
        where = config["train"].get("photometric", "auto")
        # photometric augmentation batched on the device (a GPU), or per sample in the DataLoader workers
        self.photometric_on_device = where == "device" or (where == "auto" and device.type == "cuda")

    def model_config(self) -> ModelConfig:
        try:
            return ModelConfig(**self.config["model"])
        except (TypeError, ValueError) as error:  # a value the network refuses: the user's config
            raise ConfigError(str(error) if str(error).startswith("model.") else f"model: {error}") from None

    def initialise(self, model: torch.nn.Module) -> None:
        """Adjust a freshly built model before training (pretrained weights and checkpoints load after)."""
        prior = self.config["train"].get("dustbin_prior", 0.0)
        if prior > 0:
            set_dustbin_prior(model, prior)

    def augment(self, batch: dict) -> dict:
        return batch

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module, batches: Iterable[dict]) -> dict[str, float]:
        raise NotImplementedError

    def images(self, batch: dict, outputs: dict, count: int = 4) -> dict[str, torch.Tensor]:
        return {}

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def load_pretrained_modules(self, weights: str) -> str:
        """Start the other trained modules from ``--pretrained-model`` where it has them; a note for the log."""
        return ""

    def module_learning_rate(self, name: str) -> float | None:
        return None  # train.learning_rate

    def module_records(self) -> dict:
        return {}

    def load_module_records(self, state: dict) -> None:
        pass


def set_dustbin_prior(model: torch.nn.Module, probability: float) -> None:
    """Bias the detector's last layer so that, with the other 64 logits at 0, the dustbin starts at
    ``probability`` (the class prior; most cells hold no corner). The reference starts from the
    default initialisation (dustbin 1/65) and spends its first thousands of steps learning this prior
    through a BatchNorm bias, which a short run cannot afford."""
    bias = math.log(probability / (1 - probability) * (STRIDE**2))
    last = model.detector[-1].bn if model.config.variant == "v6" else model.convPb
    with torch.no_grad():
        last.bias[-1] = bias


def overlay(images: torch.Tensor, keypoint_map: torch.Tensor, heatmap: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, H, W) images, (B, H, W) ground truth, (B, H, W) scores -> one (3, H, B*W) picture:
    the image in gray, ground-truth corners in red, predicted probability in green."""
    gray = images[:, 0].float().clamp(0, 1)
    rgb = torch.stack((gray, gray, gray), dim=1) * 0.7
    gt = F.max_pool2d(keypoint_map[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    rgb[:, 0] = torch.where(gt, torch.ones_like(gray), rgb[:, 0])
    if heatmap is not None:
        heat = (heatmap.float() / heatmap.float().amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)).clamp(0, 1)
        rgb[:, 1] = torch.maximum(rgb[:, 1], heat)
    return torch.cat(list(rgb), dim=2)
