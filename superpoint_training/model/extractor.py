"""The one inference path: images in, keypoints, scores and descriptors out.

The node, the bag tool, the CLIs, the demo, the evaluation and homographic adaptation all call
:class:`Extractor`. Everything after the upload runs on the extractor's device, in
:class:`~superpoint_training.model.inference.SuperPointPipeline`: gray conversion, optional resize, the
network on the whole image and the post-processing of :mod:`superpoint_training.model.keypoints`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .backends import choose, make_network
from .inference import SuperPointPipeline
from .keypoints import DetectionConfig, no_limit
from .loading import LoadedWeights, load_superpoint
from .network import STRIDE

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")
ImageLike = np.ndarray | torch.Tensor


@dataclass
class Features:
    """Features of one image. Tensors live on the extractor's device until ``.numpy()``.

    keypoints (N, 2) float32 (x, y) pixels in the caller's image; scores (N,); descriptors (N, D)
    L2-normalised; ``valid`` (N,) bool only in fixed-K mode (else None); image_size (H, W).
    """

    keypoints: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray
    descriptors: torch.Tensor | np.ndarray
    image_size: tuple[int, int]
    valid: torch.Tensor | np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def _map(self, fn) -> Features:
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "image_size"}
        return Features(image_size=self.image_size, **{k: None if v is None else fn(v) for k, v in arrays.items()})

    def numpy(self) -> Features:
        return self._map(lambda t: t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t)

    def to(self, device: str | torch.device) -> Features:
        return self._map(lambda t: torch.as_tensor(t).to(device))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA when available, else the CPU with a warning; "cuda" without CUDA is an error."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        warnings.warn("no CUDA device available: SuperPoint runs on the CPU", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch has no CUDA device (use device='auto' or 'cpu')")
    return device


def _cpu_supports(precision: str) -> bool:
    checks = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}
    check = getattr(torch.ops.mkldnn, checks[precision], None)
    return bool(check()) if check is not None else True


def check_image(image: ImageLike, index: int | None = None) -> None:
    """Raise a clear ValueError for images the extractor cannot take."""
    where = "image" if index is None else f"image {index}"
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{where}: expected a numpy array or torch tensor, got {type(image).__name__}")
    shape = tuple(image.shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise ValueError(f"{where}: expected shape HxW (gray) or HxWx3 (RGB), got {shape}")
    if 0 in shape:
        raise ValueError(f"{where}: empty image of shape {shape}")
    dtype = str(image.dtype).replace("torch.", "")
    if dtype == "uint8":
        return
    if not any(dtype.startswith(k) for k in ("float", "bfloat")):
        raise ValueError(f"{where}: dtype must be uint8 or float in [0, 1], got {dtype}")
    values = torch.as_tensor(image)
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{where}: contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0 + 1e-6:
        raise ValueError(f"{where}: float images must lie in [0, 1], got [{low:g}, {high:g}] (divide uint8 data by 255)")


def equal_size_groups(images: Sequence[ImageLike]) -> list[list[int]]:
    """Indices of the images that can share one batch (same shape, dtype and array type), in order."""
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        key = (tuple(image.shape), str(image.dtype), isinstance(image, torch.Tensor))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class Extractor:
    """SuperPoint feature extractor.

    Example::

        extractor = Extractor(weights="superpoint_v6_from_tf.pth", device="cpu", max_keypoints=1000)
        features = extractor(image)      # numpy HxW or HxWx3 RGB, uint8 or float in [0, 1]
        features.keypoints, features.scores, features.descriptors

    ``weights``: a file, a state dict, a project checkpoint or a name (``"default"``,
    ``"superpoint_ros"``, ``"superpoint_v6_from_tf"``, ``"magicpoint_shapes"``, ``"untrained"``...).
    Detection options left at None take the defaults stored in the weights (a project checkpoint's,
    e.g. ``superpoint_ros``: threshold 0.002 and ``subpixel="gaussian"``) or the weights format's (the
    publishing implementation's: integer pixels). ``subpixel`` refines each keypoint within its pixel
    from the score map (:func:`~superpoint_training.model.keypoints.refine_keypoints`; ``"learned"``:
    the trained refinement that the weights carry, :mod:`superpoint_training.model.refinement`). ``scales``
    runs the network on an image pyramid (e.g. ``(1.0, 0.5)``) and keeps the best keypoints of all
    levels. ``resize`` resizes so that the longer side has that many pixels (keypoints
    are returned in the caller's image). ``fixed_keypoints`` returns exactly ``max_keypoints``
    entries per image with a ``valid`` mask.

    ``backend`` runs the network in ``"torch"`` (the default, any device), ``"onnxruntime"`` or
    ``"openvino"`` (CPU; ``pip install .[cpu]``); ``precision`` is the network's (``"fp32"``,
    ``"bf16"``, ``"fp16"``); post-processing is float32 whatever they are. ``"auto"`` for either
    picks the fastest path that keeps the accuracy bounds on this machine
    (:func:`superpoint_training.model.backends.choose`); the defaults, torch fp32, are the exact path
    that evaluation, homographic adaptation and the equivalence tests pin.
    """

    def __init__(
        self,
        weights: str | os.PathLike | dict | LoadedWeights | None = "default",
        device: str | torch.device = "auto",
        *,
        detection_threshold: float | None = None,
        nms_radius: int | None = None,
        remove_borders: int | None = None,
        max_keypoints: int | None = None,
        fixed_keypoints: bool = False,
        descriptor_sampling: str | None = None,
        subpixel: str | None = None,
        scales: Sequence[float] | str | None = None,
        precision: str = "fp32",
        resize: int | None = None,
        warmup: bool | tuple[int, int] = True,
        backend: str = "torch",
    ):
        if isinstance(weights, LoadedWeights):  # copy: the model is cast below, the caller's stays as it was
            weights = dataclasses.replace(weights, model=copy.deepcopy(weights.model))
        self.loaded = weights if isinstance(weights, LoadedWeights) else load_superpoint(weights)
        self.device = resolve_device(device)
        if precision != "auto" and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {['auto', *PRECISIONS]}, got {precision!r}")
        if backend not in BACKEND_CHOICES:
            raise ValueError(f"backend must be one of {list(BACKEND_CHOICES)}, got {backend!r}")
        self.backend, self.precision = choose(self.device, backend, precision)
        try:
            network = self._build_network()
        except Exception as error:  # noqa: BLE001  (auto must not fail where torch works)
            if backend != "auto" or self.backend == "torch":
                raise
            log.warning("backend %s could not be set up (%s); falling back to torch", self.backend, error)
            self.backend, self.precision = choose(self.device, "torch", precision)
            network = self._build_network()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        options = dict(self.loaded.detection_defaults)
        given = {
            "detection_threshold": detection_threshold,
            "nms_radius": nms_radius,
            "remove_borders": remove_borders,
            "descriptor_sampling": descriptor_sampling,
            "subpixel": subpixel,
            "scales": scales,
        }
        options.update({k: v for k, v in given.items() if v is not None})
        config = self._with_refinement(
            DetectionConfig(max_keypoints=max_keypoints, fixed_keypoints=fixed_keypoints, **options))
        self.pipeline = SuperPointPipeline(
            network, config, resize=self._check_resize(resize), dtype=self.dtype, channels_last=self.backend == "torch"
        )
        if warmup is True and self.backend != "torch":
            warmup = False  # a compiled backend warms up per image size: the first frame of each size does
        if warmup:
            shape = warmup if isinstance(warmup, tuple) else ((480, 640) if self.device.type == "cuda" else (120, 160))
            self.warmup(shape)

    def _build_network(self):
        """Cast the torch network to this extractor's device and precision, or compile it for its backend."""
        precision = self.precision
        if self.device.type == "cpu" and self.backend == "torch" and precision != "fp32" and not _cpu_supports(precision):
            warnings.warn(
                f"precision={precision!r}: this CPU has no native {precision} (AVX512-BF16/AMX); expect it to be "
                "several times slower than fp32",
                RuntimeWarning,
                stacklevel=3,
            )
        self.dtype = PRECISIONS[precision] if self.backend == "torch" else torch.float32
        # NHWC lets oneDNN (CPU) and cuDNN (tensor cores) pick their fastest convolutions.
        self.model = self.loaded.model.to(self.device, self.dtype).eval().to(memory_format=torch.channels_last)
        return make_network(self.backend, self.model, precision)

    def _with_refinement(self, config: DetectionConfig) -> DetectionConfig:
        """``config`` holding the weights' trained refinement on this device (float32, like all
        post-processing); ``subpixel="learned"`` without one is a clear error."""
        if self.loaded.refinement is not None:
            if getattr(self, "_refinement", None) is None:
                self._refinement = copy.deepcopy(self.loaded.refinement).to(self.device, torch.float32).eval()
            config.refinement = self._refinement
        elif config.subpixel == "learned":
            raise ValueError(f"subpixel='learned' needs weights that carry a trained refinement; "
                             f"{self.loaded.source} carries none (train one: python -m superpoint_training.train_refinement)")
        return config

    @staticmethod
    def _check_resize(resize: int | None) -> int | None:
        resize = no_limit(resize)
        if resize is None:
            return None
        if resize < STRIDE:
            raise ValueError(f"resize must be at least {STRIDE} pixels, got {resize}")
        return int(resize)

    @property
    def config(self) -> DetectionConfig:
        return self.pipeline.config

    @property
    def resize(self) -> int | None:
        return self.pipeline.resize

    @property
    def weights_description(self) -> str:
        return self.loaded.description

    @property
    def descriptor_dim(self) -> int:
        return self.model.config.descriptor_dim

    def configure(self, **options) -> None:
        """Change detection options (and ``resize``) at run time; invalid values leave the old ones."""
        resize = options.pop("resize", self.resize)
        unknown = set(options) - {f.name for f in dataclasses.fields(DetectionConfig)}
        if unknown:
            raise ValueError(f"unknown extractor options: {sorted(unknown)}")
        new = self._with_refinement(DetectionConfig(**{**dataclasses.asdict(self.config), **options}))
        self.pipeline.resize = self._check_resize(resize)
        self.pipeline.config = new

    def warmup(self, image_size: tuple[int, int] = (120, 160), batch_size: int = 1) -> None:
        """Run once on a blank batch so that the first real frame does not pay for kernel set-up."""
        self.extract_batch(torch.zeros(batch_size, 1, *image_size, device=self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> Features | list[Features]:
        if isinstance(images, (np.ndarray, torch.Tensor)):
            return self.extract([images])[0]
        return self.extract(list(images))

    def extract(self, images: list[ImageLike]) -> list[Features]:
        """Extract features from a list of images; images of equal size share one device call."""
        for i, image in enumerate(images):
            check_image(image, i if len(images) > 1 else None)
        results: list[Features | None] = [None] * len(images)
        for indices in equal_size_groups(images):
            batch = self.upload([images[i] for i in indices])
            for i, features in zip(indices, self.extract_batch(batch, as_list=True), strict=True):
                results[i] = features
        return results  # type: ignore[return-value]

    def upload(self, images: list[ImageLike]) -> torch.Tensor:
        """Same-shape images to a (B, 1, H, W) float tensor in [0, 1] on the device (gray)."""
        if isinstance(images[0], np.ndarray):
            stacked = torch.from_numpy(np.ascontiguousarray(np.stack(images)))
        else:
            stacked = torch.stack([torch.as_tensor(im) for im in images])
        stacked = stacked.to(self.device, non_blocking=True)
        batch = stacked.float().div_(255.0) if stacked.dtype == torch.uint8 else stacked.float()
        if batch.ndim == 3:
            return batch[:, None]
        return self.pipeline.to_gray(batch.permute(0, 3, 1, 2))

    @torch.inference_mode()
    def extract_batch(self, batch: torch.Tensor, as_list: bool = False) -> dict[str, torch.Tensor] | list[Features]:
        """Extract from a (B, 1, H, W) float tensor in [0, 1] (or (B, 3, H, W) RGB) on the device.

        Returns the batched dict of :func:`superpoint_training.model.keypoints.detect` (keypoints
        (B, K, 2), scores (B, K), valid (B, K), descriptors (B, K, D)), or with ``as_list`` one
        :class:`Features` per image (only the valid keypoints unless in fixed-K mode).
        """
        height, width = batch.shape[-2:]
        output = self.pipeline(batch.to(self.device))
        if not as_list:
            return output
        return self._split(output, (int(height), int(width)))

    @torch.inference_mode()
    def dense_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """Keypoint probabilities before NMS: (B, 1, H, W) float batch in [0, 1] on the device to
        (B, H, W) float32 maps (softmax, dustbin dropped, depth-to-space; zero beyond the first
        8*floor(H/8) rows and 8*floor(W/8) columns). For homographic adaptation, which aggregates
        these maps over warps before selecting keypoints."""
        return self.pipeline.dense_scores(batch.to(self.device))

    def forget_shapes(self, unwanted: Callable[[tuple[int, ...]], bool]) -> int:
        """Free what the backend compiled for the network input shapes (B, 1, H, W) that ``unwanted``
        picks (OpenVINO keeps one compiled model per shape, several hundred MiB for a batch of large
        frames; torch and ONNX Runtime keep none); how many were dropped."""
        forget = getattr(self.pipeline.network, "forget_shapes", None)  # nn.Module (torch) has none
        return forget(unwanted) if forget is not None else 0

    def _split(self, output: dict[str, torch.Tensor], image_size: tuple[int, int]) -> list[Features]:
        keypoints, scores, descriptors, valid = (
            output[k] for k in ("keypoints", "scores", "descriptors", "valid")
        )
        if self.config.fixed_keypoints:
            return [
                Features(keypoints[i], scores[i], descriptors[i], image_size, valid[i])
                for i in range(keypoints.shape[0])
            ]
        counts = valid.sum(1).tolist()  # valid entries are a prefix: top-k is sorted
        return [
            Features(keypoints[i, :n], scores[i, :n], descriptors[i, :n], image_size)
            for i, n in enumerate(counts)
        ]
