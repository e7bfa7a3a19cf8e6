"""When the training loop meets the host: the schedule of syncs, validations, checkpoints and
TensorBoard images, the loss sums between two syncs, the wall-clock budget and divergence."""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Schedule:
    """The iterations at which the loop validates, saves, writes images and synchronises with the host.

    DDP processes must meet at the same iterations, so every decision depends on the iteration only.
    """

    def __init__(self, config: Mapping):
        train, validation = config["train"], config["validation"]
        self.total = int(train["iterations"])
        self.log_every = int(train["log_every"])
        self.checkpoint_every = int(train["checkpoint_every"])
        self.image_every = int(train["image_every"])
        self.validate_every = int(validation["every"])

    def validate_due(self, iteration: int) -> bool:
        return iteration == self.total or bool(self.validate_every and iteration % self.validate_every == 0)

    def save_due(self, iteration: int) -> bool:
        return iteration == self.total or iteration % self.checkpoint_every == 0

    def sync_due(self, iteration: int) -> bool:
        return iteration % self.log_every == 0 or self.validate_due(iteration) or self.save_due(iteration)

    def images_due(self, iteration: int, steps: int) -> bool:
        """Whether a multiple of ``train.image_every`` fell within the last ``steps`` iterations."""
        every = self.image_every
        return bool(every) and iteration // every > (iteration - steps) // every


class LossWindow:
    """Loss and task scalars summed on the device since the last sync (no host round trip per step),
    and the time the steps took."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.scalar_sums: dict[str, torch.Tensor] = {}
        self.scalar_counts: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, scalars: Mapping[str, torch.Tensor]) -> None:
        """A step's loss and scalars; a NaN scalar means "not measured in this step" (the refinement's
        distances in a batch without matches) and is left out of that scalar's mean."""
        self.steps += 1
        self.loss_sum += loss.detach().float()
        for key, value in scalars.items():
            value = value.float()
            measured = ~torch.isnan(value)
            self.scalar_sums[key] = self.scalar_sums.get(key, 0) + torch.where(measured, value, 0.0)
            self.scalar_counts[key] = self.scalar_counts.get(key, 0) + measured.float()

    def mean_loss(self) -> float:
        return float(self.loss_sum) / self.steps

    def mean_scalars(self) -> dict[str, float]:
        """Each scalar's mean over the steps that measured it (NaN when none did)."""
        return {key: float(value) / float(self.scalar_counts[key]) if float(self.scalar_counts[key]) else float("nan")
                for key, value in self.scalar_sums.items()}

    def rate(self) -> float:
        """Iterations per second since the window (or its clock) started."""
        return self.steps / max(time.perf_counter() - self.started, 1e-9)

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.scalar_sums.clear()
        self.scalar_counts.clear()
        self.steps = 0
        self.restart_clock()

    def restart_clock(self) -> None:
        """Leave validation and checkpoint time out of the next rate."""
        self.started = time.perf_counter()


class TimeBudget:
    """``train.max_minutes``: the wall-clock budget of this run (0: none)."""

    def __init__(self, minutes: float):
        self.minutes = float(minutes)
        self.start = time.perf_counter()

    def spent(self) -> bool:
        return self.minutes > 0 and time.perf_counter() - self.start > self.minutes * 60.0
