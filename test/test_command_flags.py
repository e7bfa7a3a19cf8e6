"""One flag spelling: hyphens, with the old underscore spellings still accepted and left out of --help;
every command builds its parser with common.cli.command_parser."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from superpoint_training.common.cli import command_parser, flag

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "superpoint_training").rglob("*.py")) + sorted((ROOT / "superpoint_ros").rglob("*.py"))


def test_both_spellings_parse_and_help_shows_the_hyphenated_one(capsys):
    parser = command_parser("superpoint_training.example", "An example.", ["python -m superpoint_training.example"])
    parser.add_argument(*flag("no-progress"), action="store_true")
    parser.add_argument(*flag("batch_size"), type=int, default=1)
    assert parser.parse_args(["--no_progress", "--batch_size", "3"]) == parser.parse_args(["--no-progress",
                                                                                            "--batch-size", "3"])
    assert parser.parse_args(["--batch_size", "3"]).batch_size == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "usage: python -m superpoint_training.example" in out and "--no-progress" in out
    assert "--no_progress" not in out and "--batch_size" not in out
    assert out.rstrip().endswith("examples:\n  python -m superpoint_training.example")


@pytest.mark.parametrize("argv", [["--no_progress"], ["--no-progress"]])
def test_train_takes_both_spellings(argv, capsys):
    from superpoint_training.train import main

    assert main(["missing.yaml", "x", *argv]) == 2  # parsed; the config is what is wrong
    assert "missing.yaml" in capsys.readouterr().err


def _options(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]


def test_no_underscore_flag_and_one_parser_set_up():
    underscored, hand_made = [], []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr == "add_argument":
                underscored += [f"{path.name}: {o}" for o in _options(node) if "_" in o]
            command = path.parent.name in ("superpoint_training", "superpoint_ros")  # the top level: commands
            if node.func.attr == "ArgumentParser" and command:
                hand_made.append(path.name)
    assert not underscored, underscored
    assert not hand_made, hand_made
