"""The set-up is locked: the venv scripts/setup.sh made holds exactly requirements/lock.txt, and the
ranges that `pip install .` allows are bounded above and contain the locked (tested) versions."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"


def locked() -> dict[str, Version]:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from lock import read_lock
    finally:
        sys.path.pop(0)
    return {name: Version(version) for name, version in read_lock(LOCK).items()}


def setup_requirements() -> list[Requirement]:
    """install_requires and every extra of setup.py, read from its source (no build)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    keywords = {k.arg: k.value for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords}
    texts = list(ast.literal_eval(keywords["install_requires"]))
    for extra in ast.literal_eval(keywords["extras_require"]).values():
        texts += extra
    return [Requirement(text) for text in texts]


def test_setup_venv_matches_the_lock():
    venv = os.environ.get("SUPERPOINT_SETUP_VENV")
    if not venv or Path(venv).resolve() != Path(sys.prefix).resolve():
        pytest.skip("not running in the venv of scripts/setup.sh (scripts/test.sh runs it there)")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock.py"), "--check", str(LOCK)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_lock_pins_the_cpu_build_of_torch_and_everything_exactly():
    pins = locked()
    assert str(pins["torch"]).endswith("+cpu"), pins["torch"]
    assert len(pins) > 150  # the ROS wheels, the build wheels and every transitive dependency
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line and not any(c in line for c in "<>~*"), line


def test_pip_install_ranges_are_bounded_and_contain_the_locked_versions():
    pins = locked()
    for requirement in setup_requirements():
        if not any(spec.operator in ("<", "==", "<=", "~=") for spec in requirement.specifier):
            pytest.fail(f"{requirement} has no upper bound")
        version = pins.get(requirement.name.lower())
        assert version is not None, f"{requirement.name} is not in the lock"
        public = Version(version.public)  # torch 2.13.0+cpu is 2.13.0
        assert requirement.specifier.contains(public, prereleases=True), f"lock {version} outside {requirement}"
