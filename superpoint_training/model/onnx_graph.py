"""The ONNX graph of SuperPoint with its post-processing, in fixed-K mode: export, run, check.

The graph is the Extractor's own device function
(:class:`~superpoint_training.model.inference.SuperPointPipeline`: the network on the whole image,
then the post-processing with ``fixed_keypoints=True``), traced at one image size. Inputs, outputs
and examples: the command ``python -m superpoint_training.export_onnx``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backends import pair_same_points
from .extractor import Extractor
from .inference import SuperPointPipeline
from .network import STRIDE

OUTPUT_NAMES = ("keypoints", "scores", "descriptors", "valid")


class ExportModule(nn.Module):
    """SuperPoint plus fixed-K post-processing as one module: (B, 1, H, W) image to four tensors."""

    def __init__(self, extractor: Extractor):
        super().__init__()
        if not extractor.config.fixed_keypoints:
            raise ValueError("export needs an Extractor in fixed-K mode (fixed_keypoints=True, max_keypoints=K)")
        self.pipeline = SuperPointPipeline(extractor.model, extractor.config, resize=extractor.resize)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.pipeline(image)
        return out["keypoints"], out["scores"], out["descriptors"], out["valid"]


def make_extractor(weights: str | os.PathLike | dict = "default", max_keypoints: int = 1024, **options) -> Extractor:
    """A CPU fp32 Extractor in fixed-K mode: the reference the exported model must reproduce."""
    options = {k: v for k, v in options.items() if v is not None}
    return Extractor(weights, device="cpu", max_keypoints=max_keypoints, fixed_keypoints=True, warmup=False,
                     **options)


def export_onnx(
    extractor: Extractor,
    output: str | os.PathLike,
    height: int = 480,
    width: int = 640,
    batch: int | str = 1,
    opset: int = 18,
    exporter: str = "dynamo",
) -> Path:
    """Write the ONNX model of ``extractor`` (fixed-K, fp32, CPU) for ``height`` x ``width`` images.

    ``batch``: a fixed batch size or ``"dynamic"``. ``exporter``: ``"dynamo"`` (torch.export, the
    default of torch >= 2.9) or ``"torchscript"`` (the legacy tracer, for older torch).
    """
    if height < STRIDE or width < STRIDE:
        raise ValueError(f"image size must be at least {STRIDE}x{STRIDE}, got {height}x{width}")
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    dynamic = batch == "dynamic"
    example_batch = 2 if dynamic else int(batch)
    if example_batch < 1:
        raise ValueError(f"batch must be positive or 'dynamic', got {batch!r}")
    module = ExportModule(extractor).eval().requires_grad_(False)
    example = torch.rand(example_batch, 1, height, width)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    options: dict = {"input_names": ["image"], "output_names": list(OUTPUT_NAMES), "opset_version": opset}
    if exporter == "dynamo":
        options.update(dynamo=True, external_data=False)
        if dynamic:
            options["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    else:
        options["dynamo"] = False
        if dynamic:
            options["dynamic_axes"] = {name: {0: "batch"} for name in ("image", *OUTPUT_NAMES)}
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    try:
        # Tracer chatter (constant folding, deprecations, "torchvision is not installed") drowns the report.
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(output), **options)
    finally:
        onnx_log.setLevel(level)
    _add_metadata(output, extractor, height, width, batch)
    return output


def _add_metadata(path: Path, extractor: Extractor, height: int, width: int, batch: int | str) -> None:
    import onnx

    model = onnx.load(str(path))
    meta = {
        "producer": "superpoint_ros",
        "weights": extractor.weights_description,
        "detection_config": json.dumps(dataclasses.asdict(extractor.config)),
        "image_size": json.dumps([height, width]),
        "batch": str(batch),
        "descriptor_dim": str(extractor.descriptor_dim),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def run_onnx(path: str | os.PathLike, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported model with ONNX Runtime on the CPU; ``images`` (B, 1, H, W) float32 in [0, 1]."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {"image": np.ascontiguousarray(images, dtype=np.float32)})
    return dict(zip(OUTPUT_NAMES, outputs, strict=True))


def compare_with_extractor(
    onnx_outputs: dict[str, np.ndarray], extractor: Extractor, images: np.ndarray
) -> dict[str, float]:
    """How far the ONNX outputs are from the Extractor's on the same (B, 1, H, W) images.

    Keypoints are compared as sets (valid entries only, matched by position) because scores that
    tie to within float rounding may come out in either order. Returns the number of valid
    keypoints, the count mismatch, the keypoints only one side found, and the largest score and
    descriptor differences over the shared keypoints.
    """
    reference = extractor.extract_batch(torch.from_numpy(images))
    reference = {k: v.cpu().numpy() for k, v in reference.items()}
    stats = {"valid": 0, "count_mismatch": 0, "unmatched": 0, "max_score_diff": 0.0, "max_descriptor_diff": 0.0}
    for i in range(images.shape[0]):
        ours = {k: onnx_outputs[k][i][onnx_outputs["valid"][i]] for k in ("keypoints", "scores", "descriptors")}
        theirs = {k: reference[k][i][reference["valid"][i]] for k in ("keypoints", "scores", "descriptors")}
        stats["valid"] += len(theirs["keypoints"])
        stats["count_mismatch"] += abs(len(ours["keypoints"]) - len(theirs["keypoints"]))
        pairs, _ = pair_same_points(ours["keypoints"], theirs["keypoints"], tolerance=1e-3)
        stats["unmatched"] += len(ours["keypoints"]) + len(theirs["keypoints"]) - 2 * len(pairs)
        if len(pairs):
            a, b = pairs.T
            stats["max_score_diff"] = max(stats["max_score_diff"],
                                          float(np.abs(ours["scores"][a] - theirs["scores"][b]).max()))
            if ours["descriptors"].size:
                stats["max_descriptor_diff"] = max(
                    stats["max_descriptor_diff"],
                    float(np.abs(ours["descriptors"][a] - theirs["descriptors"][b]).max()),
                )
    return stats


def sample_photo(height: int, width: int) -> np.ndarray:
    """A real photo (scikit-image's CC0 astronaut, gray) at the export size, (1, 1, H, W) float32; noise
    when scikit-image is missing."""
    try:
        import cv2
        from skimage import data

        gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
        image = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    except ImportError:
        image = np.random.default_rng(0).random((height, width), dtype=np.float32)
    return image[None, None]
