"""The loader recognises every format, names what is wrong with anything else, and the download checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_state_dict

from superpoint_training import Extractor, ModelConfig, SuperPoint, WeightsError, load_superpoint
from superpoint_training import weights as weights_command
from superpoint_training.model import loading


@pytest.mark.parametrize("variant", ["v1", "v6"])
def test_published_layouts_load_from_file(tmp_path, variant):
    state = random_state_dict(variant)
    path = tmp_path / f"{variant}.pth"
    torch.save(state, path)
    loaded = load_superpoint(path)
    assert loaded.format == variant
    assert loaded.model.config.descriptor_dim == 256
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_project_checkpoint_carries_its_config(tmp_path):
    model = SuperPoint(ModelConfig(variant="v6", descriptor_dim=0))
    path = tmp_path / "magicpoint.pth"
    torch.save({"format": "superpoint_ros", "model_config": model.config.to_dict(), "model": model.state_dict(),
                "config": {"train": {"lr": 0.001}}, "iteration": 7,
                "detection_defaults": {"detection_threshold": 0.015}}, path)
    loaded = load_superpoint(path)
    assert loaded.format == "checkpoint"
    assert not loaded.model.has_descriptor
    assert loaded.checkpoint["iteration"] == 7
    assert loaded.detection_defaults["detection_threshold"] == 0.015
    features = Extractor(path, device="cpu", warmup=False)(np.zeros((64, 64), np.uint8))
    assert features.descriptors.shape[1] == 0


def test_ddp_prefix_is_accepted():
    state = {f"module.{k}": v for k, v in random_state_dict("v6").items()}
    assert load_superpoint(state).format == "v6"


def test_wrong_layout_names_missing_unexpected_and_shapes(tmp_path):
    state = random_state_dict("v6")
    del state["detector.0.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["descriptor.0.conv.bias"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_superpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "missing keys: detector.0.conv.weight" in message
    assert "unexpected keys: extra.weight" in message
    assert "descriptor.0.conv.bias: got (3,), expected (256,)" in message


def test_unknown_layout_is_reported(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="unknown weights layout"):
        load_superpoint(path)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(WeightsError, match="not found: .*nope.pth"):
        load_superpoint(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(WeightsError, match="corrupt.pth: cannot read weights"):
        load_superpoint(corrupt)


def test_named_weights_not_present_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setitem(loading.NAMED_WEIGHTS, "superpoint_v1",
                        (tmp_path / "superpoint_v1.pth", "copy it there (non-commercial licence)"))
    with pytest.raises(WeightsError, match="superpoint_v1.*non-commercial"):
        load_superpoint("superpoint_v1")


def test_download_checks_what_it_loads(tmp_path):
    good = tmp_path / "served_v6.pth"
    torch.save(random_state_dict("v6"), good)
    destination = tmp_path / "cache" / "superpoint_v6_from_tf.pth"
    loading.download(good.as_uri(), destination)
    assert load_superpoint(destination).format == "v6"

    bad = tmp_path / "served_v1.pth"
    torch.save(random_state_dict("v1"), bad)
    other = tmp_path / "cache" / "other.pth"
    with pytest.raises(WeightsError, match="expected v6 weights, found v1"):
        loading.download(bad.as_uri(), other)
    assert not other.exists()
    assert not list(other.parent.glob("*.part"))


def test_weights_cli_check_and_list(tmp_path, capsys):
    path = tmp_path / "w.pth"
    torch.save(random_state_dict("v1"), path)
    assert weights_command.main(["check", str(path)]) == 0
    assert "v1 weights" in capsys.readouterr().out
    assert weights_command.main(["check", str(tmp_path / "missing.pth")]) == 1
    assert weights_command.main(["list"]) == 0
    assert "superpoint_v6_from_tf" in capsys.readouterr().out


def test_weights_cli_defaults_writes_checked_detection_defaults(tmp_path, capsys):
    model = SuperPoint(ModelConfig(variant="v6"))
    source = tmp_path / "checkpoint.pth"
    torch.save({"format": "superpoint_ros", "model_config": model.config.to_dict(), "model": model.state_dict(),
                "iteration": 3, "optimizer": {"state": {}}, "detection_defaults": {"detection_threshold": 0.005}},
               source)
    output = tmp_path / "release" / "weights.pth"
    args = ["defaults", str(source), str(output), "--set", "detection_threshold=0.002", "--set", "subpixel=quadratic"]
    assert weights_command.main(args) == 0
    assert "subpixel" in capsys.readouterr().out
    stored = torch.load(output, map_location="cpu", weights_only=False)
    assert "scales" not in stored["detection_defaults"]
    assert "optimizer" not in stored and stored["iteration"] == 3
    extractor = Extractor(output, device="cpu", warmup=False)
    assert extractor.config.detection_threshold == 0.002 and extractor.config.subpixel == "quadratic"
    assert Extractor(output, device="cpu", warmup=False, subpixel="none").config.subpixel == "none"  # a call wins
    pyramid = tmp_path / "pyramid.pth"
    assert weights_command.main(["defaults", str(output), str(pyramid), "--set", "scales=0.5,1"]) == 0
    assert torch.load(pyramid, map_location="cpu", weights_only=False)["detection_defaults"]["scales"] == [1.0, 0.5]
    assert Extractor(pyramid, device="cpu", warmup=False).config.scales == (1.0, 0.5)
    for bad, message in ((["--set", "subpixel=cubic"], "subpixel"), (["--set", "max_keypoints=5"], "max_keypoints"),
                         (["--set", "scales=0,1"], "scales"),
                         (["--set", "detection_threshold=2"], "detection_threshold")):
        assert weights_command.main(["defaults", str(source), str(tmp_path / "bad.pth"), *bad]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.pth").exists()
    published = tmp_path / "published.pth"
    torch.save(random_state_dict("v6"), published)
    assert weights_command.main(["defaults", str(published), str(tmp_path / "p.pth"), "--set", "nms_radius=3"]) == 1
    assert "not a project checkpoint" in capsys.readouterr().err


def test_weights_cli_interpolate_mixes_two_checkpoints_parameter_by_parameter(tmp_path, capsys):
    torch.manual_seed(0)
    first, second = SuperPoint(ModelConfig(variant="v6")), SuperPoint(ModelConfig(variant="v6"))
    paths = []
    for name, model, iteration in (("first", first, 10), ("second", second, 20)):
        paths.append(tmp_path / f"{name}.pth")
        torch.save({"format": "superpoint_ros", "model_config": model.config.to_dict(), "model": model.state_dict(),
                    "iteration": iteration, "detection_defaults": {"detection_threshold": 0.002 * iteration}},
                   paths[-1])
    output = tmp_path / "mix.pth"
    assert weights_command.main(["interpolate", str(paths[0]), str(paths[1]), str(output), "--fraction", "0.25"]) == 0
    mixed = torch.load(output, map_location="cpu", weights_only=False)
    name = "descriptor.1.conv.weight"
    expected = 0.75 * first.state_dict()[name] + 0.25 * second.state_dict()[name]
    assert torch.allclose(mixed["model"][name], expected, atol=1e-6)
    assert not torch.allclose(first.state_dict()[name], second.state_dict()[name])
    assert mixed["interpolation"]["fraction"] == 0.25 and mixed["interpolation"]["second_iteration"] == 20
    assert "iteration" not in mixed  # neither run's iteration describes the mix
    assert Extractor(output, device="cpu", warmup=False).config.detection_threshold == 0.02  # from the first
    other = tmp_path / "magicpoint.pth"
    magicpoint = SuperPoint(ModelConfig(variant="v6", descriptor_dim=0))
    torch.save({"format": "superpoint_ros", "model_config": magicpoint.config.to_dict(),
                "model": magicpoint.state_dict()}, other)
    bad = str(tmp_path / "bad.pth")
    for args, message in (([str(paths[0]), str(other), bad, "--fraction", "0.5"], "different models"),
                          ([str(paths[0]), str(paths[1]), bad, "--fraction", "1.5"], "fraction")):
        assert weights_command.main(["interpolate", *args]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.pth").exists()
