"""Strict configs: unknown keys and wrong types name the key path."""

from __future__ import annotations

import pytest

from superpoint_training.common.config import ConfigError, Maybe, OpenMapping, load_config, merge_strict, parse_override
from superpoint_training.training.trainer import DEFAULTS, build_config

DEFAULTS_SMALL = {"train": {"learning_rate": 1e-3, "batch_size": 64, "amp": False, "name": "x"}, "free": OpenMapping()}


def test_merge_keeps_defaults_and_converts_int_to_float():
    merged = merge_strict(DEFAULTS_SMALL, {"train": {"learning_rate": 1}})
    assert merged["train"] == {"learning_rate": 1.0, "batch_size": 64, "amp": False, "name": "x"}
    assert isinstance(merged["train"]["learning_rate"], float)


@pytest.mark.parametrize(
    "user, key",
    [
        ({"train": {"lerning_rate": 0.1}}, "train.lerning_rate"),
        ({"trian": {}}, "trian"),
        ({"train": {"batch_size": "64"}}, "train.batch_size"),
        ({"train": {"batch_size": 1.5}}, "train.batch_size"),
        ({"train": {"amp": 1}}, "train.amp"),
        ({"train": {"name": 3}}, "train.name"),
        ({"train": 5}, "train"),
    ],
)
def test_errors_name_the_key(user, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        merge_strict(DEFAULTS_SMALL, user)


def test_open_mapping_accepts_any_key():
    assert merge_strict(DEFAULTS_SMALL, {"free": {"anything": [1, 2]}})["free"] == {"anything": [1, 2]}


def test_openings_are_declared_not_implied():
    defaults = {"none": {}, "null": None, "maybe": Maybe(float), "open": OpenMapping(known=1)}
    with pytest.raises(ConfigError, match=r"^none\.x: unknown key \(none takes no keys\)"):
        merge_strict(defaults, {"none": {"x": 1}})
    with pytest.raises(ConfigError, match=r"^null: expected null"):
        merge_strict(defaults, {"null": "anything"})
    with pytest.raises(ConfigError, match=r"^maybe: expected float or null"):
        merge_strict(defaults, {"maybe": "0.5"})
    merged = merge_strict(defaults, {"maybe": 1, "open": {"other": "x"}})
    assert merged == {"none": {}, "null": None, "maybe": 1.0, "open": {"known": 1, "other": "x"}}
    assert type(merged["open"]) is dict and merge_strict(defaults, None)["maybe"] is None


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 8\n")
    config = load_config(path, DEFAULTS_SMALL, ["train.learning_rate=0.5", "train.name=abc"])
    assert config["train"] == {"learning_rate": 0.5, "batch_size": 8, "amp": False, "name": "abc"}
    path.write_text("train:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lerning_rate: unknown key"):
        load_config(path, DEFAULTS_SMALL)
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}


def test_trainer_config_checks(tmp_path, rectangles):
    config = build_config({"data": {"name": "rectangles", "size": 4}, "train": {"iterations": 3}})
    assert config["train"]["batch_size"] == DEFAULTS["train"]["batch_size"] and config["data"]["size"] == 4
    with pytest.raises(ConfigError, match=r"data\.sise"):  # the dataset's keys are strict too
        build_config({"data": {"name": "rectangles", "sise": 4}})
    with pytest.raises(ConfigError, match=r"train\.lerning_rate"):
        build_config({"data": {"name": "rectangles"}}, ["train.lerning_rate=0.1"])
    with pytest.raises(ConfigError, match=r"train\.precision"):
        build_config({"data": {"name": "rectangles"}, "train": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match=r"data\.name"):
        build_config({"data": {"name": "no_such_dataset"}})


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "config"
    for name in ("magic-point_shapes.yaml", "magic-point_shapes_cpu.yaml", "magic-point_shapes_ci.yaml"):
        path = root / name
        try:
            config = build_config(path)
        except ModuleNotFoundError:
            pytest.skip("the Synthetic Shapes dataset module is not there yet")
        assert config["task"] == "magicpoint" and config["model"]["descriptor_dim"] == 0
    reference = build_config(root / "magic-point_shapes.yaml")
    assert reference["train"]["batch_size"] == 64 and reference["train"]["learning_rate"] == 1e-3
    assert reference["train"]["iterations"] == 50000 and reference["train"]["optimizer"] == "adam"


def test_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n")  # PyYAML reads this as the string "1e-4"
    assert load_config(path, DEFAULTS_SMALL)["train"]["learning_rate"] == 1e-4
    with pytest.raises(ConfigError, match="train.learning_rate"):
        merge_strict(DEFAULTS_SMALL, {"train": {"learning_rate": "fast"}})
