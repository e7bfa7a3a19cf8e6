"""The training loop shared by MagicPoint and SuperPoint training.

Its parts: :mod:`.train_config` (defaults, validation), :mod:`.distributed` (torchrun),
:mod:`.checkpoints` (files, resuming, start weights), :mod:`.loop_control` (schedule, loss sums,
budget, divergence), :mod:`.run_log` (TensorBoard, progress) and :mod:`.stop_signal`.

What it does, whatever the task (:mod:`.task`):

- writes under ``$SUPERPOINT_EXPER_DIR`` (default ``experiments/``) ``/<experiment>/``: the merged
  ``config.yaml``, ``checkpoint.pth`` (model, optimizer, iteration: the resume point),
  ``weights.pth`` (model only, a few MB: what Extractor and ``--pretrained-model`` load),
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
- every weights file records where it came from (``provenance``: the ``--pretrained-model``
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

import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from ..common.config import ConfigError, merge_strict
from ..common.experiments import experiments_root
from ..common.files import atomic_write_text
from ..common.machine import machine_record
from ..data.image_folder import label_provenance
from ..model.loading import atomic_save
from ..model.network import SuperPoint
from .checkpoints import (
    CheckpointFiles,
    check_resumable,
    has_finite_weights,
    is_new_best,
    load_pretrained,
    model_record,
    restore_optimizer,
    resume_differences,
)
from .distributed import Distributed
from .loop_control import LossWindow, Schedule, TimeBudget, TrainingDiverged
from .run_log import RunLog
from .sampling import SeededOrder, SeededSamples, StopSafeLoader, mixed_seed
from .stop_signal import StopSignal
from .task import Task
from .train_config import (
    DATASETS,
    DEFAULTS,
    TASKS,
    TRAIN_SPLIT,
    VALIDATION_SPLIT,
    build_config,
    resolve_training_precision,
)


def _to_device(batch: Mapping, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and key == "image" and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def _set_backends(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class Trainer:
    """One training run, set up by the constructor: ``Trainer(config, experiment).run()``; see the
    module docstring. After ``run()``: ``final_iteration``, ``final_loss``, ``stopped_by`` (the signal
    number when Ctrl+C / SIGTERM stopped it, else None), ``budget_reached`` and ``metrics_history``."""

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
        cfg = config["train"]
        self.config = config
        self.experiment = experiment
        self.pretrained = pretrained
        self.overwrite = overwrite
        self.dir = Path(exper_dir) if exper_dir is not None else experiments_root() / experiment
        self.files = CheckpointFiles(self.dir)
        if cfg["num_threads"]:
            torch.set_num_threads(cfg["num_threads"])
        self.dist = Distributed(cfg["device"])
        self.device = self.dist.device
        self.precision = resolve_training_precision(cfg["precision"], self.device)
        if cfg["batch_size"] % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size: {cfg['batch_size']} is not divisible by the {self.dist.world_size} processes"
            )
        _set_backends(cfg["seed"] + self.dist.rank, self.device)
        self.task: Task = TASKS[config["task"]](config, self.device)
        self.model, self.pretrained_note, self.provenance = self._build_model()
        self.extra_modules = self.task.trained_modules()  # trained beside the network (a refinement)
        for module in self.extra_modules.values():
            module.to(self.device).train()
        optimizer = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(self.parameter_groups(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.autocast = _autocast(self.precision, self.device)
        self._prepare_folder()
        self.start_iteration, self.metrics_history = self._resume()
        self.saved_iteration = self.start_iteration
        if self.dist.is_main:
            atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        self.net = self._wrap(self.model)
        self.train_loader, self.train_sampler = self._training_data()
        self.val_loader = self._validation_data()
        self.schedule = Schedule(config)
        self.run_log = RunLog(self.dir, experiment, self.schedule.total, self.start_iteration,
                              main=self.dist.is_main, show_progress=show_progress)
        self.final_iteration, self.final_loss = self.start_iteration, float("nan")
        self.stopped_by: int | None = None  # the signal number when Ctrl+C / SIGTERM stopped the run
        self.budget_reached = False

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters outside DDP's module: their gradients are averaged over the processes by hand."""
        return [p for m in self.extra_modules.values() for p in m.parameters()]

    def parameter_groups(self) -> list[dict]:
        """The network's parameters at ``train.learning_rate``, then each other trained module's at
        the rate its task gives it (a small perceptron that starts at zero learns faster than a
        network being fine-tuned)."""
        groups = [{"params": list(self.model.parameters())}]
        for name, module in self.extra_modules.items():
            rate = self.task.module_learning_rate(name)
            groups.append({"params": list(module.parameters()), **({"lr": rate} if rate else {})})
        return groups

    @property
    def checkpoint_path(self) -> Path:
        return self.files.checkpoint

    @property
    def weights_path(self) -> Path:
        return self.files.weights

    # ---- set-up -----------------------------------------------------------------------------
    def _build_model(self) -> tuple[SuperPoint, str | None, dict]:
        """The model on its device (same initial weights on every process), the note on its start
        weights and the provenance that every weights file records."""
        torch.manual_seed(self.config["train"]["seed"])
        model = SuperPoint(self.task.model_config())
        self.task.initialise(model)
        note, pretrained = load_pretrained(model, self.pretrained) if self.pretrained else (None, None)
        if self.pretrained:
            note += self.task.load_pretrained_modules(self.pretrained)
        provenance = {
            "pretrained": pretrained,
            "labels": label_provenance(self.config["data"]),
            "machine": machine_record(str(self.device)),
            "command": " ".join(sys.argv),
        }
        model.to(self.device)
        if self.config["train"]["channels_last"]:
            model.to(memory_format=torch.channels_last)
        return model, note, provenance

    def _prepare_folder(self) -> None:
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.overwrite:  # start over: drop what an earlier run of this experiment wrote
                for pattern in ("events.out.tfevents.*", "checkpoint*.pth", "weights.pth", "metrics.yaml"):
                    for old in self.dir.glob(pattern):
                        old.unlink()
        self.dist.barrier()

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop calls: DDP around the model under torchrun, compiled when asked."""
        net = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.config["train"]["compile"]:
            net = torch.compile(net)
        return net

    def _training_data(self) -> tuple[StopSafeLoader, SeededOrder]:
        cfg, world = self.config["train"], self.dist.world_size
        factory = DATASETS[self.config["data"]["name"]]
        options = {"apply_photometric": False} if self.task.photometric_on_device else {}
        if not self.dist.is_main:  # let one process fill the dataset cache before the others read it
            self.dist.barrier()
        train_set = factory(self.config["data"], TRAIN_SPLIT, **options)
        if self.dist.is_main:
            self.dist.barrier()
        per_process = cfg["batch_size"] // world
        if len(train_set) // world < per_process:
            share = "" if world == 1 else f" ({len(train_set) // world} per process)"
            raise ConfigError(f"train.batch_size: {per_process} per process > {len(train_set)} training images{share}")
        sampler = SeededOrder(len(train_set), per_process, cfg["seed"], rank=self.dist.rank,
                              world_size=world, start_iteration=self.start_iteration)
        workers = cfg["num_workers"]
        loader = StopSafeLoader(
            SeededSamples(train_set), batch_size=per_process, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=True, persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
        )
        return loader, sampler

    def _validation_data(self) -> StopSafeLoader | None:
        """The validation split on the main process (None on the others)."""
        if not self.dist.is_main:
            return None
        val_set = DATASETS[self.config["data"]["name"]](self.config["data"], VALIDATION_SPLIT)
        limit = self.config["validation"]["max_images"]
        if limit and limit < len(val_set):
            val_set = torch.utils.data.Subset(val_set, range(limit))
        return StopSafeLoader(val_set, batch_size=self.config["validation"]["batch_size"],
                              num_workers=min(self.config["train"]["num_workers"], 2),
                              pin_memory=self.device.type == "cuda")

    # ---- checkpoints --------------------------------------------------------------------------
    def _model_record(self, iteration: int) -> dict:
        metrics = self.metrics_history[-1] if self.metrics_history else {}
        record = model_record(self.model, self.config, self.experiment, iteration, metrics, self.provenance)
        return {**record, **self.task.module_records()}

    def save(self, iteration: int) -> None:
        """Write checkpoint.pth (with optimizer) and weights.pth (model only), atomically (main process)."""
        if not self.dist.is_main:
            return
        if not all(has_finite_weights(m) for m in (self.model, *self.extra_modules.values())):
            raise TrainingDiverged(f"non-finite weights at iteration {iteration}: kept the last good checkpoint")
        training_state = {
            "optimizer": self.optimizer.state_dict(),
            "sampler": {"seed": self.config["train"]["seed"], "iteration": iteration,
                        **self.train_sampler.position(iteration)},
        }
        if self.scaler is not None:
            training_state["scaler"] = self.scaler.state_dict()
        keep = self.config["train"]["keep_every"]
        self.files.write(self._model_record(iteration), training_state, keep=bool(keep) and iteration % keep == 0)
        self.saved_iteration = iteration

    def _resume(self) -> tuple[int, list[dict]]:
        """The iteration to start at and the validation history, from checkpoint.pth when there is one."""
        state = self.files.read() if self.dist.is_main and not self.overwrite else None
        state = self.dist.broadcast(state)  # the main process's checkpoint for all
        if state is None:
            return 0, []
        self.files.check_format(state)
        check_resumable(self.checkpoint_path, state, self.config, self.model.config, self.provenance)
        self.model.load_state_dict(state["model"])
        self.task.load_module_records(state)
        restore_optimizer(self.optimizer, state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        history = self.dir / "metrics.yaml"
        metrics = (yaml.safe_load(history.read_text()) or []) if history.exists() else []
        return int(state["iteration"]), metrics

    # ---- validation -----------------------------------------------------------------------------
    def validate(self, iteration: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.val_loader is not None:
            start = time.perf_counter()
            metrics = {k: float(v) for k, v in self.task.validate(self.model, self.val_loader).items()}
            self.metrics_history.append({"iteration": iteration, **metrics})
            atomic_write_text(self.dir / "metrics.yaml", yaml.safe_dump(self.metrics_history, sort_keys=False))
            self._keep_best(iteration, metrics)
            self.run_log.validation(iteration, metrics, time.perf_counter() - start)
        self.dist.barrier()
        return metrics

    def _keep_best(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """``best_weights.pth``: the weights at the best ``train.keep_best`` value so far (see
        :func:`~.checkpoints.is_new_best`)."""
        name = self.config["train"]["keep_best"]
        if not name:
            return
        if name not in metrics:
            raise ConfigError(f"train.keep_best: no validation metric {name!r} (this task's: {', '.join(metrics)})")
        if is_new_best(name, metrics[name], self.metrics_history[:-1]):
            atomic_save(self._model_record(iteration), self.files.best)
            self.run_log.print(f"best {name} so far ({metrics[name]:.4g}): saved {self.files.best}")

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train until ``train.iterations``, a stop signal or divergence; returns the experiment folder."""
        try:
            with StopSignal() as stop:
                self._loop(stop)
        finally:
            for loader in (self.train_loader, self.val_loader):
                if loader is not None:
                    loader.close()
            self.run_log.close()
            self.dist.close()
        return self.dir

    def _loop(self, stop: StopSignal) -> None:
        total = self.schedule.total
        if self.pretrained_note:
            self.run_log.print(f"initialised from {self.pretrained_note}")
        if self.start_iteration:
            self.run_log.print(f"resumed {self.checkpoint_path} at iteration {self.start_iteration}")
        if self.start_iteration >= total:
            self.run_log.print(f"already trained for {self.start_iteration} >= {total} iterations")
            return
        batches = iter(self.train_loader)
        self.net.train()
        window, budget = LossWindow(self.device), TimeBudget(self.config["train"]["max_minutes"])
        iteration = self.start_iteration
        while iteration < total:
            batch, outputs = self._step(next(batches), iteration, window)
            iteration += 1
            self.run_log.advance()
            # DDP processes must meet at the same iterations: a stop request waits for the next
            # scheduled sync there; a single process stops at once.
            if self.schedule.sync_due(iteration) or (stop.requested and not self.dist.enabled):
                if self._sync(iteration, window, budget, stop, (batch, outputs)):
                    break
        self.run_log.close_progress()
        self.final_iteration = iteration
        if self.stopped_by is None:
            self.run_log.print(f"done: iteration {iteration}, loss {self.final_loss:.4f}, weights in {self.weights_path}")

    def _step(self, batch: Mapping, iteration: int, window: LossWindow) -> tuple[dict, dict]:
        """One optimisation step on ``batch``; returns the augmented batch and the network's outputs."""
        cfg = self.config["train"]
        batch = _to_device(batch, self.device, cfg["channels_last"])
        # device-side randomness (warps, photometric on the GPU) seeded by the iteration: a resumed
        # run draws what an uninterrupted one would have
        torch.manual_seed(mixed_seed(cfg["seed"], self.dist.rank, iteration))
        batch = self.task.augment(batch)
        with self.autocast:
            loss, scalars, outputs = self.task.loss(self.net, batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.dist.average_gradients(self.extra_parameters())
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.dist.average_gradients(self.extra_parameters())
            self.optimizer.step()
        window.add(loss, scalars)
        return batch, outputs

    def _sync(self, iteration: int, window: LossWindow, budget: TimeBudget, stop: StopSignal,
              last: tuple[dict, dict]) -> bool:
        """The host's turn: divergence check, logs, validation, checkpoint; True when the loop stops.
        ``last``: the last step's batch and outputs (for TensorBoard images)."""
        mean_loss = window.mean_loss()
        diverged, stopping, out_of_time = self.dist.any(not math.isfinite(mean_loss), stop.requested, budget.spent())
        if diverged:
            message = (
                f"non-finite loss ({mean_loss}) between iterations {iteration - window.steps + 1} and {iteration}; "
                f"stopped, the last good checkpoint (iteration {self.saved_iteration}) is kept in {self.dir}"
            )
            self.run_log.print(message)
            raise TrainingDiverged(message)
        self.final_loss = mean_loss
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.run_log.training(iteration, mean_loss, window.mean_scalars(), window.rate(), learning_rate)
        if self.dist.is_main and self.schedule.images_due(iteration, window.steps):
            self.run_log.images(iteration, self.task.images(*last))
        window.reset()
        self.budget_reached = out_of_time and not stopping  # validate, save, resumable later
        if (self.schedule.validate_due(iteration) or self.budget_reached) and not stopping:
            self.validate(iteration)
            window.restart_clock()
        if self.schedule.save_due(iteration) or self.budget_reached or stopping:
            self.save(iteration)
            self.dist.barrier()
            window.restart_clock()
        if stopping:
            self.run_log.print(f"stopped at iteration {iteration}; checkpoint saved in {self.checkpoint_path} "
                               "(the same command resumes)")
            self.stopped_by = stop.signum or signal.SIGINT  # DDP: another process's signal
        elif self.budget_reached:
            self.run_log.print(f"train.max_minutes ({self.config['train']['max_minutes']:g}) spent at iteration "
                               f"{iteration}; checkpoint saved in {self.checkpoint_path} (run again to continue)")
        return stopping or self.budget_reached


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


__all__ = [
    "DATASETS", "DEFAULTS", "TASKS", "Trainer", "TrainingDiverged", "build_config", "experiments_root", "merge_strict",
    "resolve_training_precision", "resume_differences", "train",
]
