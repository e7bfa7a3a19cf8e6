"""The training run's configuration: defaults, the dataset and task registries, validation, and the
autocast precision a device gets (:func:`resolve_training_precision`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import torch
from torch.utils.data import Dataset

from ..common.config import ConfigError, OpenMapping, attribute_error, load_config, read_yaml
from ..data.image_folder import ImageFolder
from ..data.shapes_dataset import SyntheticShapes
from .magicpoint_task import MagicPointTask
from .superpoint_task import SuperPointTask
from .task import Task

log = logging.getLogger(__name__)

DEFAULTS: dict = {
    "task": "magicpoint",
    "data": {"name": "synthetic_shapes"},  # plus the dataset's own keys (see merge_data_config)
    # batchnorm_momentum: PyTorch's convention (TF's 0.99 is 0.01); network.ModelConfig checks it
    "model": {"variant": "v6", "descriptor_dim": 0, "batchnorm_momentum": 0.1},
    "train": {
        "iterations": 50000,
        "batch_size": 64,  # global: split over the DDP processes
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "seed": 0,
        "device": "auto",  # auto, cpu, cuda, cuda:N
        "precision": "fp32",  # fp32, bf16, fp16 (fp16: CUDA only), auto (bf16 where the CPU has native bf16)
        "max_minutes": 0.0,  # wall-clock budget of this run; at the next log step past it: save and stop (0: none)
        "channels_last": False,
        "compile": False,
        "num_workers": 4,
        "dustbin_prior": 0.0,  # > 0: start the dustbin at this probability (not the reference; for short runs)
        "photometric": "auto",  # where: auto (device on CUDA, else workers), device, workers
        "num_threads": 0,  # torch CPU threads per process; 0 keeps torch's default
        "log_every": 100,  # host sync: loss check, progress bar, TensorBoard scalars
        "image_every": 1000,  # TensorBoard images; 0 disables
        "checkpoint_every": 5000,
        "keep_every": 0,  # also keep checkpoint_<iteration>.pth every N iterations; 0: only the last
        "keep_best": "",  # a validation metric (mAP, repeatability ...): keep best_weights.pth at its best
    },
    "validation": {
        "every": 5000,  # 0: only at the end
        "max_images": 0,  # 0: the whole validation split
        "batch_size": 50,
        "distance_threshold": 4.0,  # pixels (the reference notebook's value)
        "detection_threshold": 0.015,  # precision, recall and localisation error are read here
        "nms_radius": 4,
        "remove_borders": 0,
        "min_score": 0.001,  # lowest score on the precision-recall curve
    },
    "loss": {  # descriptor loss (SuperPoint task); the paper's values
        "preset": "",  # paper, reference_config, v6_release (superpoint_task.LOSS_PRESETS); "": the values below
        "lambda_d": 250.0,
        "lambda_loss": 0.0001,
        "positive_margin": 1.0,
        "negative_margin": 0.2,
        # reference: the reference's loss over all pairs of cells (ReLU on the cosines, the similarity
        # tensor L2-normalised over both images' cells); dense_hinge: the same hinge on plain cosines;
        # sampled_info_nce: a contrastive loss over sampled correspondences (losses.sampled_descriptor_loss)
        "descriptor": "dense_hinge",
        "num_samples": 512,  # sampled_info_nce: points per image
        "keypoint_fraction": 0.75,  # sampled_info_nce: share of the points drawn among the labels
        "temperature": 0.1,  # sampled_info_nce
        "detector_outside_warp": False,  # True: the detector loss also covers the black area outside the warp
    },
    # A sub-pixel refinement trained with the network (SuperPoint task; ``subpixel: learned`` with the
    # weights it writes): training.refinement.joint_refinement_loss. Off while weight is 0.
    "refinement": {
        "weight": 0.0,  # > 0: added to the loss times its mean distance in pixels
        "radius": 3,  # the model.refinement.SubpixelRefinement: half side of the score window
        "hidden": 128,  # (with image_radius 7: the frozen-network trainer's choice on held-out photos)
        "max_shift": 1.0,  # px from the Gaussian fit, per axis
        "image_radius": 7,  # > 0: it also reads this window of the image
        "learning_rate": 1e-3,  # the perceptron's (it starts at zero); 0: train.learning_rate
        "network_gradient": True,  # False: the loss trains the refinement only, the network is not moved by it
        "match_radius": 2.0,  # px: detections of an image and its warp paired as mutual nearest neighbours
        "max_keypoints": 300,  # per image, the highest scores after NMS
        "detection_threshold": 0.005,
        "nms_radius": 4,
        "remove_borders": 4,
    },
    "detection": {  # detection defaults written into the checkpoints (Extractor's defaults)
        "detection_threshold": 0.005,
        "nms_radius": 4,
        "remove_borders": 4,
        "subpixel": "none",
        "scales": [1.0],  # image pyramid, e.g. [1.0, 0.71, 0.5]
    },
}

# data.name -> the Dataset class, called with (data_config, split); the ``data`` section is checked
# by the class's ``merge_config(data)`` (checkpoints store the name, so names stay).
DATASETS: dict[str, Callable[..., Dataset]] = {"synthetic_shapes": SyntheticShapes, "image_folder": ImageFolder}
# task -> the Task class (checkpoints store the name).
TASKS: dict[str, type[Task]] = {"magicpoint": MagicPointTask, "superpoint": SuperPointTask}
TRAIN_SPLIT, VALIDATION_SPLIT = "training", "validation"


def resolve_training_precision(precision: str, device: torch.device) -> str:
    """The autocast precision of a run: fp16 needs CUDA; on a CPU bf16 only pays with native bf16.

    ``auto``: bf16 on CUDA devices that support it and on CPUs with native bf16 (AVX-512 BF16, AMX),
    else fp32. An explicit ``bf16`` on a CPU without native bf16 runs (emulated, slow) with a warning.
    """
    from ..common.machine import has_native_bf16

    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return precision
    if precision == "fp16":
        raise ConfigError(f"train.precision: fp16 (AMP) needs CUDA; use bf16 or fp32 on {device}")
    if precision == "auto":
        return "bf16" if has_native_bf16() else "fp32"
    if precision == "bf16" and not has_native_bf16():
        log.warning("train.precision bf16: this CPU has no native bf16 (AVX-512 BF16 / AMX); it will be slow")
    return precision


def merge_data_config(data: Mapping) -> dict:
    """The ``data`` section checked and completed by its dataset; errors name ``data.<key>``."""
    name = data.get("name", DEFAULTS["data"]["name"])
    if not isinstance(name, str):
        raise ConfigError(f"data.name: expected a string, got {name!r}")
    if name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    try:
        return dict(DATASETS[name].merge_config(data))
    except ConfigError as error:
        raise ConfigError(f"data.{error}") from None


def build_config(source: str | os.PathLike | Mapping | None, overrides=None) -> dict:
    """Merge a YAML file (or mapping) and ``KEY.PATH=VALUE`` overrides strictly over the defaults."""
    user = read_yaml(source) if isinstance(source, (str, os.PathLike)) else dict(source or {})
    try:
        config = load_config(user, {**DEFAULTS, "data": OpenMapping()}, overrides)  # data: the dataset checks it
        config["data"] = merge_data_config(config["data"])
        _validate(config)
    except ConfigError as error:
        raise attribute_error(error, source, overrides) from None  # names the file or the --set
    return config


def _validate(config: dict) -> None:
    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}")

    train, validation = config["train"], config["validation"]
    check(config["task"] in TASKS, "task", f"must be one of {sorted(TASKS)}, got {config['task']!r}")
    check(train["iterations"] > 0, "train.iterations", "must be positive")
    check(train["batch_size"] > 0, "train.batch_size", "must be positive")
    check(train["learning_rate"] > 0, "train.learning_rate", "must be positive")
    check(train["optimizer"] in ("adam", "adamw"), "train.optimizer", "must be adam or adamw")
    check(train["precision"] in ("fp32", "bf16", "fp16", "auto"), "train.precision", "must be fp32, bf16, fp16 or auto")
    check(float(train["max_minutes"]) >= 0, "train.max_minutes", "must be >= 0")
    check(train["photometric"] in ("auto", "device", "workers"), "train.photometric", "must be auto, device or workers")
    for key in ("log_every", "checkpoint_every"):
        check(train[key] > 0, f"train.{key}", "must be positive")
    for key in ("image_every", "keep_every", "num_workers", "num_threads"):
        check(train[key] >= 0, f"train.{key}", "must be >= 0")
    check(0 <= train["dustbin_prior"] < 1, "train.dustbin_prior", "must be in [0, 1)")
    check(validation["every"] >= 0, "validation.every", "must be >= 0")
    refinement = config["refinement"]
    check(float(refinement["weight"]) >= 0, "refinement.weight", "must be >= 0 (0: no refinement)")
    check(not refinement["weight"] or config["task"] == "superpoint", "refinement.weight",
          "a refinement trains on warped pairs: task superpoint")
    check(float(refinement["learning_rate"]) >= 0, "refinement.learning_rate", "must be >= 0 (0: train.learning_rate)")
    check(float(refinement["match_radius"]) > 0, "refinement.match_radius", "must be positive")
    check(int(refinement["max_keypoints"]) > 0, "refinement.max_keypoints", "must be positive")
    check(config["detection"]["subpixel"] != "learned" or bool(refinement["weight"]), "detection.subpixel",
          "learned needs a refinement trained with the network: set refinement.weight > 0")
    check(validation["batch_size"] > 0, "validation.batch_size", "must be positive")
