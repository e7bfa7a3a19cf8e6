"""SuperPoint training: the detector loss on an image and its warp plus the descriptor hinge loss.

The task contract is :mod:`.task`. Per iteration (after the reference's
``models/super_point.py``):

- ``augment``: the batch (images with exported labels, :mod:`superpoint_training.data.image_folder`)
  becomes warped pairs on the device (:class:`~superpoint_training.data.pairs.WarpedPairs`:
  ``data.warped_pair`` homographies, then ``data.augmentation.photometric`` on each image);
- ``loss``: one forward pass over both images;
  ``detector(image) + detector(warped) + lambda_loss * descriptor`` with
  :func:`~.losses.detector_loss` and :func:`~.losses.descriptor_loss`
  (``lambda_d``, positive margin 1, negative margin 0.2; ``loss.descriptor``: :data:`DESCRIPTOR_LOSSES`);
- with ``refinement.weight`` > 0, plus ``weight * `` the sub-pixel refinement's distance on the
  pair's matched detections (:func:`~.refinement.joint_refinement_loss`): the refinement
  (``subpixel: learned``) trains with the network and every checkpoint stores it;
- ``validate``: detector precision/recall against the validation labels, and on the validation
  patches (``data.validation_patches``, generated once from the validation images when missing):
  repeatability (top 300 in the shared view, 3 px) and descriptor matching (top 1000, cross-checked
  nearest neighbours: matching score, homography correctness at 3 px, NN mAP).

Loss weights: ``loss.preset`` names a set from :data:`LOSS_PRESETS`, which replaces ``lambda_d``
and ``lambda_loss``; left empty, the explicit ``loss.*`` values are used.

NaN guards: images are cleaned of NaN and clamped, non-finite or singular homographies become the
identity (both on the device, no host sync); the descriptor loss runs in float32 on
L2-normalised descriptors (with an epsilon); a batch whose loss is still not finite contributes no
gradient and is counted in ``nonfinite_batches`` (one host sync per iteration); the trainer stops
a run whose logged loss is not finite, keeping the last good checkpoint. ``descriptor_mean_cosine``
(logged) is the mean cosine between the descriptors of different cells: near 1 means the descriptors
collapsed (a short run with a high learning rate does that; 0.3-0.5 is usual).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.config import ConfigError
from ..model.inference import SuperPointPipeline
from ..model.keypoints import DetectionConfig, logits_to_scores
from ..model.loading import load_superpoint
from ..model.network import ModelConfig
from ..model.refinement import SubpixelRefinement, refinement_to_dict
from .losses import descriptor_loss, detector_loss, sample_correspondences, sampled_descriptor_loss
from .refinement import joint_refinement_loss
from .task import Task, overlay

log = logging.getLogger(__name__)

# lambda_d, lambda_loss and the batch size and learning rate they were used with.
LOSS_PRESETS: dict[str, dict[str, float]] = {
    # The SuperPoint paper (DeTone et al., 2018), section 5: lambda_d 250, lambda 0.0001.
    "paper": {"lambda_d": 250.0, "lambda_loss": 0.0001, "batch_size": 32, "learning_rate": 0.0001},
    # rpautrat/SuperPoint's superpoint_coco.yaml as first published.
    "reference_config": {"lambda_d": 0.05, "lambda_loss": 10000.0, "batch_size": 2, "learning_rate": 0.0001},
    # The setting the released superpoint_v6_from_tf weights were trained with (300k iterations).
    "v6_release": {"lambda_d": 800.0, "lambda_loss": 1.0, "batch_size": 3, "learning_rate": 0.0001},
}
# loss.descriptor -> what it is:
# - reference: the reference's current dense hinge loss (ReLU on the cosines, then the similarity
#   tensor L2-normalised over both images' cells; losses.descriptor_loss(similarity="reference")),
#   the loss lambda_d 800 / lambda_loss 1 (v6_release) and 0.05 / 10000 (reference_config) were tuned for;
# - dense_hinge: the same hinge on plain cosines (the paper; the reference before 2019-11-25);
# - sampled_info_nce: a contrastive loss over sampled correspondences (not the reference).
DESCRIPTOR_LOSSES = ("reference", "dense_hinge", "sampled_info_nce")
# The loss.descriptor each preset's weights were tuned for (reference-facts: the reference's weights
# were tuned for its normalised loss; the paper's for plain cosines).
PRESET_LOSS = {"paper": "dense_hinge", "reference_config": "reference", "v6_release": "reference"}
REPEATABILITY_TOP_K, MATCHING_TOP_K, PIXEL_THRESHOLD = 300, 1000, 3.0


def loss_weights(loss_config: dict) -> dict[str, float]:
    """``lambda_d``, ``lambda_loss`` and the margins after applying ``loss.preset`` (if any)."""
    weights = {k: float(loss_config[k]) for k in ("lambda_d", "lambda_loss", "positive_margin", "negative_margin")}
    preset = loss_config.get("preset") or ""
    if preset:
        if preset not in LOSS_PRESETS:
            raise ConfigError(f"loss.preset: unknown preset {preset!r} (known: {', '.join(LOSS_PRESETS)})")
        weights.update({k: LOSS_PRESETS[preset][k] for k in ("lambda_d", "lambda_loss")})
    return weights


def build_refinement(options: dict) -> SubpixelRefinement:
    """The refinement of the ``refinement`` section (its last layer at zero: the Gaussian fit)."""
    try:
        return SubpixelRefinement(int(options["radius"]), int(options["hidden"]), float(options["max_shift"]),
                                  int(options["image_radius"]))
    except ValueError as error:
        raise ConfigError(f"refinement: {error}") from None


class SuperPointTask(Task):
    """Detector and descriptor training on warped pairs; see the module docstring."""

    name = "superpoint"

    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        from ..data.pairs import WARPED_PAIR, WarpedPairs

        data = config["data"]
        self.weights = loss_weights(config["loss"])
        if config["loss"]["descriptor"] not in DESCRIPTOR_LOSSES:
            raise ConfigError(f"loss.descriptor: {config['loss']['descriptor']!r} is not one of {', '.join(DESCRIPTOR_LOSSES)}")
        preset = config["loss"].get("preset") or ""
        if preset:
            expected = LOSS_PRESETS[preset]
            train = config["train"]
            if train["batch_size"] != expected["batch_size"] or train["learning_rate"] != expected["learning_rate"]:
                log.warning("loss.preset %s was used with batch %d and lr %g; this run uses batch %d, lr %g",
                            preset, expected["batch_size"], expected["learning_rate"], train["batch_size"],
                            train["learning_rate"])
            if config["loss"]["descriptor"] != PRESET_LOSS[preset]:
                log.warning("loss.preset %s was tuned for loss.descriptor %s; this run uses %s, a different loss "
                            "for the same weights", preset, PRESET_LOSS[preset], config["loss"]["descriptor"])
        if "warped_pair" in data:  # an image-folder dataset: it left the photometric changes to us
            from ..data.image_folder import merge_config

            merged = merge_config(data)
            if not merged["warped_pair"]["enable"]:
                raise ConfigError("data.warped_pair.enable: must be true for task superpoint")
            self.pairs = WarpedPairs(merged["warped_pair"], merged["augmentation"]["photometric"])
            self.patches_name = merged["validation_patches"]
            self.data_config = merged
        else:  # a dataset that augments its own images (Synthetic Shapes): warp only
            self.pairs = WarpedPairs(WARPED_PAIR, None)
            self.patches_name = ""
            self.data_config = None
        self.nonfinite = 0
        self._patches: list | None = None
        self.refinement = build_refinement(config["refinement"]) if config["refinement"]["weight"] else None

    def model_config(self) -> ModelConfig:
        model_config = super().model_config()
        if not model_config.descriptor_dim:
            raise ConfigError("model.descriptor_dim: task superpoint trains descriptors: set it (256)")
        return model_config

    def augment(self, batch: dict) -> dict:
        return self.pairs(batch)

    def loss(self, model, batch):
        b = batch["image"].shape[0]
        logits, descriptors = model(torch.cat((batch["image"], batch["warped_image"])))
        det0 = detector_loss(logits[:b], batch["keypoint_map"], batch.get("valid_mask"))
        # the reference leaves the area outside the warp out of the detector loss; counting it (labels:
        # no keypoint) teaches the network that a flat black area holds no keypoints
        outside = self.config["loss"]["detector_outside_warp"]
        det1 = detector_loss(logits[b:], batch["warped_keypoint_map"], None if outside else batch["warped_valid_mask"])
        w = self.weights
        options = self.config["loss"]
        if options["descriptor"] == "sampled_info_nce":
            points0, points1, valid = sample_correspondences(
                batch["keypoint_map"], batch["homography"], batch["warped_valid_mask"], options["num_samples"],
                options["keypoint_fraction"],
            )
            desc = sampled_descriptor_loss(descriptors[:b], descriptors[b:], points0, points1, valid,
                                           temperature=options["temperature"])
        else:
            desc = descriptor_loss(
                descriptors[:b], descriptors[b:], batch["homography"], batch["warped_valid_mask"],
                lambda_d=w["lambda_d"], positive_margin=w["positive_margin"], negative_margin=w["negative_margin"],
                similarity="reference" if options["descriptor"] == "reference" else "cosine",
            )
        loss = det0 + det1 + w["lambda_loss"] * desc
        refinement_scalars = {}
        if self.refinement is not None:
            images = torch.cat((batch["image"], batch["warped_image"]))
            refine, refinement_scalars = joint_refinement_loss(self.refinement, logits, images, batch["homography"],
                                                               self.config["refinement"])
            loss = loss + self.config["refinement"]["weight"] * refine
            refinement_scalars["refinement_loss"] = refine.detach()
        if not bool(torch.isfinite(loss)):  # no gradient from this batch; counted
            self.nonfinite += 1
            loss = logits.float().sum() * 0.0 + descriptors.float().sum() * 0.0
            if self.refinement is not None:
                loss = loss + sum(p.sum() for p in self.refinement.parameters()) * 0.0
            loss = torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
        with torch.no_grad():  # collapse indicator: mean cosine between the descriptors of different cells
            unit = torch.nn.functional.normalize(descriptors[:b].float().flatten(2), dim=1)  # (B, D, N)
            n = unit.shape[-1]
            mean_cosine = ((unit.sum(-1).pow(2).sum(-1) - n) / max(n * (n - 1), 1)).mean()
        scalars = {
            "descriptor_mean_cosine": mean_cosine,
            "detector_loss": det0.detach(),
            "warped_detector_loss": det1.detach(),
            "descriptor_loss": desc.detach(),
            "nonfinite_batches": torch.tensor(float(self.nonfinite)),
            **refinement_scalars,
        }
        return loss, scalars, {"logits": logits[:b].detach(), "warped_logits": logits[b:].detach()}

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {} if self.refinement is None else {"refinement": self.refinement}

    def load_pretrained_modules(self, weights: str) -> str:
        """The pretrained file's refinement (one trained with the network frozen, or by an earlier run)
        when it has the configured shape; else the refinement starts at the Gaussian fit."""
        if self.refinement is None:
            return ""
        stored = load_superpoint(weights).refinement
        if stored is None:
            return "; the refinement starts at the Gaussian fit (the file has none)"
        if stored.config() != self.refinement.config():
            return (f"; the refinement starts at the Gaussian fit (the file's is {stored.config()}, "
                    f"this run's {self.refinement.config()})")
        self.refinement.load_state_dict(stored.state_dict())
        return f"; the refinement from the same file ({stored.config()})"

    def module_learning_rate(self, name: str) -> float | None:
        return float(self.config["refinement"]["learning_rate"]) or None

    def module_records(self) -> dict:
        """The refinement in the format of :func:`~superpoint_training.model.loading.attach_refinement`,
        so that the Extractor loads it from ``weights.pth`` (``subpixel: learned``)."""
        return {} if self.refinement is None else {"refinement": refinement_to_dict(self.refinement)}

    def load_module_records(self, state: dict) -> None:
        if self.refinement is None:
            return
        if not state.get("refinement"):
            raise ConfigError("refinement.weight: the checkpoint to resume has no refinement (it was trained without)")
        self.refinement.load_state_dict(state["refinement"]["state"])

    # ---- validation --------------------------------------------------------------------------
    def patches(self) -> list:
        """The validation pairs (generated on first use from the validation images)."""
        if self._patches is None:
            self._patches = []
            if self.patches_name and self.data_config is not None:
                from ..data.image_folder import ImageFolder, labels_path
                from ..data.validation_patches import generate_patches, load_patches

                folder = labels_path(self.patches_name)
                if not folder.is_dir():
                    val = ImageFolder({**self.config["data"], "labels": "", "validation_labels": ""}, "validation")
                    log.info("writing validation patches to %s from %d images", folder, len(val.paths))
                    generate_patches(val.paths, folder, self.data_config["resize"] or (240, 320))
                self._patches = load_patches(Path(folder))
        return self._patches

    @torch.no_grad()
    def pair_metrics(self, model: torch.nn.Module) -> dict[str, float]:
        """Repeatability and matching on the validation patches (empty when there are none)."""
        from ..evaluation.metrics import descriptor_metrics, repeatability

        pairs = self.patches()
        if not pairs:
            return {}
        det = self.config["detection"]
        options = DetectionConfig(det["detection_threshold"], det["nms_radius"], det["remove_borders"],
                                  max_keypoints=MATCHING_TOP_K)
        pipeline = SuperPointPipeline(model, options)
        records: dict[str, list[float]] = {}
        for _, image1, image2, H in pairs:
            features = []
            for image in (image1, image2):
                h, w = image.shape
                out = pipeline(torch.from_numpy(image).to(self.device).float().div(255)[None, None])
                n = int(out["valid"][0].sum())
                features.append((out["keypoints"][0, :n].cpu().numpy(), out["scores"][0, :n].cpu().numpy(),
                                 out["descriptors"][0, :n].float().cpu().numpy(), (h, w)))
            (k0, s0, d0, size0), (k1, s1, d1, size1) = features
            rep = repeatability(k0, s0, k1, s1, H, size0, size1, REPEATABILITY_TOP_K, PIXEL_THRESHOLD)
            match = descriptor_metrics(k0, s0, d0, k1, s1, d1, H, size0, size1, k=MATCHING_TOP_K,
                                       match_threshold=PIXEL_THRESHOLD)
            values = {"repeatability": rep["repeatability"], "localization_error": rep["localization_error"],
                      "matching_score": match["matching_score"], "homography_correct_e3": match["correct_e3"],
                      "nn_map": match["nn_map"]}
            for key, value in values.items():
                records.setdefault(key, []).append(float(value))
        return {f"patches/{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                for k, v in records.items()}

    def validate(self, model: torch.nn.Module, batches: Iterable[dict]) -> dict[str, float]:
        from .detector_metrics import evaluate_detector

        options = self.config["validation"]
        was_training = model.training
        metrics = evaluate_detector(
            model, batches, self.device,
            distance_threshold=options["distance_threshold"], detection_threshold=options["detection_threshold"],
            nms_radius=options["nms_radius"], remove_borders=options["remove_borders"], min_score=options["min_score"],
        )
        model.eval()
        try:
            metrics.update(self.pair_metrics(model))
        finally:
            model.train(was_training)
        return metrics

    def images(self, batch: dict, outputs: dict, count: int = 4) -> dict[str, Any]:
        n = min(count, batch["image"].shape[0])
        pictures = {}
        for key, image, kmap, logits in (
            ("train/prediction", "image", "keypoint_map", "logits"),
            ("train/warped_prediction", "warped_image", "warped_keypoint_map", "warped_logits"),
        ):
            heat = logits_to_scores(outputs[logits][:n])
            pictures[key] = overlay(batch[image][:n], batch[kmap][:n], heat).cpu()
        return pictures
