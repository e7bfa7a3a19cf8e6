"""rpautrat's published ``superpoint_v6_from_tf.pth`` loads: a state dict with exactly its key set.

The published file holds the TensorFlow variables renamed (``torch.save(tf_state_dict)`` in its
``convert_to_pytorch.ipynb``): conv weight and bias, BatchNorm weight, bias, running_mean and
running_var, and no BatchNorm ``num_batches_tracked`` counters. The state dict here is written out
from that description, not taken from the project's own module, so that a loader demanding the
counters (or any other key PyTorch's own module has) fails this test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpoint_training import Extractor, WeightsError, load_superpoint
from superpoint_training import weights as weights_command
from superpoint_training.model import loading

# (name, input channels, output channels, kernel size) of every conv + BatchNorm block of the v6 port
V6_BLOCKS = [
    ("backbone.0.0", 1, 64, 3), ("backbone.0.1", 64, 64, 3),
    ("backbone.1.0", 64, 64, 3), ("backbone.1.1", 64, 64, 3),
    ("backbone.2.0", 64, 128, 3), ("backbone.2.1", 128, 128, 3),
    ("backbone.3.0", 128, 128, 3), ("backbone.3.1", 128, 128, 3),
    ("detector.0", 128, 256, 3), ("detector.1", 256, 65, 1),
    ("descriptor.0", 128, 256, 3), ("descriptor.1", 256, 256, 1),
]  # fmt: skip


def published_v6_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, c_in, c_out, k in V6_BLOCKS:
        state[f"{name}.conv.weight"] = torch.randn(c_out, c_in, k, k, generator=generator) * (2 / (c_in * k * k)) ** 0.5
        state[f"{name}.conv.bias"] = torch.randn(c_out, generator=generator) * 0.01
        state[f"{name}.bn.weight"] = 1 + 0.1 * torch.randn(c_out, generator=generator)
        state[f"{name}.bn.bias"] = 0.1 * torch.randn(c_out, generator=generator)
        state[f"{name}.bn.running_mean"] = 0.1 * torch.randn(c_out, generator=generator)
        state[f"{name}.bn.running_var"] = 0.5 + torch.rand(c_out, generator=generator)
    return state


def test_the_published_key_set_is_what_the_file_holds():
    state = published_v6_state_dict()
    assert len(state) == 12 * 6
    assert not any("num_batches_tracked" in key for key in state)


def test_published_v6_file_loads_and_extracts(tmp_path):
    state = published_v6_state_dict()
    path = tmp_path / "superpoint_v6_from_tf.pth"
    torch.save(state, path)
    loaded = load_superpoint(path)
    assert loaded.format == "v6"
    assert loaded.model.config.descriptor_dim == 256
    loaded_state = loaded.model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded_state[key], value), key
    counters = [key for key in loaded_state if key.endswith("num_batches_tracked")]
    assert len(counters) == 12
    image = (np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8)
    features = Extractor(path, device="cpu", warmup=False)(image)
    assert features.descriptors.shape[1] == 256


def test_download_and_check_accept_the_published_file(tmp_path, capsys):
    served = tmp_path / "served.pth"
    torch.save(published_v6_state_dict(), served)
    destination = tmp_path / "cache" / "superpoint_v6_from_tf.pth"
    loading.download(served.as_uri(), destination)
    assert destination.exists()
    assert weights_command.main(["check", str(destination)]) == 0
    assert "v6 weights" in capsys.readouterr().out


@pytest.mark.parametrize("dropped", ["detector.1.bn.running_var", "backbone.2.0.conv.bias"])
def test_any_other_missing_key_is_still_named(tmp_path, dropped):
    state = published_v6_state_dict()
    del state[dropped]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_superpoint(path)
    message = str(error.value)
    assert f"missing keys: {dropped}" in message
    assert "num_batches_tracked" not in message
