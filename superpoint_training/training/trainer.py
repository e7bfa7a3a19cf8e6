"""The training loop shared by MagicPoint and SuperPoint training.

What it does, whatever the task (:mod:`.task`):

- writes under ``$SUPERPOINT_EXPER_DIR`` (default ``experiments/``) ``/<experiment>/``: the merged
  ``config.yaml``, ``checkpoint.pth`` (model, optimizer, iteration: the resume point),
  ``weights.pth`` (model only, a few MB: what Extractor and ``--pretrained_model`` load),
  ``metrics.yaml`` (validation history) and TensorBoard event files. Every file is written to a
  temporary name then moved into place (``os.replace``), so a crash never leaves half a checkpoint;
- resumes from ``checkpoint.pth`` when it exists (``overwrite=True`` starts over), only when the
  checkpoint was trained on the same data, labels, model, loss and start weights
  (:func:`resume_differences`); the resumed run draws the same samples, with the same augmentation,
  as an uninterrupted run would have (:mod:`.sampling`), and TensorBoard drops what a killed run
  logged after its last checkpoint (``purge_step``);
- Ctrl+C (SIGINT) or SIGTERM, to the main process or the whole process group: finishes the current
  iteration, saves, exits cleanly (DataLoader workers ignore both signals); a second Ctrl+C
  interrupts at once;
- every weights file records where it came from (``provenance``: the ``--pretrained_model``
  source, the label folder and the export that wrote it, library versions, the machine);
  ``train.keep_every`` keeps ``checkpoint_<iteration>.pth`` files, ``train.keep_best`` keeps
  ``best_weights.pth``, the weights with the best value of one validation metric;
- a non-finite loss stops the run with :class:`TrainingDiverged`; the last good checkpoint is kept;
- DDP when started by ``torchrun`` (``WORLD_SIZE`` > 1): gloo on the CPU, nccl on CUDA, one
  process per GPU, multi-node as torchrun arranges; ``train.batch_size`` is the global batch;
- optional AMP (bf16/fp16, CUDA), channels_last and torch.compile.

The loop synchronises with the host only every ``train.log_every`` iterations (loss check, stop
flag, progress bar), so a fast GPU is not held back by host round trips.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import Dataset

from ..common.config import ConfigError, OpenMapping, attribute_error, load_config, merge_strict, read_yaml
from ..common.files import atomic_write_text
from ..common.machine import machine_record
from ..data.image_folder import ImageFolder, label_provenance
from ..data.shapes_dataset import SyntheticShapes
from ..model.extractor import resolve_device
from ..model.loading import CHECKPOINT_FORMAT, atomic_save, load_superpoint
from ..model.network import SuperPoint
from .magicpoint_task import MagicPointTask
from .sampling import SeededOrder, SeededSamples, StopSafeLoader, mixed_seed
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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    check(validation["batch_size"] > 0, "validation.batch_size", "must be positive")


def experiments_root() -> Path:
    return Path(os.environ.get("SUPERPOINT_EXPER_DIR", "experiments"))


class _Distributed:
    """Rank, world size and helpers; a no-op single process when not started by torchrun."""

    def __init__(self, device_option: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        device = resolve_device(device_option)
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.initialised_here = False
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            self.initialised_here = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, *flags: bool) -> list[bool]:
        """Element-wise OR of boolean flags over all processes."""
        if not self.enabled:
            return list(flags)
        tensor = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


class _StopSignal:
    """Turns the first SIGINT/SIGTERM into a flag; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal that asked to stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint and stopping (Ctrl+C again to abort)",
            file=sys.stderr,
        )

    def __enter__(self) -> _StopSignal:
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _to_device(batch: Mapping, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and key == "image" and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


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
            f"--pretrained_model {weights}: no tensor matches the {model.config.variant} layout "
            f"(the file is {loaded.model.config.variant})"
        )
    wrong = [k for k in common if source[k].shape != target[k].shape]
    if wrong:
        raise ConfigError(f"--pretrained_model {weights}: wrong shapes for {', '.join(wrong[:5])}")
    target.update({k: source[k] for k in common})
    model.load_state_dict(target)
    missing = len(target) - len(common)
    note = f", {missing} tensors left at their initialisation" if missing else ""
    return f"{loaded.description} ({len(common)} tensors{note})", pretrained_provenance(weights, loaded)


def pretrained_provenance(weights: str, loaded) -> dict:
    """What ``--pretrained_model`` named: the text given, the file (absolute), its SHA-256, and the
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


class Trainer:
    """One training run. ``Trainer(config, experiment).run()``; see the module docstring."""

    def __init__(
        self,
        config: dict,
        experiment: str,
        *,
        pretrained: str | None = None,
        overwrite: bool = False,
        exper_dir: str | os.PathLike | None = None,
        show_progress: bool = True,
    ):
        self.config = config
        self.experiment = experiment
        self.pretrained = pretrained
        self.overwrite = overwrite
        self.dir = Path(exper_dir) if exper_dir is not None else experiments_root() / experiment
        self.show_progress = show_progress
        self.metrics_history: list[dict] = []

    # ---- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pth"

    @property
    def weights_path(self) -> Path:
        return self.dir / "weights.pth"

    def _model_record(self, iteration: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": self.model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "config": self.config,
            "experiment": self.experiment,
            "iteration": iteration,
            "detection_defaults": dict(self.config["detection"]),
            "metrics": self.metrics_history[-1] if self.metrics_history else {},
            "provenance": {**self.provenance, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        }

    def save(self, iteration: int) -> None:
        """Write checkpoint.pth (with optimizer) and weights.pth (model only), atomically (main process)."""
        if not self.dist.is_main:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.model.state_dict().values() if p.is_floating_point()):
            raise TrainingDiverged(f"non-finite weights at iteration {iteration}: kept the last good checkpoint")
        record = self._model_record(iteration)
        atomic_save(record, self.weights_path)
        full = dict(record, optimizer=self.optimizer.state_dict(),
                    sampler={"seed": self.config["train"]["seed"], "iteration": iteration,
                             **self.train_sampler.position(iteration)})
        if self.scaler is not None:
            full["scaler"] = self.scaler.state_dict()
        atomic_save(full, self.checkpoint_path)
        keep = self.config["train"]["keep_every"]
        if keep and iteration % keep == 0:
            atomic_save(full, self.dir / f"checkpoint_{iteration:07d}.pth")
        self.saved_iteration = iteration

    def _resume(self) -> int:
        state = None
        if self.dist.is_main and not self.overwrite and self.checkpoint_path.exists():
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if self.dist.enabled:  # the main process's checkpoint for all (nodes need not share a disk)
            box = [state]
            dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
            state = box[0]
        if state is None:
            return 0
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.checkpoint_path}: not a superpoint_ros checkpoint (--overwrite starts over)")
        self._check_resumable(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for key in ("learning_rate", "weight_decay"):  # the config of this run wins over the saved state
            name = "lr" if key == "learning_rate" else key
            value = self.config["train"][key]
            for group in self.optimizer.param_groups:
                if group[name] != value:
                    log.info("train.%s: %g (the checkpoint was saved with %g)", key, value, group[name])
                    group[name] = value
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        history = self.dir / "metrics.yaml"
        if history.exists():
            self.metrics_history = yaml.safe_load(history.read_text()) or []
        return int(state["iteration"])

    def _check_resumable(self, state: Mapping) -> None:
        """A ConfigError, one line, when the checkpoint was trained on something else than this run."""
        saved_provenance = state.get("provenance") or {}
        saved_pretrained = _pretrained_key(saved_provenance.get("pretrained"))
        new_pretrained = _pretrained_key(self.provenance.get("pretrained"))
        if "provenance" not in state:  # a checkpoint from before provenance: its start weights are unknown
            saved_pretrained = new_pretrained
        saved_config = dict(state.get("config") or {})
        defaults = build_config({"data": {"name": self.config["data"]["name"]}, "task": self.config["task"]})
        differing = resume_differences(saved_config, self.config, saved_pretrained, new_pretrained, defaults)
        saved_model = type(self.model.config)(**state["model_config"]).to_dict()  # fields added since: defaults
        if saved_model != self.model.config.to_dict() and "model" not in {k.split(".")[0] for k in differing}:
            differing.append("model")
        if not differing:
            return
        old, new = _leaves(saved_config), _leaves(self.config)
        old["pretrained"], new["pretrained"] = saved_pretrained, new_pretrained
        shown = "; ".join(f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}" for key in differing[:4])
        more = f" (and {len(differing) - 4} more)" if len(differing) > 4 else ""
        raise ConfigError(
            f"{self.checkpoint_path} was trained with other settings ({shown}{more}); "
            f"use --overwrite to start over, or a new experiment name to keep both runs"
        )

    # ---- setup ------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config["train"]
        if cfg["num_threads"]:
            torch.set_num_threads(cfg["num_threads"])
        self.dist = _Distributed(cfg["device"])
        self.device = self.dist.device
        self.precision = resolve_training_precision(cfg["precision"], self.device)
        if cfg["batch_size"] % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size: {cfg['batch_size']} is not divisible by the {self.dist.world_size} processes"
            )
        torch.manual_seed(cfg["seed"] + self.dist.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.task: Task = TASKS[self.config["task"]](self.config, self.device)
        torch.manual_seed(cfg["seed"])  # same initial weights on every process
        self.model = SuperPoint(self.task.model_config())
        self.task.initialise(self.model)
        self.pretrained_note, pretrained = load_pretrained(self.model, self.pretrained) if self.pretrained else (None, None)
        self.provenance = {
            "pretrained": pretrained,
            "labels": label_provenance(self.config["data"]),
            "machine": machine_record(str(self.device)),
            "command": " ".join(sys.argv),
        }
        self.model.to(self.device)
        if cfg["channels_last"]:
            self.model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(self.model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
            if self.precision != "fp32"
            else nullcontext()
        )
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.overwrite:  # start over: drop what an earlier run of this experiment wrote
                for pattern in ("events.out.tfevents.*", "checkpoint*.pth", "weights.pth", "metrics.yaml"):
                    for old in self.dir.glob(pattern):
                        old.unlink()
        self.dist.barrier()
        self.start_iteration = self._resume()
        self.saved_iteration = self.start_iteration
        if self.dist.is_main:
            atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        net: torch.nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if cfg["compile"]:
            net = torch.compile(net)
        self.net = net
        self._build_data()

    def _build_data(self) -> None:
        cfg = self.config["train"]
        factory = DATASETS[self.config["data"]["name"]]
        options = {"apply_photometric": False} if self.task.photometric_on_device else {}
        if self.dist.is_main:  # let one process fill the dataset cache before the others read it
            train_set = factory(self.config["data"], TRAIN_SPLIT, **options)
            self.dist.barrier()
        else:
            self.dist.barrier()
            train_set = factory(self.config["data"], TRAIN_SPLIT, **options)
        per_process = cfg["batch_size"] // self.dist.world_size
        if len(train_set) // self.dist.world_size < per_process:
            share = "" if self.dist.world_size == 1 else f" ({len(train_set) // self.dist.world_size} per process)"
            raise ConfigError(f"train.batch_size: {per_process} per process > {len(train_set)} training images{share}")
        sampler = SeededOrder(len(train_set), per_process, cfg["seed"], rank=self.dist.rank,
                              world_size=self.dist.world_size, start_iteration=self.start_iteration)
        workers = cfg["num_workers"]
        pin = self.device.type == "cuda"
        self.train_loader = StopSafeLoader(
            SeededSamples(train_set),
            batch_size=per_process,
            sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            drop_last=True,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
        )
        self.train_sampler = sampler
        self.val_loader = None
        if self.dist.is_main:
            val_set = factory(self.config["data"], VALIDATION_SPLIT)
            limit = self.config["validation"]["max_images"]
            if limit and limit < len(val_set):
                val_set = torch.utils.data.Subset(val_set, range(limit))
            self.val_loader = StopSafeLoader(
                val_set, batch_size=self.config["validation"]["batch_size"], num_workers=min(workers, 2), pin_memory=pin
            )

    # ---- the loop ---------------------------------------------------------------------------
    def validate(self, iteration: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.val_loader is not None:
            start = time.perf_counter()
            metrics = self.task.validate(self.model, self.val_loader)
            metrics = {k: float(v) for k, v in metrics.items()}
            self.metrics_history.append({"iteration": iteration, **metrics})
            atomic_write_text(self.dir / "metrics.yaml", yaml.safe_dump(self.metrics_history, sort_keys=False))
            for key, value in metrics.items():
                if math.isfinite(value):
                    self.writer.add_scalar(f"validation/{key}", value, iteration)
            self._keep_best(iteration, metrics)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            self._print(f"validation at iteration {iteration} ({time.perf_counter() - start:.1f} s): {shown}")
        self.dist.barrier()
        return metrics

    def _keep_best(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """``best_weights.pth``: the weights at the best ``train.keep_best`` value so far (names with
        "error" or "loss" are minimised, the others maximised); ties keep the earlier weights."""
        name = self.config["train"]["keep_best"]
        if not name:
            return
        if name not in metrics:
            raise ConfigError(f"train.keep_best: no validation metric {name!r} (this task's: {', '.join(metrics)})")
        lower = "error" in name.lower() or "loss" in name.lower()
        earlier = [m[name] for m in self.metrics_history[:-1] if math.isfinite(m.get(name, math.nan))]
        value = metrics[name]
        best = (min if lower else max)(earlier) if earlier else None
        if math.isfinite(value) and (best is None or (value < best if lower else value > best)):
            atomic_save(self._model_record(iteration), self.dir / "best_weights.pth")
            self._print(f"best {name} so far ({value:.4g}): saved {self.dir / 'best_weights.pth'}")

    def _print(self, message: str) -> None:
        if self.dist.is_main:
            if self.progress is not None:
                self.progress.write(message)
            else:
                print(message, flush=True)

    def run(self) -> Path:
        """Train until ``train.iterations``, a stop signal or divergence; returns the experiment folder."""
        self._setup()
        try:
            with _StopSignal() as stop:
                self._loop(stop)
        finally:
            for loader in (getattr(self, "train_loader", None), getattr(self, "val_loader", None)):
                if loader is not None:
                    loader.close()
            if getattr(self, "writer", None) is not None:
                self.writer.close()
            self.dist.close()
        return self.dir

    def _loop(self, stop: _StopSignal) -> None:
        from torch.utils.tensorboard import SummaryWriter

        cfg, val_cfg = self.config["train"], self.config["validation"]
        total = cfg["iterations"]
        # a run killed after its last checkpoint logged steps that this run logs again: drop them
        purge = self.start_iteration + 1 if self.start_iteration else None
        self.writer = SummaryWriter(str(self.dir), purge_step=purge) if self.dist.is_main else None
        self.progress = None
        if self.dist.is_main and self.show_progress:
            from tqdm import tqdm

            interactive = sys.stderr.isatty()
            self.progress = tqdm(
                total=total,
                initial=self.start_iteration,
                desc=self.experiment,
                dynamic_ncols=True,
                mininterval=0.5 if interactive else 30.0,
                smoothing=0.05,
            )
        if self.pretrained_note:
            self._print(f"initialised from {self.pretrained_note}")
        if self.start_iteration:
            self._print(f"resumed {self.checkpoint_path} at iteration {self.start_iteration}")
        self.final_iteration, self.final_loss = self.start_iteration, float("nan")
        self.stopped_by: int | None = None  # the signal number when Ctrl+C / SIGTERM stopped the run
        self.budget_reached = False
        if self.start_iteration >= total:
            self._print(f"already trained for {self.start_iteration} >= {total} iterations")
            return
        batches = iter(self.train_loader)
        self.net.train()
        loss_sum = torch.zeros((), device=self.device)
        scalar_sums: dict[str, torch.Tensor] = {}
        since, last_time = 0, time.perf_counter()
        iteration = self.start_iteration
        last_loss = float("nan")
        run_start, budget_s = time.perf_counter(), float(cfg["max_minutes"]) * 60.0
        while iteration < total:
            batch = _to_device(next(batches), self.device, cfg["channels_last"])
            # device-side randomness (warps, photometric on the GPU) seeded by the iteration: a resumed
            # run draws what an uninterrupted one would have
            torch.manual_seed(mixed_seed(cfg["seed"], self.dist.rank, iteration))
            batch = self.task.augment(batch)
            with self.autocast:
                loss, scalars, outputs = self.task.loss(self.net, batch)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            iteration += 1
            since += 1
            loss_sum += loss.detach().float()
            for key, value in scalars.items():
                scalar_sums[key] = scalar_sums.get(key, 0) + value.float()
            if self.progress is not None:
                self.progress.update(1)

            validate_now = iteration == total or (val_cfg["every"] and iteration % val_cfg["every"] == 0)
            save_now = iteration == total or iteration % cfg["checkpoint_every"] == 0
            # DDP processes must meet at the same iterations: a stop request waits for the next
            # scheduled sync there; a single process stops at once.
            sync = iteration % cfg["log_every"] == 0 or validate_now or save_now
            if not sync and not (stop.requested and not self.dist.enabled):
                continue
            mean_loss = float(loss_sum) / since
            over_budget = bool(budget_s) and time.perf_counter() - run_start > budget_s
            diverged, stopping, out_of_time = self.dist.any(not math.isfinite(mean_loss), stop.requested, over_budget)
            if diverged:
                message = (
                    f"non-finite loss ({mean_loss}) between iterations {iteration - since + 1} and {iteration}; "
                    f"stopped, the last good checkpoint (iteration {self.saved_iteration}) is kept in {self.dir}"
                )
                self._print(message)
                raise TrainingDiverged(message)
            last_loss = mean_loss
            now = time.perf_counter()
            rate = since / max(now - last_time, 1e-9)
            if self.dist.is_main:
                self.writer.add_scalar("train/loss", mean_loss, iteration)
                for key, value in scalar_sums.items():
                    self.writer.add_scalar(f"train/{key}", float(value) / since, iteration)
                self.writer.add_scalar("train/iterations_per_second", rate, iteration)
                self.writer.add_scalar("train/learning_rate", self.optimizer.param_groups[0]["lr"], iteration)
                if cfg["image_every"] and (iteration // cfg["image_every"]) > (
                    (iteration - since) // cfg["image_every"]
                ):
                    for name, picture in self.task.images(batch, outputs).items():
                        self.writer.add_image(name, picture, iteration)
                if self.progress is not None:
                    self.progress.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
                else:
                    print(f"iteration {iteration}/{total} loss {mean_loss:.4f} {rate:.2f} it/s", flush=True)
            loss_sum.zero_()
            scalar_sums.clear()
            since, last_time = 0, time.perf_counter()
            if out_of_time and not stopping:  # the stage's budget is spent: validate, save, resumable later
                self.budget_reached = True
                validate_now = save_now = True
            if validate_now and not stopping:
                self.validate(iteration)
                last_time = time.perf_counter()
            if save_now or stopping:
                self.save(iteration)
                self.dist.barrier()
                last_time = time.perf_counter()
            if stopping:
                self._print(f"stopped at iteration {iteration}; checkpoint saved in {self.checkpoint_path} "
                            "(the same command resumes)")
                self.stopped_by = stop.signum or signal.SIGINT  # DDP: another process's signal
                break
            if self.budget_reached:
                self._print(f"train.max_minutes ({cfg['max_minutes']:g}) spent at iteration {iteration}; "
                            f"checkpoint saved in {self.checkpoint_path} (run again to continue)")
                break
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        self.final_iteration = iteration
        self.final_loss = last_loss
        if self.stopped_by is None:
            self._print(f"done: iteration {iteration}, loss {last_loss:.4f}, weights in {self.weights_path}")


def train(
    config: str | os.PathLike | Mapping,
    experiment: str,
    *,
    overrides=None,
    pretrained: str | None = None,
    overwrite: bool = False,
    exper_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> Trainer:
    """Build the config (``overrides``: ``["train.iterations=10", ...]``), train, return the Trainer."""
    merged = build_config(config, overrides)
    trainer = Trainer(
        merged, experiment, pretrained=pretrained, overwrite=overwrite, exper_dir=exper_dir, show_progress=show_progress
    )
    trainer.run()
    return trainer


__all__ = ["DEFAULTS", "Trainer", "TrainingDiverged", "build_config", "merge_strict", "train"]
