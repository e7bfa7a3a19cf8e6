"""What a training run shows and records as it goes: TensorBoard scalars and images, the progress
bar and printed lines. Only the main process writes; on the others every call does nothing."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path

import torch


class RunLog:
    """TensorBoard events in the experiment folder, a tqdm bar (or one printed line per log step)."""

    def __init__(self, folder: Path, experiment: str, total: int, start_iteration: int, *, main: bool,
                 show_progress: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.main = main
        self.total = total
        # a run killed after its last checkpoint logged steps that this run logs again: drop them
        purge = start_iteration + 1 if start_iteration else None
        self.writer = SummaryWriter(str(folder), purge_step=purge) if main else None
        self.progress = None
        if main and show_progress:
            from tqdm import tqdm

            self.progress = tqdm(total=total, initial=start_iteration, desc=experiment, dynamic_ncols=True,
                                 mininterval=0.5 if sys.stderr.isatty() else 30.0, smoothing=0.05)

    def print(self, message: str) -> None:
        """A line on the main process, above the progress bar when there is one."""
        if not self.main:
            return
        if self.progress is not None:
            self.progress.write(message)
        else:
            print(message, flush=True)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def training(self, iteration: int, loss: float, scalars: Mapping[str, float], rate: float,
                 learning_rate: float) -> None:
        """The scalars of one log step, and the loss on the bar (or a printed line)."""
        if not self.main:
            return
        self.writer.add_scalar("train/loss", loss, iteration)
        for key, value in scalars.items():
            self.writer.add_scalar(f"train/{key}", value, iteration)
        self.writer.add_scalar("train/iterations_per_second", rate, iteration)
        self.writer.add_scalar("train/learning_rate", learning_rate, iteration)
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
        else:
            print(f"iteration {iteration}/{self.total} loss {loss:.4f} {rate:.2f} it/s", flush=True)

    def images(self, iteration: int, pictures: Mapping[str, torch.Tensor]) -> None:
        if self.main:
            for name, picture in pictures.items():
                self.writer.add_image(name, picture, iteration)

    def validation(self, iteration: int, metrics: Mapping[str, float], seconds: float) -> None:
        """The finite metrics to TensorBoard, all of them on one printed line."""
        if not self.main:
            return
        for key, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"validation/{key}", value, iteration)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.print(f"validation at iteration {iteration} ({seconds:.1f} s): {shown}")

    def close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def close(self) -> None:
        self.close_progress()
        if self.writer is not None:
            self.writer.close()
