"""YAML configs merged strictly over defaults.

Every key of a user config must exist in the defaults and have the default's type; anything else
is a :class:`ConfigError` that names the key path (``train.lerning_rate``). An int is accepted where
the default is a float. Openings are declared, never implied: :class:`OpenMapping` defaults accept
other keys too (whoever consumes them checks them, for example the dataset), :class:`Maybe` is a
``None`` default that accepts values of its types; an empty ``{}`` accepts no key and a plain
``None`` default only ``None``.

    config = load_config("config/magic-point_shapes.yaml", overrides=["train.iterations=100"])
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_YAML11_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config with an unknown key, a wrong type or a bad value; the message names the key path."""

    attributed = False  # True once the message names where the value came from (file or --set)


class OpenMapping(dict):
    """Defaults of a mapping that also accepts keys it does not list (checked by its consumer)."""


@dataclass(frozen=True)
class Maybe:
    """A default of ``None`` that also accepts values of ``types`` (an int where float is one of them)."""

    types: type | tuple[type, ...]


def plain(defaults: Any) -> Any:
    """A deep copy of ``defaults`` without the markers: :class:`OpenMapping` -> dict, :class:`Maybe` -> None."""
    if isinstance(defaults, Mapping):
        return {key: plain(value) for key, value in defaults.items()}
    if isinstance(defaults, Maybe):
        return None
    return copy.deepcopy(defaults)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_type(default: Any, value: Any, path: str) -> Any:
    if default is None:
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, Maybe):
        types = default.types if isinstance(default.types, tuple) else (default.types,)
        if value is None:
            return None
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{path}: expected {names} or null, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected a bool, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, float):
        if isinstance(value, str) and _YAML11_EXPONENT.match(value.strip()):
            value = float(value)  # PyYAML reads "1e-3" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_type_name(value)} ({value!r})")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an int, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_type_name(value)} ({value!r})")
        return list(value)
    return value


def merge_strict(defaults: Mapping, overrides: Mapping | None, path: str = "") -> dict:
    """A deep copy of ``defaults`` with ``overrides`` merged in; unknown keys and wrong types raise."""
    result = plain(defaults)
    if overrides is None:
        return result
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_type_name(overrides)}")
    open_mapping = isinstance(defaults, OpenMapping)
    for key, value in overrides.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in defaults:
            if open_mapping:
                result[key] = copy.deepcopy(value)
                continue
            if not defaults:
                raise ConfigError(f"{key_path}: unknown key ({path or 'the config'} takes no keys)")
            known = ", ".join(sorted(map(str, defaults)))
            raise ConfigError(f"{key_path}: unknown key (known keys{' in ' + path if path else ''}: {known})")
        default = defaults[key]
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key_path}: expected a mapping, got {_type_name(value)} ({value!r})")
            result[key] = merge_strict(default, value, key_path)
        else:
            result[key] = _check_type(default, value, key_path)
    return result


def parse_override(text: str) -> dict:
    """``"a.b.c=value"`` (value parsed as YAML) to the nested mapping ``{"a": {"b": {"c": value}}}``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else ""
    for part in reversed(key.strip().split(".")):
        if not part:
            raise ConfigError(f"override {text!r}: empty key in the path")
        value = {part: value}
    return value


def deep_update(base: dict, update: Mapping) -> dict:
    """Merge ``update`` into ``base`` (in place, nested mappings merged) and return ``base``."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML file as a mapping (an empty file gives ``{}``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {_type_name(data)}")
    return dict(data)


def load_config(
    source: str | os.PathLike | Mapping | None,
    defaults: Mapping,
    overrides: Sequence[str] | Mapping | None = None,
) -> dict:
    """Read a YAML file (or take a mapping), apply ``overrides`` and merge strictly over ``defaults``."""
    user = {} if source is None else dict(source) if isinstance(source, Mapping) else read_yaml(source)
    user = copy.deepcopy(user)
    if isinstance(overrides, Mapping):
        deep_update(user, overrides)
    else:
        for text in overrides or ():
            deep_update(user, parse_override(text))
    try:
        return merge_strict(defaults, user)
    except ConfigError as error:
        raise attribute_error(error, source, overrides) from None


def _leaf_paths(mapping: Mapping, prefix: str = ""):
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _leaf_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def attribute_error(
    error: ConfigError, source: str | os.PathLike | Mapping | None, overrides: Sequence[str] | Mapping | None
) -> ConfigError:
    """``error`` prefixed with where its value came from: the ``--set KEY=VALUE`` that set the key
    the message names (the last one, as in the merge), else the config file.

    Config errors start with the key path (``model.nope: unknown key ...``); an override matches
    when its key is that path, a parent of it or a child of it.
    """
    if error.attributed:
        return error
    message = str(error)
    path = message.split(":", 1)[0].strip()
    if isinstance(overrides, Mapping):
        layers = [(key, f"override {key}") for key in _leaf_paths(overrides)]
    else:
        layers = [(text.split("=", 1)[0].strip(), f"--set {text}") for text in overrides or ()]
    origin = None
    for key, label in layers:
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            origin = label
    if origin is None and isinstance(source, (str, os.PathLike)):
        origin = str(source)
    if origin is None:
        return error  # a mapping given in code: the caller may know better
    attributed = ConfigError(f"{origin}: {message}")
    attributed.attributed = True
    return attributed


def get_path(config: Mapping, key_path: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``."""
    value: Any = config
    for part in key_path.split("."):
        value = value[part]
    return value
