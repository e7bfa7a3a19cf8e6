"""The structure the project keeps (issue 27): the toolkit runs without ROS, the top level of
superpoint_training holds only commands, and no function grows past 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("superpoint_training", "superpoint_ros")
MAX_FUNCTION_LINES = 80


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_toolkit_imports_nothing_from_ros():
    offending = []
    for path in modules("superpoint_training"):
        for name in imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            root = name.split(".")[0]
            if root in ("superpoint_ros", "rclpy", "rosbags") or name.endswith("_msgs") or ".msg" in name:
                offending.append(f"{path.relative_to(ROOT)}: {name}")
    # rosbags is the bag tool's (superpoint_ros), never the toolkit's
    assert not offending, "\n".join(offending)


def test_top_level_of_the_toolkit_holds_only_commands():
    for path in sorted((ROOT / "superpoint_training").glob("*.py")):
        if path.name == "__init__.py":
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in functions and '__name__ == "__main__"' in source, (
            f"{path.name} is not a command (python -m superpoint_training.{path.stem}): move it where its concept lives"
        )


def test_no_function_over_80_lines():
    long = []
    for package in PACKAGES:
        for path in modules(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "split these functions:\n" + "\n".join(long)
