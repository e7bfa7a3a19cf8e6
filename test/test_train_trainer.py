"""The trainer end to end on a tiny stand-in dataset: checkpoints, resume, Ctrl+C, NaN, DDP, CLI."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from superpoint_training import Extractor, load_superpoint
from superpoint_training.train import main as train_main
from superpoint_training.training.magicpoint_task import MagicPointTask
from superpoint_training.training.trainer import TrainingDiverged, train

TEST_DIR = Path(__file__).resolve().parent
TINY = {
    "data": {"name": "rectangles", "size": 8, "image_size": [32, 48]},
    "train": {
        "iterations": 4,
        "batch_size": 2,
        "num_workers": 0,
        "num_threads": 1,
        "log_every": 1,
        "image_every": 2,
        "checkpoint_every": 2,
        "device": "cpu",
    },
    "validation": {"every": 2, "batch_size": 8, "max_images": 4},
}

pytestmark = pytest.mark.usefixtures("rectangles")


def run(tmp_path: Path, name: str = "tiny", overrides=None, **kwargs):
    return train(TINY, name, overrides=overrides, exper_dir=tmp_path / name, show_progress=False, **kwargs)


def test_train_writes_checkpoint_that_extractor_loads_and_resumes(tmp_path):
    trainer = run(tmp_path)
    folder = tmp_path / "tiny"
    for name in ("checkpoint.pth", "weights.pth", "config.yaml", "metrics.yaml"):
        assert (folder / name).is_file(), name
    assert list(folder.glob("events.out.tfevents.*"))
    assert not list(folder.glob("*.tmp"))
    checkpoint = torch.load(folder / "checkpoint.pth", weights_only=False)
    assert checkpoint["format"] == "superpoint_ros" and checkpoint["iteration"] == 4
    assert "optimizer" in checkpoint and checkpoint["config"]["train"]["batch_size"] == 2
    weights = torch.load(folder / "weights.pth", weights_only=True)
    assert "optimizer" not in weights and weights["model_config"] == {"variant": "v6", "descriptor_dim": 0}
    assert set(weights["metrics"]) >= {"iteration", "precision", "recall", "mAP", "localization_error"}
    extractor = Extractor(folder / "weights.pth", device="cpu", warmup=False)
    features = extractor(np.random.default_rng(0).random((32, 48), dtype=np.float32))
    assert features.descriptors.shape[1] == 0
    assert torch.equal(
        extractor.model.state_dict()["detector.1.conv.weight"], trainer.model.state_dict()["detector.1.conv.weight"]
    )
    # same command with more iterations: resumes from the saved iteration, not from scratch
    resumed = run(tmp_path, overrides=["train.iterations=6", "train.learning_rate=0.0002"])
    assert resumed.start_iteration == 4 and resumed.final_iteration == 6
    assert resumed.optimizer.param_groups[0]["lr"] == 0.0002  # a new learning rate holds on resume
    assert torch.load(folder / "weights.pth", weights_only=True)["iteration"] == 6
    restarted = run(tmp_path, overrides=["train.iterations=2"], overwrite=True)
    assert restarted.start_iteration == 0 and restarted.final_iteration == 2
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # the earlier runs' logs are gone


def test_sigint_saves_and_exits_cleanly(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = MagicPointTask.loss

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch)

    monkeypatch.setattr(MagicPointTask, "loss", loss)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background run
    trainer = run(tmp_path, overrides=["train.iterations=50", "train.checkpoint_every=100", "validation.every=0"])
    assert trainer.final_iteration == 3
    assert torch.load(tmp_path / "tiny" / "checkpoint.pth", weights_only=False)["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = MagicPointTask.loss

    def loss(self, model, batch):
        calls["n"] += 1
        value, scalars, outputs = original(self, model, batch)
        return (value * float("nan") if calls["n"] >= 4 else value), scalars, outputs

    monkeypatch.setattr(MagicPointTask, "loss", loss)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        run(tmp_path, overrides=["train.iterations=10", "validation.every=0"])
    loaded = load_superpoint(tmp_path / "tiny" / "checkpoint.pth")
    assert loaded.checkpoint["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in loaded.model.state_dict().values() if v.is_floating_point())


def test_pretrained_model(tmp_path):
    run(tmp_path, "first", overrides=["train.iterations=2", "validation.every=0"])
    source = load_superpoint(tmp_path / "first" / "weights.pth").model.state_dict()
    trainer = run(
        tmp_path,
        "second",
        overrides=["train.iterations=1", "validation.every=0", "train.learning_rate=1e-12"],
        pretrained=str(tmp_path / "first" / "weights.pth"),
    )
    weight = trainer.model.state_dict()["backbone.0.0.conv.weight"].cpu()
    assert torch.allclose(weight, source["backbone.0.0.conv.weight"], atol=1e-6)
    with pytest.raises(ValueError, match="no tensor matches"):
        from helpers import random_state_dict

        torch.save(random_state_dict("v1"), tmp_path / "v1.pth")
        run(tmp_path, "third", pretrained=str(tmp_path / "v1.pth"))


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, SUPERPOINT_EXPER_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEST_DIR), env.get("PYTHONPATH")]))
    return env


def _write_config(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_cli_help_and_bad_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "examples:" in out and "--pretrained_model" in out
    config = _write_config(tmp_path)
    assert train_main([str(config), "x", "--set", "train.lerning_rate=1"]) == 2
    assert "train.lerning_rate" in capsys.readouterr().err


def test_cli_trains_the_ci_config_on_synthetic_shapes(tmp_path, monkeypatch, capsys):
    """The README's command on the tiny CI config: real Synthetic Shapes data, augmentation, checkpoint."""
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path))
    monkeypatch.setenv("SUPERPOINT_DATA_DIR", str(tmp_path / "data"))
    config = TEST_DIR.parent / "config" / "magic-point_shapes_ci.yaml"
    assert train_main([str(config), "ci", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "validation at iteration 4" in out and "mAP" in out
    loaded = load_superpoint(tmp_path / "ci" / "weights.pth")
    assert loaded.checkpoint["iteration"] == 4 and loaded.checkpoint["config"]["data"]["name"] == "synthetic_shapes"
    features = Extractor(loaded, device="cpu", warmup=False)(np.zeros((48, 64), np.uint8))
    assert features.keypoints.shape[1] == 2


def test_ddp_two_cpu_processes_gloo(tmp_path):
    config = _write_config(tmp_path)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(TEST_DIR / "train_standin.py"),  # the train command, with the stand-in dataset
        str(config),
        "ddp",
        "--no_progress",
        "--set",
        "train.iterations=3",
        "--set",
        "train.batch_size=4",
    ]
    out = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path), timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoint.pth", weights_only=False)
    assert checkpoint["iteration"] == 3
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    assert "done: iteration 3" in out.stdout


def test_dustbin_prior_initialisation(tmp_path):
    from superpoint_training.model.network import ModelConfig, SuperPoint
    from superpoint_training.training.task import set_dustbin_prior

    for variant in ("v6", "v1"):
        model = SuperPoint(ModelConfig(variant=variant, descriptor_dim=0)).eval()
        set_dustbin_prior(model, 0.95)
        if variant == "v6":
            logits, _ = model(torch.rand(1, 1, 16, 16))
            assert torch.allclose(torch.softmax(logits, 1)[:, -1], torch.tensor(0.95), atol=0.01)
    trainer = run(tmp_path, overrides=["train.iterations=1", "train.dustbin_prior=0.9", "validation.every=0"])
    assert trainer.config["train"]["dustbin_prior"] == 0.9


def test_max_minutes_stops_saves_and_resumes(tmp_path):
    spent = run(tmp_path, overrides=["train.iterations=1000", "train.max_minutes=0.00001", "validation.every=0",
                                     "train.checkpoint_every=1000"])
    assert spent.budget_reached and spent.final_iteration == 1  # the first log step past the budget
    assert torch.load(tmp_path / "tiny" / "checkpoint.pth", weights_only=False)["iteration"] == 1
    assert spent.metrics_history and spent.metrics_history[-1]["iteration"] == 1  # validated before stopping
    resumed = run(tmp_path, overrides=["train.iterations=3", "validation.every=0"])
    assert resumed.start_iteration == 1 and resumed.final_iteration == 3 and not resumed.budget_reached


# ---------------------------------------------------------------- runs that cannot be mixed up (issue 25)


def test_resume_refuses_other_data_or_start_weights_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path))
    config = _write_config(tmp_path)
    base = [str(config), "mixed", "--no_progress", "--set", "train.iterations=2", "--set", "validation.every=0"]
    assert train_main(base) == 0
    capsys.readouterr()
    # other data and other start weights: one line naming both keys and the ways out
    assert train_main([*base, "--set", "data.size=9", "--pretrained_model", str(tmp_path / "mixed" / "weights.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "data.size: 8 -> 9" in err and "pretrained: none -> " in err
    assert "--overwrite" in err and "new experiment name" in err
    assert torch.load(tmp_path / "mixed" / "checkpoint.pth", weights_only=False)["iteration"] == 2  # untouched
    # what may change on resume: length, rate, intervals, validation
    assert train_main([*base, "--set", "train.iterations=3", "--set", "train.learning_rate=0.0005",
                       "--set", "validation.every=3", "--set", "train.log_every=3"]) == 0
    assert "done: iteration 3" in capsys.readouterr().out
    assert train_main([*base, "--set", "data.size=9", "--overwrite"]) == 0  # the documented way out


def test_resumed_run_draws_the_same_samples_and_augmentation(tmp_path, monkeypatch):
    """An interrupted and resumed run (DataLoader workers, random per-sample and on-device changes)
    gives the losses of an uninterrupted one."""
    from train_standin import Rectangles

    from superpoint_training.training.trainer import DATASETS

    class NoisyRectangles(Rectangles):  # random per sample, in the worker that reads it
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return dict(item, image=item["image"] + 0.2 * torch.rand_like(item["image"]))

    monkeypatch.setitem(DATASETS, "noisy", NoisyRectangles)
    losses: list[float] = []
    stop_at = {"n": None}
    original = MagicPointTask.loss

    def loss(self, model, batch):
        batch = dict(batch, image=batch["image"] + 0.1 * torch.rand_like(batch["image"]))  # on-device randomness
        value, scalars, outputs = original(self, model, batch)
        losses.append(float(value.detach()))
        if len(losses) == stop_at["n"]:
            os.kill(os.getpid(), signal.SIGINT)
        return value, scalars, outputs

    monkeypatch.setattr(MagicPointTask, "loss", loss)
    common = ["data.name=noisy", "data.size=6", "validation.every=0", "train.checkpoint_every=100"]
    run(tmp_path, "whole", overrides=[*common, "train.iterations=7"])
    whole = list(losses)
    losses.clear()
    stop_at["n"] = 4  # the batch of size 2 over 6 samples: the stop falls inside the second epoch
    stopped = run(tmp_path, "parts", overrides=[*common, "train.iterations=7", "train.num_workers=2"])
    assert stopped.final_iteration == 4 and stopped.stopped_by == signal.SIGINT
    stop_at["n"] = None
    resumed = run(tmp_path, "parts", overrides=[*common, "train.iterations=7", "train.num_workers=1"])
    assert resumed.start_iteration == 4
    assert len(losses) == len(whole) == 7
    assert np.allclose(losses, whole, rtol=1e-5, atol=1e-6), (losses, whole)
    saved = torch.load(tmp_path / "parts" / "checkpoint.pth", weights_only=False)
    assert saved["sampler"] == {"seed": 0, "iteration": 7, "epoch": 2, "batch": 1}
    a, b = resumed.model.state_dict(), load_superpoint(tmp_path / "whole" / "weights.pth").model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def _scalar_steps(folder: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_resume_after_kill_9_logs_each_step_once(tmp_path):
    run(tmp_path, overrides=["train.keep_every=2", "validation.every=0"])
    folder = tmp_path / "tiny"
    assert _scalar_steps(folder, "train/loss") == [1, 2, 3, 4]
    # kill -9 after step 4 was logged but before its checkpoint: the last checkpoint is iteration 2
    os.replace(folder / "checkpoint_0000002.pth", folder / "checkpoint.pth")
    resumed = run(tmp_path, overrides=["train.keep_every=2", "validation.every=0"])
    assert resumed.start_iteration == 2
    assert _scalar_steps(folder, "train/loss") == [1, 2, 3, 4]


def test_keep_best_keeps_the_weights_of_the_best_validation(tmp_path):
    trainer = run(tmp_path, overrides=["train.iterations=6", "train.keep_best=localization_error"])
    errors = {m["iteration"]: m["localization_error"] for m in trainer.metrics_history}
    best = load_superpoint(tmp_path / "tiny" / "best_weights.pth").checkpoint
    assert len(errors) == 3 and best["metrics"]["localization_error"] == min(errors.values())
    assert best["iteration"] == min(errors, key=errors.get)
    with pytest.raises(ValueError, match="train.keep_best: no validation metric 'mAp'.*mAP"):
        run(tmp_path, "typo", overrides=["train.keep_best=mAp"])


def test_weights_record_their_provenance_and_check_prints_it(tmp_path, capsys):
    from superpoint_training import weights as weights_command

    run(tmp_path, "first", overrides=["train.iterations=1", "validation.every=0"])
    run(tmp_path, "second", overrides=["train.iterations=1", "validation.every=0"],
        pretrained=str(tmp_path / "first" / "weights.pth"))
    record = torch.load(tmp_path / "second" / "weights.pth", weights_only=True)["provenance"]
    assert record["pretrained"]["path"] == str((tmp_path / "first" / "weights.pth").resolve())
    assert record["pretrained"]["experiment"] == "first" and len(record["pretrained"]["sha256"]) == 64
    assert record["machine"]["versions"]["torch"] == importlib.metadata.version("torch")
    assert weights_command.main(["check", str(tmp_path / "second" / "weights.pth")]) == 0
    out = capsys.readouterr().out
    assert "pretrained: " + str(tmp_path / "first" / "weights.pth") in out and "experiment first iteration 1" in out
    assert "versions: torch " in out and "experiment: second, iteration 1" in out


def test_sigterm_and_sigint_to_the_process_group_save_and_exit_143_130(tmp_path):
    """What timeout, Slurm and docker stop do: the signal reaches every process of the group, the
    DataLoader workers included; the run saves a checkpoint and exits 143 (SIGTERM) or 130 (SIGINT)."""
    config = _write_config(tmp_path)
    command = [sys.executable, str(TEST_DIR / "train_standin.py"), str(config), "group", "--no_progress",
               "--set", "train.num_workers=2", "--set", "train.iterations=100000", "--set", "data.size=64"]
    saved = 0
    for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=_env(tmp_path), start_new_session=True)
        try:
            for line in process.stdout:  # wait until it trains (the workers are running by then)
                if line.startswith(f"iteration {saved + 2}/"):
                    break
            os.killpg(process.pid, signum)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        assert process.returncode == status, err[-2000:]
        assert "killed by signal" not in err and "Traceback" not in err
        assert f"{signal.Signals(signum).name}: saving a checkpoint" in err
        iteration = torch.load(tmp_path / "group" / "checkpoint.pth", weights_only=False)["iteration"]
        assert iteration > saved  # the second run resumed the first one's checkpoint
        saved = iteration


def test_a_checkpoint_from_before_a_new_config_key_resumes_when_the_key_keeps_its_default(tmp_path):
    from superpoint_training.training.trainer import resume_differences

    run(tmp_path, overrides=["train.iterations=2", "validation.every=0"])
    path = tmp_path / "tiny" / "checkpoint.pth"
    state = torch.load(path, weights_only=False)
    del state["config"]["loss"]["temperature"]  # as written by a version without that key
    torch.save(state, path)
    assert run(tmp_path, overrides=["train.iterations=3", "validation.every=0"]).final_iteration == 3
    with pytest.raises(ValueError, match=r"loss.temperature: 0.1 -> 0.5"):
        run(tmp_path, overrides=["train.iterations=4", "validation.every=0", "loss.temperature=0.5"])
    assert resume_differences({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c"]  # no default known: differs
