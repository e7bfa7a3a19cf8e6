"""One loader for every SuperPoint weights format the project knows, and the download.

Recognised formats:

- ``v1``: Magic Leap's ``superpoint_v1.pth`` (plain state dict, keys ``conv1a.weight`` ...
  ``convDb.bias``). Licensed for non-commercial use only.
- ``v6``: rpautrat's ``superpoint_v6_from_tf.pth`` (plain state dict, keys ``backbone.*``,
  ``detector.*``, ``descriptor.*``; converted from TensorFlow, so without BatchNorm's
  ``num_batches_tracked`` counters, which are filled in), MIT.
- ``checkpoint``: the project's own checkpoints: a dict with ``format == "superpoint_ros"``, the
  model config and the state dict (plus the training config and optimizer state when written by
  the trainer), and optionally a trained sub-pixel refinement (``refinement``: see
  :func:`attach_refinement`).

Anything else raises :class:`WeightsError` naming the file and the missing keys, unexpected keys
and wrong shapes against the closest known layout.

The command ``python -m superpoint_training.weights`` (download, check, list) is the front-end
(tests never download).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.files import atomic_path
from .network import ModelConfig, SuperPoint
from .refinement import SubpixelRefinement, refinement_from_dict, refinement_to_dict

CHECKPOINT_FORMAT = "superpoint_ros"
CACHE_DIR = Path(os.environ.get("SUPERPOINT_CACHE_DIR", Path.home() / ".cache" / "superpoint_ros"))
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
V6_URL = "https://github.com/rpautrat/SuperPoint/raw/master/weights/superpoint_v6_from_tf.pth"

# Named weights: name -> (file, how to get it).
NAMED_WEIGHTS: dict[str, tuple[Path | None, str]] = {
    "superpoint_ros": (PRETRAINED_DIR / "superpoint_ros.pth", "ships with the package"),
    "superpoint_ros_rotation": (PRETRAINED_DIR / "superpoint_ros_rotation.pth", "ships with the package"),
    "magicpoint_shapes": (PRETRAINED_DIR / "magicpoint_shapes.pth", "ships with the package"),
    "superpoint_v6_from_tf": (
        CACHE_DIR / "superpoint_v6_from_tf.pth",
        "run `python -m superpoint_training.weights download`",
    ),
    "superpoint_v1": (
        CACHE_DIR / "superpoint_v1.pth",
        "copy Magic Leap's superpoint_v1.pth there (non-commercial licence)",
    ),
    "untrained": (None, "random initialisation with a fixed seed"),
}

# Post-processing defaults of the implementation that published each format.
FORMAT_DEFAULTS = {
    "v1": {"detection_threshold": 0.005, "nms_radius": 4, "remove_borders": 4, "descriptor_sampling": "legacy"},
    "v6": {"detection_threshold": 0.005, "nms_radius": 4, "remove_borders": 4, "descriptor_sampling": "cell"},
}


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or of an unknown layout."""


@dataclass
class LoadedWeights:
    model: SuperPoint
    format: str  # "v1", "v6", "checkpoint" or "untrained"
    source: str  # what was loaded, for logs and reports
    detection_defaults: dict = field(default_factory=dict)
    checkpoint: dict | None = None  # the project's checkpoint metadata (config, iteration, ...)
    refinement: SubpixelRefinement | None = None  # subpixel="learned" (checkpoints that carry one)

    @property
    def description(self) -> str:
        trained = "UNTRAINED (random) weights" if self.format == "untrained" else f"{self.format} weights"
        return f"{trained} from {self.source}"


def default_weights_name() -> str:
    """The best weights that ship: the project's SuperPoint, else untrained ones."""
    path = NAMED_WEIGHTS["superpoint_ros"][0]
    return "superpoint_ros" if path is not None and path.exists() else "untrained"


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _descriptor_dim(state: Mapping[str, torch.Tensor], variant: str) -> int:
    key = "convDb.weight" if variant == "v1" else "descriptor.1.conv.weight"
    tensor = state.get(key)
    return int(tensor.shape[0]) if isinstance(tensor, torch.Tensor) else 0


def detect_format(state: Mapping[str, torch.Tensor]) -> str | None:
    """"v1" or "v6" for a state dict whose keys look like that layout, else None."""
    keys = set(state)
    if "conv1a.weight" in keys and any(k.startswith("convP") for k in keys):
        return "v1"
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("detector.") for k in keys):
        return "v6"
    return None


def _mismatch_report(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: got {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if isinstance(state[k], torch.Tensor) and state[k].shape != expected[k].shape
    ]

    def listing(title: str, items: list[str]) -> str:
        if not items:
            return ""
        shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        return f"\n  {title}: {shown}"

    return listing("missing keys", missing) + listing("unexpected keys", unexpected) + listing("wrong shapes", wrong)


def _with_batch_counters(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict:
    """``state`` with BatchNorm's ``num_batches_tracked`` counters added where they are missing.

    rpautrat's ``superpoint_v6_from_tf.pth`` holds only the converted TensorFlow variables (conv
    weight/bias, BatchNorm weight, bias, running_mean, running_var): no counters. PyTorch's
    ``load_state_dict`` fills them in for such files; so do we (0, the value a fresh BatchNorm has;
    inference never reads it). Any other missing key is still reported.
    """
    state = dict(state)
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    return state


def _build(state: Mapping[str, torch.Tensor], config: ModelConfig, source: str) -> SuperPoint:
    model = SuperPoint(config)
    expected = model.state_dict()
    state = _with_batch_counters(state, expected)
    report = _mismatch_report(state, expected)
    if report:
        raise WeightsError(f"{source}: the weights do not fit the {config.variant} SuperPoint layout:{report}")
    model.load_state_dict(state)
    return model.eval()


def _closest_variant(state: Mapping[str, torch.Tensor]) -> str:
    overlap = {v: len(set(state) & set(SuperPoint(ModelConfig(variant=v)).state_dict())) for v in ("v1", "v6")}
    return max(overlap, key=overlap.get)


def load_superpoint(weights: str | os.PathLike | Mapping | None = None) -> LoadedWeights:
    """Load SuperPoint weights from a name, a path, a state dict or a project checkpoint dict.

    Names: see :data:`NAMED_WEIGHTS`, plus ``"default"`` (:func:`default_weights_name`).
    The model is returned on the CPU in eval mode.
    """
    if weights is None or weights == "default":
        weights = default_weights_name()
    if isinstance(weights, Mapping):
        return _from_object(weights, "<state dict>")
    if str(weights) in NAMED_WEIGHTS and NAMED_WEIGHTS[str(weights)][0] is None:
        torch.manual_seed(0)
        model = SuperPoint(ModelConfig(variant="v6")).eval()
        return LoadedWeights(model, "untrained", "random initialisation (seed 0)", dict(FORMAT_DEFAULTS["v6"]))
    path = weights_path(weights)
    _check_pytorch_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise WeightsError(f"{path}: cannot read weights ({type(error).__name__}: {error})") from error
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict or a checkpoint dict, found {type(obj).__name__}")
    return _from_object(obj, str(path))


def weights_path(weights: str | os.PathLike) -> Path:
    """The file behind a name of :data:`NAMED_WEIGHTS` (or ``"default"``) or a path; a WeightsError that
    says how to get it when it is missing."""
    if weights == "default":
        weights = default_weights_name()
    name = str(weights)
    if name in NAMED_WEIGHTS:
        path, how = NAMED_WEIGHTS[name]
        if path is None:
            raise WeightsError(f"weights {name!r} are not a file: {how}")
        if not path.exists():
            raise WeightsError(f"weights {name!r} not found at {path}: {how}")
        return path
    path = Path(weights).expanduser()
    if not path.exists():
        known = ", ".join(NAMED_WEIGHTS)
        raise WeightsError(f"weights file not found: {path} (named weights: {known}, default)")
    return path


# What a file that is not a PyTorch file probably is, from its first bytes.
_OTHER_FORMATS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"\x89HDF": "an HDF5 file",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
    b"<": "a text/HTML file",
    b"{": "a JSON/text file",
}


def _check_pytorch_file(path: Path) -> None:
    """Raise a WeightsError that says what ``path`` is when it is not a ``torch.save`` file.

    ``torch.save`` writes a zip archive holding ``<name>/data.pkl`` (or, before PyTorch 1.6, a
    pickle, whose first byte is 0x80); anything else would fail inside the unpickler with a message
    about opcodes.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise WeightsError(f"{path}: cannot read ({error.strerror or error})") from error
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise WeightsError(f"{path}: not a PyTorch file: a damaged zip archive ({error})") from error
        if not any(name.endswith("data.pkl") for name in names):
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise WeightsError(f"{path}: not a PyTorch file: a zip archive without data.pkl (holds {shown or 'nothing'})")
        return
    if head[:1] == b"\x80":
        return
    what = next((name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if not head:
        what = "an empty file"
    raise WeightsError(
        f"{path}: not a PyTorch file ({what or 'unknown content'}); weights are .pth files written by torch.save"
    )


def _from_object(obj: Mapping, source: str) -> LoadedWeights:
    if obj.get("format") == CHECKPOINT_FORMAT:
        if "model" not in obj or "model_config" not in obj:
            raise WeightsError(f"{source}: project checkpoint without 'model' or 'model_config'")
        config = ModelConfig(**obj["model_config"])
        model = _build(_strip_prefix(obj["model"]), config, source)
        defaults = dict(FORMAT_DEFAULTS[config.variant])
        defaults.update(obj.get("detection_defaults", {}))
        meta = {k: v for k, v in obj.items() if k not in ("model", "optimizer", "scaler", "refinement")}
        try:
            refinement = refinement_from_dict(obj["refinement"]) if obj.get("refinement") else None
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise WeightsError(f"{source}: unreadable sub-pixel refinement ({error})") from None
        return LoadedWeights(model, "checkpoint", source, defaults, meta, refinement)
    state = _strip_prefix(obj)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{source}: not a state dict (values that are not tensors) nor a project checkpoint")
    variant = detect_format(state)
    if variant is None:
        variant = _closest_variant(state)
        expected = SuperPoint(ModelConfig(variant=variant)).state_dict()
        report = _mismatch_report(_with_batch_counters(state, expected), expected)
        raise WeightsError(f"{source}: unknown weights layout (closest: {variant}):{report}")
    config = ModelConfig(variant=variant, descriptor_dim=_descriptor_dim(state, variant))
    model = _build(state, config, source)
    return LoadedWeights(model, variant, source, dict(FORMAT_DEFAULTS[variant]))


def atomic_save(obj, path: Path) -> None:
    """torch.save under a temporary name, then moved into place: readers never see a partial file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# Detection options a weights file may carry as its defaults (the rest are per call: max_keypoints ...).
STORED_DETECTION_OPTIONS = ("detection_threshold", "nms_radius", "remove_borders", "descriptor_sampling", "subpixel",
                            "scales")


def set_detection_defaults(weights: str | os.PathLike, output: str | os.PathLike, **options) -> LoadedWeights:
    """Write ``weights`` (a project checkpoint or weights file) to ``output`` with new detection defaults.

    The file keeps its model, configuration and training metadata; the optimizer state is dropped.
    Options are checked as the Extractor would check them, so a typo fails here, not on a robot.
    """
    from .keypoints import DetectionConfig  # keypoints imports this module's neighbours, not this one

    unknown = set(options) - set(STORED_DETECTION_OPTIONS)
    if unknown:
        raise WeightsError(f"unknown detection options {sorted(unknown)}; choose from {', '.join(STORED_DETECTION_OPTIONS)}")
    obj = _read_checkpoint(weights, "published state dicts carry no defaults; pass the options to the Extractor instead")
    defaults = {**obj.get("detection_defaults", {}), **options}
    try:
        config = DetectionConfig(**{**FORMAT_DEFAULTS[obj["model_config"].get("variant", "v6")], **defaults})
    except (TypeError, ValueError) as error:
        raise WeightsError(f"detection defaults: {error}") from None
    if "scales" in defaults:
        defaults["scales"] = list(config.scales)
    obj = {k: v for k, v in obj.items() if k not in ("optimizer", "scaler")}
    obj["detection_defaults"] = defaults
    return _write_checkpoint(obj, output)


def attach_refinement(weights: str | os.PathLike, refinement: SubpixelRefinement, output: str | os.PathLike,
                      make_default: bool = True, metadata: dict | None = None) -> LoadedWeights:
    """Write the project checkpoint ``weights`` to ``output`` with a trained sub-pixel refinement
    (and ``subpixel="learned"`` as its default when ``make_default``); the network is unchanged."""
    obj = _read_checkpoint(weights, "a refinement is stored in a project checkpoint")
    obj = {k: v for k, v in obj.items() if k not in ("optimizer", "scaler")}
    obj["refinement"] = {**refinement_to_dict(refinement), **({"metadata": metadata} if metadata else {})}
    if make_default:
        obj["detection_defaults"] = {**obj.get("detection_defaults", {}), "subpixel": "learned"}
    return _write_checkpoint(obj, output)


def interpolate_weights(first: str | os.PathLike, second: str | os.PathLike, fraction: float,
                        output: str | os.PathLike) -> LoadedWeights:
    """Write ``(1 - fraction) * first + fraction * second``, parameter by parameter, to ``output``.

    Weight-space interpolation between a network and a fine-tune of it (WiSE-FT, Wortsman et al.,
    CVPR 2022): both start from the same weights, so the straight line between them stays in one basin
    and a point on it can keep most of each end's strengths (here: upright accuracy and rotation
    robustness). BatchNorm statistics are interpolated like the parameters; integer buffers and the
    metadata (detection defaults, configuration) come from ``first``. Names (``superpoint_ros``) or paths.
    """
    if not 0.0 <= fraction <= 1.0:
        raise WeightsError(f"fraction must be in [0, 1], got {fraction}")
    need = "interpolation needs the project's checkpoints"
    a, b = _read_checkpoint(first, need), _read_checkpoint(second, need)
    if a["model_config"] != b["model_config"]:
        raise WeightsError(f"different models: {a['model_config']} vs {b['model_config']}")
    state_a, state_b = _strip_prefix(a["model"]), _strip_prefix(b["model"])
    if state_a.keys() != state_b.keys() or any(state_a[k].shape != state_b[k].shape for k in state_a):
        raise WeightsError(f"{first} and {second} hold different tensors (names or shapes)")
    mixed = {name: torch.lerp(value.double(), state_b[name].double(), fraction).to(value.dtype)
             if value.is_floating_point() else value for name, value in state_a.items()}
    # No single run or iteration made these weights: the provenance goes in "interpolation".
    obj = {k: v for k, v in a.items() if k not in ("optimizer", "scaler", "metrics", "iteration", "experiment")}
    obj["model"] = mixed
    obj["interpolation"] = {"first": str(first), "second": str(second), "fraction": float(fraction),
                            "first_iteration": a.get("iteration"), "second_iteration": b.get("iteration")}
    return _write_checkpoint(obj, output)


def _read_checkpoint(weights: str | os.PathLike, why: str) -> dict:
    """The raw dict of a project checkpoint (a name of :data:`NAMED_WEIGHTS` or a path)."""
    path = weights_path(weights)
    _check_pytorch_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: not a project checkpoint ({why})")
    return dict(obj)


def _write_checkpoint(obj: dict, output: str | os.PathLike) -> LoadedWeights:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(obj, output)
    return _from_object(obj, str(output))


def download(url: str = V6_URL, destination: Path | None = None, expect_format: str = "v6") -> Path:
    """Download weights, check that they load as ``expect_format``, then move them into place."""
    destination = destination or NAMED_WEIGHTS["superpoint_v6_from_tf"][0]
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            print(f"downloading {url}")
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except Exception:
            tmp_path.unlink(missing_ok=True)
            raise
    try:
        loaded = load_superpoint(tmp_path)
        if loaded.format != expect_format:
            raise WeightsError(f"{url}: expected {expect_format} weights, found {loaded.format}")
    except Exception:
        tmp_path.unlink(missing_ok=True)
        raise
    os.replace(tmp_path, destination)
    digest = hashlib.sha256(destination.read_bytes()).hexdigest()
    n_params = sum(p.numel() for p in loaded.model.parameters())
    print(f"saved {destination} ({loaded.format}, {n_params} parameters, sha256 {digest[:16]}...)")
    return destination
