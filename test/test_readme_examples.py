"""The README as a new user reads it: the environment first, a Python example that runs as
written, and only commands that exist; the same for the pages of docs/ it links to."""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
# the README and every page of docs/: the commands of any of them must exist
DOCUMENTS = "\n".join([README, *(page.read_text(encoding="utf-8") for page in DOC_PAGES)])


def test_activation_comes_before_the_first_python_command():
    activate = README.find("source ~/.cache/superpoint_ros/venv-py311/bin/activate")
    assert activate != -1
    assert activate < README.find("python -m superpoint")
    assert activate < README.find("\n## ")  # before the first section


def test_python_api_example_runs_as_written():
    section = README.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # device="auto" without CUDA says it runs on the CPU
        exec(compile(code, "README.md (Python API)", "exec"), namespace)
    features = namespace["features"]
    assert len(features.keypoints) > 0 and features.descriptors.shape[1] == 256


def test_every_python_module_command_exists():
    modules = sorted(set(re.findall(r"python -m\s+(superpoint_(?:training|ros)[\w.]*)", DOCUMENTS)))
    assert "superpoint_training.synthetic_shapes" in modules
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing


def test_commands_live_at_the_top_and_libraries_have_no_main():
    """Every documented ``python -m superpoint_training.X`` is a top-level command; the subpackages
    (model, data, training, evaluation) are libraries without ``main()``."""
    package = Path(__file__).resolve().parents[1] / "superpoint_training"
    commands = set(re.findall(r"python -m\s+superpoint_training\.([\w.]+)", DOCUMENTS))
    assert all("." not in command for command in commands), commands
    for path in package.glob("*/*.py"):
        assert "\ndef main(" not in path.read_text(encoding="utf-8"), path


def test_readme_is_short_and_its_links_resolve():
    """At most 250 lines; every relative link of the README and of docs/ names a file that exists."""
    assert len(README.splitlines()) <= 250
    assert {page.name for page in DOC_PAGES} >= {"install.md", "node.md", "bags_and_vo.md", "evaluation.md",
                                                  "training.md", "architecture.md"}
    for document in [ROOT / "README.md", *DOC_PAGES]:
        text = document.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (document.parent / target).exists(), f"{document.name}: {target}"
