"""The trainer end to end on a tiny stand-in dataset: checkpoints, resume, Ctrl+C, NaN, DDP, CLI."""

from __future__ import annotations

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
