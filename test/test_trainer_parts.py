"""The trainer's parts on their own: the torchrun environment, the loop's schedule and loss sums,
the time budget, the best-weights rule, and the label export's bounded background writes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from superpoint_training.training.checkpoints import is_new_best
from superpoint_training.training.distributed import TorchrunEnvironment
from superpoint_training.training.loop_control import LossWindow, Schedule, TimeBudget
from superpoint_training.training.pseudo_labels import BackgroundWrites, export_device


def test_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    alone = TorchrunEnvironment.from_environ()
    assert (alone.rank, alone.world_size, alone.local_rank, alone.enabled) == (0, 1, 0, False)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    group = TorchrunEnvironment.from_environ()
    assert (group.rank, group.world_size, group.local_rank, group.enabled) == (5, 8, 1, True)
    assert group.device("cpu") == torch.device("cpu")
    assert export_device("cpu", group) == "cpu" and export_device("cuda:0", alone) == "cuda:0"


def test_schedule():
    config = {"train": {"iterations": 10, "log_every": 4, "checkpoint_every": 5, "image_every": 3},
              "validation": {"every": 0}}
    schedule = Schedule(config)
    assert [i for i in range(1, 11) if schedule.sync_due(i)] == [4, 5, 8, 10]
    assert [i for i in range(1, 11) if schedule.save_due(i)] == [5, 10]
    assert [i for i in range(1, 11) if schedule.validate_due(i)] == [10]  # every 0: only at the end
    assert schedule.images_due(4, 4) and not schedule.images_due(8, 2) and schedule.images_due(10, 2)


def test_loss_window_means_and_reset():
    window = LossWindow(torch.device("cpu"))
    for value in (1.0, 2.0, 6.0):
        window.add(torch.tensor(value), {"detector": torch.tensor(value / 2)})
    assert window.steps == 3 and window.mean_loss() == pytest.approx(3.0)
    assert window.mean_scalars() == {"detector": pytest.approx(1.5)} and window.rate() > 0
    window.reset()
    window.add(torch.tensor(float("nan")), {})
    assert window.steps == 1 and window.mean_loss() != window.mean_loss() and window.mean_scalars() == {}
    window.reset()  # a NaN scalar is a step that did not measure it: left out of its mean only
    for value in (1.0, float("nan"), 3.0):
        window.add(torch.tensor(value), {"px": torch.tensor(value), "never": torch.tensor(float("nan"))})
    means = window.mean_scalars()
    assert means["px"] == pytest.approx(2.0) and means["never"] != means["never"]
    assert window.mean_loss() != window.mean_loss()  # the loss itself is not excused


def test_time_budget():
    assert not TimeBudget(0).spent()
    budget = TimeBudget(1e-4)  # 6 ms
    time.sleep(0.02)
    assert budget.spent()


def test_best_weights_rule():
    history = [{"mAP": 0.5, "localization_error": 2.0}, {"mAP": float("nan"), "localization_error": 1.5}]
    assert is_new_best("mAP", 0.6, history) and not is_new_best("mAP", 0.5, history)  # a tie keeps the earlier
    assert is_new_best("localization_error", 1.4, history) and not is_new_best("localization_error", 1.6, history)
    assert not is_new_best("mAP", float("nan"), []) and is_new_best("mAP", 0.1, [])


def test_background_writes_are_bounded_and_raise_in_the_caller():
    release, running = threading.Event(), []

    def slow(index):
        running.append(index)
        release.wait(5)

    with BackgroundWrites(limit=2, threads=1) as writes:
        writes.submit(slow, 0)
        writes.submit(slow, 1)
        assert len(writes.pending) == 2
        release.set()
        writes.submit(slow, 2)  # over the limit: waits for the oldest
        assert len(writes.pending) <= 2
    assert running == [0, 1, 2] and not writes.pending

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), BackgroundWrites(limit=4) as writes:
        writes.submit(broken)
