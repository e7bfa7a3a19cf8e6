"""Inference backends for the network, and the automatic choice of backend and precision.

The Extractor runs its one device function (:class:`~superpoint_training.model.inference.SuperPointPipeline`)
with one of these as the network: eager ``torch`` (any device), or, on the CPU, ``onnxruntime`` or
``openvino`` (the optional extra ``pip install .[cpu]``). Only the network moves: post-processing
stays in torch, in float32, so options, coordinates and outputs are the torch path's. Any image size
works: the network is exported once per weights with dynamic batch, height and width.

Compiled models are cached under ``~/.cache/superpoint_ros/compiled/`` (``SUPERPOINT_CACHE_DIR``):
the ONNX file is named by a hash of the weights and the torch version; ONNX Runtime's optimised
graph by the weights and the ONNX Runtime version; OpenVINO's compiled blobs live in a folder per
OpenVINO version, keyed by OpenVINO from the weights, the input size and the precision hint. A
second start with the same weights, size, precision and versions exports nothing and reads the
compiled model back (0.6 s instead of 1.9 s at 480x640 on a 2-core EPYC).

``auto`` (:func:`choose`): CUDA runs torch fp32 as before; a CPU with native bf16 (AVX-512 BF16 or
AMX, read from ``/proc/cpuinfo``) runs the fastest path that kept the accuracy bounds on real photos
(``test/test_backends.py``): OpenVINO bf16, else torch bf16; any other CPU the fastest fp32 path
(OpenVINO, then ONNX Runtime, then torch). A backend whose wheel is missing is skipped.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import logging
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..common.files import atomic_path
from ..common.machine import has_native_bf16

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")
EXTRA_HINT = "install the optional CPU backends with `pip install .[cpu]` (onnxruntime, openvino)"
MAX_COMPILED_SHAPES = 8  # OpenVINO: input shapes kept compiled in memory (recompiling is a cache read)
# precisions each backend runs (the network only; post-processing is float32)
BACKEND_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}
# CPU paths that keep the bounds (>= 95 % of the fp32 keypoints at the same pixel, descriptor cosine
# median >= 0.999 and 1st percentile >= 0.99; test/test_backends.py), fastest first (BENCHMARKS.md).
CPU_PATHS_NATIVE_BF16 = (
    ("openvino", "bf16"), ("torch", "bf16"), ("openvino", "fp32"), ("onnxruntime", "fp32"), ("torch", "fp32"),
)
CPU_PATHS_FP32 = (("openvino", "fp32"), ("onnxruntime", "fp32"), ("torch", "fp32"))


class BackendUnavailable(ImportError):
    """The backend's wheel is not installed."""


def is_available(backend: str) -> bool:
    """Whether the backend's wheel is installed (without importing it)."""
    if backend == "torch":
        return True
    if backend in sys.modules:
        return sys.modules[backend] is not None
    try:
        return importlib.util.find_spec(backend) is not None
    except (ImportError, ValueError):
        return False


def _import(backend: str):
    try:
        return importlib.import_module(backend)
    except ImportError as error:
        raise BackendUnavailable(f"backend={backend!r} needs the {backend} wheel: {EXTRA_HINT}") from error


def choose(device: torch.device, backend: str = "auto", precision: str = "auto",
           flags: frozenset[str] | None = None) -> tuple[str, str]:
    """Resolve ``auto`` backend and precision for ``device``; explicit values are checked and kept."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {('auto', *PRECISIONS)}, got {precision!r}")
    if device.type != "cpu":
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend={backend!r} runs on the CPU only; use device='cpu' (or backend='torch')")
        return "torch", "fp32" if precision == "auto" else precision
    if backend != "auto" and precision != "auto":
        if precision not in BACKEND_PRECISIONS[backend]:
            raise ValueError(f"backend={backend!r} runs {BACKEND_PRECISIONS[backend]}, not precision={precision!r}")
        return backend, precision
    paths = CPU_PATHS_NATIVE_BF16 if has_native_bf16(flags) else CPU_PATHS_FP32
    for path_backend, path_precision in (*paths, ("torch", "fp32")):
        if backend not in ("auto", path_backend) or precision not in ("auto", path_precision):
            continue
        if is_available(path_backend):
            return path_backend, path_precision
    if backend == "auto":  # an explicit precision that no accurate path runs: torch runs every precision
        return "torch", precision
    if not is_available(backend):
        raise BackendUnavailable(f"backend={backend!r} needs the {backend} wheel: {EXTRA_HINT}")
    return backend, "fp32"


def cache_dir() -> Path:
    from .loading import CACHE_DIR

    return Path(CACHE_DIR) / "compiled"


def weights_hash(model: nn.Module) -> str:
    """A short hash of the network's layout and float32 weights (the cache key of its exports)."""
    digest = hashlib.sha256(repr(model.config).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_network(model: nn.Module, directory: Path | None = None) -> Path:
    """The network alone as ONNX (input ``image`` (B, 1, H, W), outputs ``logits`` and, with a
    descriptor head, ``descriptors``), dynamic in B, H and W; exported once per weights and torch
    version, then read from the cache."""
    directory = cache_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    version = torch.__version__.split("+")[0]
    path = directory / f"superpoint-{weights_hash(model)}-torch{version}.onnx"
    if path.exists():
        return path
    network = _NetworkForExport(model).eval()
    outputs = ["logits", "descriptors"] if model.config.descriptor_dim else ["logits"]
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: "cells_y", 3: "cells_x"} for name in outputs})
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    try:
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")
            torch.onnx.export(network, (torch.rand(1, 1, 64, 80),), str(tmp), input_names=["image"],
                              output_names=outputs, dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        onnx_log.setLevel(level)
    log.info("exported the network to %s", path)
    return path


class _NetworkForExport(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format)

    def forward(self, image: torch.Tensor):
        logits, dense = self.model(image)
        return (logits,) if dense is None else (logits, dense)


class _ExportedNetwork:
    """Common part of the ONNX-based backends: the network's call signature, arrays in and out."""

    backend = ""

    def __init__(self, model: nn.Module, precision: str):
        if precision not in BACKEND_PRECISIONS[self.backend]:
            raise ValueError(f"backend={self.backend!r} runs {BACKEND_PRECISIONS[self.backend]}, "
                             f"not precision={precision!r}")
        self.module = _import(self.backend)
        self.config = model.config
        self.precision = precision
        self.path = export_network(model)

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def forget_shapes(self, unwanted: Callable[[tuple[int, ...]], bool]) -> int:
        """Free what was compiled for the input shapes ``unwanted`` picks; how many were dropped."""
        return 0

    def __call__(self, image: torch.Tensor, with_descriptors: bool = True):
        arrays = self.run(np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy()))
        logits = torch.from_numpy(arrays[0]).to(image.device)
        dense = torch.from_numpy(arrays[1]).to(image.device) if with_descriptors and len(arrays) > 1 else None
        return logits, dense


class OnnxRuntimeNetwork(_ExportedNetwork):
    """The network in ONNX Runtime (CPU provider, fp32). The graph optimised by the portable
    passes (``ORT_ENABLE_EXTENDED``) is cached; the CPU-specific layout passes run at each start."""

    backend = "onnxruntime"

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        super().__init__(model, precision)
        ort = self.module
        optimised = self.path.with_name(f"{self.path.stem}-ort{ort.__version__}.onnx")
        if not optimised.exists():
            options = self._options()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            with atomic_path(optimised, keep_suffix=True) as tmp:  # ORT picks the format by the suffix
                options.optimized_model_filepath = str(tmp)
                ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        options = self._options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(optimised), options, providers=["CPUExecutionProvider"])
        self.outputs = [output.name for output in self.session.get_outputs()]

    def _options(self):
        options = self.module.SessionOptions()
        options.log_severity_level = 3  # errors only
        return options

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {"image": image})


class OpenVinoNetwork(_ExportedNetwork):
    """The network in OpenVINO on the CPU, fp32 or bf16 inference precision; compiled once per input
    shape (static shapes run fastest), the compiled blobs cached on disk by OpenVINO."""

    backend = "openvino"

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        super().__init__(model, precision)
        ov = self.module
        self.core = ov.Core()
        version = ov.__version__.split("-")[0]
        self.blob_dir = cache_dir() / f"openvino-{version}"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.core.set_property({"CACHE_DIR": str(self.blob_dir)})
        self.model = self.core.read_model(str(self.path))
        self.properties = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def request(self, shape: tuple[int, ...]):
        """The inference request compiled for ``shape``; the most recent few shapes stay compiled."""
        if shape in self.compiled:
            self.compiled.move_to_end(shape)
        else:
            self.model.reshape({"image": list(shape)})
            compiled = self.core.compile_model(self.model, "CPU", self.properties)
            self.compiled[shape] = compiled.create_infer_request()
            while len(self.compiled) > MAX_COMPILED_SHAPES:
                self.compiled.popitem(last=False)
        return self.compiled[shape]

    def forget_shapes(self, unwanted: Callable[[tuple[int, ...]], bool]) -> int:
        dropped = [shape for shape in self.compiled if unwanted(shape)]
        for shape in dropped:
            del self.compiled[shape]
        return len(dropped)

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        request = self.request(tuple(image.shape))
        request.infer({"image": image})
        return [np.array(request.get_output_tensor(i).data) for i in range(len(request.model_outputs))]


NETWORKS: dict[str, type[_ExportedNetwork]] = {"onnxruntime": OnnxRuntimeNetwork, "openvino": OpenVinoNetwork}


def make_network(backend: str, model: nn.Module, precision: str):
    """The network for ``backend``: the torch module itself, or a compiled copy of its fp32 weights."""
    if backend == "torch":
        return model
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return NETWORKS[backend](model, precision)


def pair_same_points(ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (M, 2) of keypoints (x, y) of ``ours`` whose nearest keypoint of ``theirs`` lies within
    ``tolerance`` px on each axis, and those distances (M,). Sub-pixel positions are floats that two
    runtimes may round differently, so points are paired by distance, not by equality."""
    ours, theirs = np.asarray(ours, np.float64).reshape(-1, 2), np.asarray(theirs, np.float64).reshape(-1, 2)
    if not len(ours) or not len(theirs):
        return np.zeros((0, 2), np.int64), np.zeros(0)
    distance = np.abs(ours[:, None, :] - theirs[None, :, :]).max(-1)
    nearest = distance.argmin(1)
    shift = distance[np.arange(len(ours)), nearest]
    found = shift <= tolerance
    return np.stack((np.flatnonzero(found), nearest[found]), axis=1), shift[found]


def agreement(reference, other) -> dict[str, float]:
    """How closely ``other`` reproduces ``reference`` (two :class:`~superpoint_training.model.extractor.Features`
    of one image): the fraction of the reference's keypoints found at the same pixel (the same score
    maximum: within 1 px, so that sub-pixel positions may differ slightly; NMS keeps maxima further
    apart), the median and largest shift of those points, and the cosine of their descriptors
    (median and 1st percentile; 1.0 when neither has descriptors)."""
    ref, oth = reference.numpy(), other.numpy()
    result = {"same_pixel": 1.0, "keypoints": len(ref), "shift_median": 0.0, "shift_max": 0.0,
              "cosine_median": 1.0, "cosine_p1": 1.0}
    if len(ref) == 0:
        return result
    pairs, shift = pair_same_points(ref.keypoints, oth.keypoints, tolerance=0.999)
    result["same_pixel"] = len(pairs) / len(ref)
    if len(pairs):
        result.update(shift_median=float(np.median(shift)), shift_max=float(shift.max()))
        if ref.descriptors.shape[1]:
            a, b = pairs.T
            cosine = np.sum(ref.descriptors[a].astype(np.float64) * oth.descriptors[b], axis=1)
            result.update(cosine_median=float(np.median(cosine)), cosine_p1=float(np.percentile(cosine, 1)))
    return result
