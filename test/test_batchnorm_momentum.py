"""``model.batchnorm_momentum``: PyTorch's convention (TF's 0.99 = 0.01 here), 0.1 by default."""

from __future__ import annotations

import pytest
import torch

from superpoint_training.model.network import ModelConfig, SuperPoint


def batchnorms(model: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_momentum_reaches_every_batchnorm_and_changes_the_running_statistics():
    default = SuperPoint(ModelConfig(variant="v6", descriptor_dim=8))
    assert len(batchnorms(default)) == 12 and all(m.momentum == 0.1 for m in batchnorms(default))
    slow = SuperPoint(ModelConfig(variant="v6", descriptor_dim=8, batchnorm_momentum=0.01))
    assert all(m.momentum == 0.01 for m in batchnorms(slow))
    slow.load_state_dict(default.state_dict())
    image = torch.rand(2, 1, 16, 16)
    default.train()(image)
    slow.train()(image)
    # one step from mean 0: the running mean moves by momentum * batch mean
    fast_mean = batchnorms(default)[0].running_mean
    slow_mean = batchnorms(slow)[0].running_mean
    torch.testing.assert_close(slow_mean * 10, fast_mean)


def test_stored_config_is_unchanged_at_the_default_and_checked():
    assert ModelConfig(variant="v6", descriptor_dim=0).to_dict() == {"variant": "v6", "descriptor_dim": 0}
    stored = ModelConfig(batchnorm_momentum=0.01).to_dict()
    assert stored["batchnorm_momentum"] == 0.01 and ModelConfig(**stored).batchnorm_momentum == 0.01
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="model.batchnorm_momentum"):
            ModelConfig(batchnorm_momentum=bad)


def test_reference_configs_use_tf_momentum_and_the_others_keep_pytorch():
    from superpoint_training.common.config import ConfigError
    from superpoint_training.training.trainer import build_config

    for name in ("magic-point_shapes.yaml", "magic-point_coco_train.yaml", "superpoint_coco.yaml"):
        assert build_config(f"config/{name}")["model"]["batchnorm_momentum"] == 0.01, name
    # the campaign's configs: the value the shipped weights were trained with
    for name in ("magic-point_shapes_cpu.yaml", "magic-point_shapes_ci.yaml", "magic-point_photos.yaml",
                 "superpoint_photos_cpu.yaml"):
        assert build_config(f"config/{name}")["model"]["batchnorm_momentum"] == 0.1, name
    with pytest.raises(ConfigError, match="model.batchnorm_momentum"):
        build_config("config/superpoint_coco.yaml", ["model.batchnorm_momentum=fast"])
