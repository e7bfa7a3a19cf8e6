"""What a run reads and writes besides its logs: start weights (``--pretrained-model``), the model
record of ``weights.pth``, ``checkpoint.pth`` (plus optimizer, sampler position and scaler), kept
copies, and the check that a checkpoint may be resumed with this run's settings.

Every file is written to a temporary name then moved into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from ..common.config import ConfigError
from ..model.loading import CHECKPOINT_FORMAT, atomic_save, load_superpoint
from ..model.network import SuperPoint
from .train_config import build_config

log = logging.getLogger(__name__)


def load_pretrained(model: SuperPoint, weights: str) -> tuple[str, dict]:
    """Copy every matching tensor of any weights :func:`load_superpoint` knows into ``model``;
    returns a note for the log and the provenance record (:func:`pretrained_provenance`).

    MagicPoint weights into a SuperPoint leave the descriptor head at its initialisation, and the
    other way round; a different layout (v1 into v6) or a shape mismatch is an error.
    """
    loaded = load_superpoint(weights)
    source = loaded.model.state_dict()
    target = model.state_dict()
    common = [k for k in target if k in source]
    if not common:
        raise ConfigError(
            f"--pretrained-model {weights}: no tensor matches the {model.config.variant} layout "
            f"(the file is {loaded.model.config.variant})"
        )
    wrong = [k for k in common if source[k].shape != target[k].shape]
    if wrong:
        raise ConfigError(f"--pretrained-model {weights}: wrong shapes for {', '.join(wrong[:5])}")
    target.update({k: source[k] for k in common})
    model.load_state_dict(target)
    missing = len(target) - len(common)
    note = f", {missing} tensors left at their initialisation" if missing else ""
    return f"{loaded.description} ({len(common)} tensors{note})", pretrained_provenance(weights, loaded)


def pretrained_provenance(weights: str, loaded) -> dict:
    """What ``--pretrained-model`` named: the text given, the file (absolute), its SHA-256, and the
    experiment and iteration when it is a project checkpoint."""
    import hashlib

    from ..model.loading import NAMED_WEIGHTS, weights_path

    named_untrained = weights in NAMED_WEIGHTS and NAMED_WEIGHTS[weights][0] is None
    path = None if named_untrained else weights_path(weights).resolve()
    meta = loaded.checkpoint or {}
    return {
        "source": str(weights),
        "path": str(path) if path else None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else None,
        "description": loaded.description,
        "experiment": meta.get("experiment"),
        "iteration": meta.get("iteration"),
    }


# What a resumed run may change: how long, how fast and where it trains, and how often it logs,
# validates and saves. Anything else (task, data, labels, model, loss, optimizer, batch size, seed,
# start weights) must equal the checkpoint's: see resume_differences.
RESUMABLE_KEYS = (
    "train.iterations", "train.learning_rate", "train.weight_decay", "train.max_minutes", "train.device",
    "train.precision", "train.channels_last", "train.compile", "train.num_workers", "train.num_threads",
    "train.photometric", "train.log_every", "train.image_every", "train.checkpoint_every", "train.keep_every",
    "train.keep_best", "validation", "detection", "data.validation_patches",
)


def _leaves(config: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_differences(saved: Mapping, new: Mapping, saved_pretrained: str | None = None,
                       new_pretrained: str | None = None, defaults: Mapping | None = None) -> list[str]:
    """The config keys (dotted) whose values differ between a checkpoint's config and this run's,
    plus ``pretrained`` when the start weights differ; keys under :data:`RESUMABLE_KEYS` may change:

    ``train.iterations`` (train longer), ``train.learning_rate`` and ``train.weight_decay`` (a last
    phase at a lower rate), ``train.max_minutes``, ``train.device``, ``train.precision``,
    ``train.channels_last``, ``train.compile``, ``train.num_workers``, ``train.num_threads``,
    ``train.photometric`` (where the augmentation runs), the logging, saving and keeping intervals
    (``log_every``, ``image_every``, ``checkpoint_every``, ``keep_every``, ``keep_best``), the whole
    ``validation`` and ``detection`` sections and ``data.validation_patches``: none of them changes
    what the network is trained on. A key that a checkpoint written before it existed lacks counts as
    its value in ``defaults`` (the behaviour of the code that wrote it).
    """
    a, b, known = _leaves(saved), _leaves(new), _leaves(defaults or {})
    a.update({key: value for key, value in known.items() if key not in a})
    keys = sorted(set(a) | set(b))
    differing = [key for key in keys if a.get(key, "<absent>") != b.get(key, "<absent>")
                 and not any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS)]
    if saved_pretrained != new_pretrained:
        differing.append("pretrained")
    return differing


def _pretrained_key(record: Mapping | None) -> str | None:
    return None if not record else record.get("path") or record.get("source")


def _short(value) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= 48 else "..." + text[-45:]


def model_record(model: SuperPoint, config: dict, experiment: str, iteration: int, metrics: Mapping,
                 provenance: Mapping) -> dict:
    """The content of ``weights.pth``: what :func:`~..model.loading.load_superpoint` reads."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config,
        "experiment": experiment,
        "iteration": iteration,
        "detection_defaults": dict(config["detection"]),
        "metrics": dict(metrics),
        "provenance": {**provenance, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }


def has_finite_weights(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


class CheckpointFiles:
    """The files of one experiment folder: ``checkpoint.pth``, ``weights.pth``, ``checkpoint_<iteration>.pth``
    and ``best_weights.pth``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.checkpoint = folder / "checkpoint.pth"
        self.weights = folder / "weights.pth"
        self.best = folder / "best_weights.pth"

    def write(self, record: dict, training_state: Mapping, keep: bool) -> None:
        """weights.pth (``record``), checkpoint.pth (``record`` plus ``training_state``) and, when ``keep``,
        a numbered copy of the checkpoint."""
        atomic_save(record, self.weights)
        full = dict(record, **training_state)
        atomic_save(full, self.checkpoint)
        if keep:
            atomic_save(full, self.folder / f"checkpoint_{record['iteration']:07d}.pth")

    def read(self) -> dict | None:
        """The checkpoint's content as saved, or None when there is none (see :meth:`check_format`)."""
        if not self.checkpoint.exists():
            return None
        return torch.load(self.checkpoint, map_location="cpu", weights_only=False)

    def check_format(self, state: Mapping) -> None:
        """A ConfigError when ``state`` is not a checkpoint this project wrote."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.checkpoint}: not a superpoint_ros checkpoint (--overwrite starts over)")


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: Mapping) -> None:
    """Load the optimizer's saved state; the learning rates and weight decay this run built each
    parameter group with win over the saved ones (a lower rate for a last phase)."""
    built = [(group["lr"], group["weight_decay"]) for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for index, (group, values) in enumerate(zip(optimizer.param_groups, built, strict=True)):
        for name, value in zip(("lr", "weight_decay"), values, strict=True):
            if group[name] != value:
                log.info("%s of parameter group %d: %g (the checkpoint was saved with %g)", name, index, value, group[name])
                group[name] = value


def check_resumable(path: Path, state: Mapping, config: dict, model_config, provenance: Mapping) -> None:
    """A ConfigError, one line, when the checkpoint at ``path`` was trained on something else than
    ``config`` with ``model_config`` and ``provenance`` (see :func:`resume_differences`)."""
    saved_provenance = state.get("provenance") or {}
    saved_pretrained = _pretrained_key(saved_provenance.get("pretrained"))
    new_pretrained = _pretrained_key(provenance.get("pretrained"))
    if "provenance" not in state:  # a checkpoint from before provenance: its start weights are unknown
        saved_pretrained = new_pretrained
    saved_config = dict(state.get("config") or {})
    defaults = build_config({"data": {"name": config["data"]["name"]}, "task": config["task"]})
    differing = resume_differences(saved_config, config, saved_pretrained, new_pretrained, defaults)
    saved_model = type(model_config)(**state["model_config"]).to_dict()  # fields added since: defaults
    if saved_model != model_config.to_dict() and "model" not in {k.split(".")[0] for k in differing}:
        differing.append("model")
    if not differing:
        return
    old, new = _leaves(saved_config), _leaves(config)
    old["pretrained"], new["pretrained"] = saved_pretrained, new_pretrained
    shown = "; ".join(f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}" for key in differing[:4])
    more = f" (and {len(differing) - 4} more)" if len(differing) > 4 else ""
    raise ConfigError(
        f"{path} was trained with other settings ({shown}{more}); "
        f"use --overwrite to start over, or a new experiment name to keep both runs"
    )


def is_new_best(name: str, value: float, earlier: list[Mapping]) -> bool:
    """Whether ``value`` of metric ``name`` beats every finite earlier value (names with "error" or
    "loss" are minimised, the others maximised; ties keep the earlier weights)."""
    lower = "error" in name.lower() or "loss" in name.lower()
    values = [m[name] for m in earlier if math.isfinite(m.get(name, math.nan))]
    if not math.isfinite(value):
        return False
    if not values:
        return True
    return value < min(values) if lower else value > max(values)
