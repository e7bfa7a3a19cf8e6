"""The install a user without ROS makes, in a clean venv: ``pip install torch==2.13.0``, then
``pip install .``; then every ``python -m`` command the README documents answers ``--help``, and
each runs once on tiny inputs: first with no extra (plots skipped with one line, no traceback),
then the commands that need an extra after ``pip install .[training,bags,export]``.

That venv holds the newest releases that setup.py's ranges allow (the main suite runs on the exact
versions of requirements/lock.txt): the unit tests of geometry, tracking, evaluation metrics and
extraction run there too, so that a new release inside the ranges that breaks us fails CI, with the
packages whose versions differ from the lock named.

About a minute of installing (pip reads the local wheel cache and PyPI; ``--no-compile`` only skips
writing .pyc files) and two of commands on a 2-core CPU. Marked ``slow``; CI runs it (scripts/test.sh
selects every test). SUPERPOINT_SKIP_INSTALL_TEST=1 skips it on a machine without a package index.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the README's pin (requirements/base.txt): the CPU build
LOCK = ROOT / "requirements" / "lock.txt"
# the unit tests that must hold on the newest allowed releases (geometry, tracking, metrics, extraction)
NEWEST_RELEASE_TESTS = ("test_degenerate_geometry.py", "test_tracker_logic.py", "test_eval_metrics.py",
                        "test_extractor.py")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("SUPERPOINT_SKIP_INSTALL_TEST") == "1", reason="SUPERPOINT_SKIP_INSTALL_TEST=1"),
]


def documented_commands() -> list[str]:
    """The ``python -m`` commands of the README and of every page of docs/."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    return sorted(set(re.findall(r"python -m\s+(superpoint_(?:training|ros)[\w.]*)", text)))


def copy_source(destination: Path) -> Path:
    """The files of a clone (tracked, and new files git does not ignore), without build outputs."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode().split("\0")  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        listing = None
    if listing is None:
        shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(".git", "build_ros", "build", "*.egg-info"))
        return destination
    for name in filter(None, listing):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def clean_env(venv: Path, home: Path) -> dict[str, str]:
    """A user's shell with the venv active: no PYTHONPATH, no ROS set-up, no project variables."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME", "SSL_CERT_FILE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_") or k.lower().endswith("_proxy")}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    env["VIRTUAL_ENV"] = str(venv)
    env["SUPERPOINT_EXPER_DIR"] = str(home / "experiments")
    env["SUPERPOINT_DATA_DIR"] = str(home / "data")
    env["MPLBACKEND"] = "Agg"
    return env


class User:
    """Runs commands as the user would, in a work folder outside the source tree."""

    def __init__(self, venv: Path, work: Path):
        self.venv, self.work = venv, work
        self.env = clean_env(venv, work)
        self.seconds: dict[str, float] = {}

    def run(self, *args: str, expect: int = 0, timeout: float = 600) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        result = subprocess.run(
            [str(a) for a in args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        shown = " ".join(str(a) for a in args).replace(f"{self.venv}/bin/", "").replace(str(self.work.parent), "..")
        self.seconds[shown[:110]] = time.perf_counter() - start
        assert result.returncode == expect, (
            f"{' '.join(map(str, args))} -> {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
            f"stderr:\n{result.stderr[-3000:]}"
        )
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        return result

    def python(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(self.venv / "bin" / "python", *args, **kwargs)

    def pip_install(self, *args: str) -> None:
        self.python("-m", "pip", "install", "--quiet", "--no-compile", *args, timeout=900)

    def missing(self, module: str) -> bool:
        code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is not None)"
        return subprocess.run([self.venv / "bin" / "python", "-c", code], env=self.env, cwd=self.work).returncode == 0


def write_inputs(work: Path) -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((240, 320)) * 255).astype(np.uint8), (5, 5), 0)
    photos = work / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"photo{i}.png"), np.roll(texture, 3 * i, axis=1)[:120, :160])
    frames = work / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.roll(texture, 2 * i, axis=1)[:96, :128])
    (work / "camera.txt").write_text("100 100 64 48\n")


BAG_SCRIPT = """
import sys
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
store = get_typestore(Stores.ROS2_JAZZY)
Image, Header, Time = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
rng = np.random.default_rng(0)
with Writer(sys.argv[1], version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
    topic = writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=store)
    for i in range(2):
        data = (rng.random((48, 64)) * 255).astype(np.uint8)
        message = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="camera"), height=48, width=64,
                        encoding="mono8", is_bigendian=0, step=64, data=data.ravel())
        writer.write(topic, (i + 1) * 10**9, store.serialize_cdr(message, Image.__msgtype__))
"""


def test_pip_install_without_ros_then_every_documented_command(tmp_path):
    commands = documented_commands()
    assert len(commands) >= 10, commands
    source = copy_source(tmp_path / "superpoint_ros")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    user = User(venv, work)
    write_inputs(work)

    # the two install commands of the README, nothing else
    user.pip_install(TORCH)
    user.pip_install(str(source))
    for optional in ("matplotlib", "skimage", "h5py", "rosbags", "tensorboard", "onnx", "rclpy"):
        assert user.missing(optional), f"{optional} came with a plain pip install ."

    for module in commands:
        result = user.python("-m", module, "--help")
        assert "usage:" in result.stdout, module
        assert "found in sys.modules" not in result.stderr, module  # runpy's warning
    assert "[present]" in user.run("superpoint-weights", "list").stdout

    # tiny runs with no extra
    user.python("-m", "superpoint_training.weights", "check", source / "superpoint_training/pretrained/superpoint_ros.pth")
    user.python("-m", "superpoint_training.extract", "photos", "--output", "features.npz", "--device", "cpu", "-q")
    assert (work / "features.npz").is_file()
    user.python("-m", "superpoint_training.match_features_demo", "photos/photo0.png", "photos/photo1.png",
                "--device", "cpu", "--output", "demo.png")  # fmt: skip
    assert (work / "demo.png").is_file()
    user.python("-m", "superpoint_training.synthetic_hpatches", "hpatches", "--photos", "photos",
                "--sequences", "2", "--size", "96x128", "--images", "3")  # fmt: skip
    evaluation = user.python("-m", "superpoint_training.evaluate", "--dataset", "hpatches", "--output", "report",
                             "--methods", "superpoint,orb", "--resize", "none", "--device", "cpu",
                             "--workers", "1", "--threads", "1")  # fmt: skip
    assert (work / "report" / "report.md").is_file() and (work / "report" / "report.json").is_file()
    assert evaluation.stderr.count("matplotlib is not installed") == 1
    vo = user.python("-m", "superpoint_ros.vo", "frames", "--camera", "camera.txt", "--output", "vo",
                     "--gaps", "1", "--device", "cpu", "--quiet")  # fmt: skip
    assert (work / "vo" / "summary.md").is_file() and vo.stderr.count("matplotlib is not installed") == 1
    user.python("-m", "superpoint_training.synthetic_shapes", "sheet.png", "--primitives", "draw_star",
                "--per-primitive", "1")  # fmt: skip
    user.python("-m", "superpoint_training.build_synthetic_shapes", "--root", "shapes", "--primitives", "draw_star",
                "--split-sizes", "1", "1", "1", "--workers", "1", "--no-progress")  # fmt: skip
    user.python("-m", "superpoint_training.write_validation_patches", "photos", "pairs", "--count", "2", "--resize", "48", "64")
    user.python("-m", "superpoint_training.export_detections", source / "config/magic-point_coco_export.yaml", "none",
                "--weights", "magicpoint_shapes", "--images", work / "photos", "--export_name", "labels",
                "--batch_size", "1", "--device", "cpu", "--no_progress", "--set", "data.resize=[48,64]",
                "--set", "data.num_workers=0", "--set", "model.homography_adaptation.num=2")  # fmt: skip
    assert len(list((work / "experiments" / "outputs" / "labels").glob("*.npz"))) == 2

    # without their extra, the commands that need one say so in one line
    no_extra = user.python("-m", "superpoint_training.train", source / "config/magic-point_shapes_ci.yaml", "ci",
                           "--no_progress", expect=2)  # fmt: skip
    assert "[training]" in no_extra.stderr and len(no_extra.stderr.strip().splitlines()) == 1
    no_h5py = user.python("-m", "superpoint_training.extract", "photos", "--output", "features.h5", "--device", "cpu",
                          "-q", expect=2)  # fmt: skip
    assert "h5py" in no_h5py.stderr and not (work / "features.h5").exists()

    # the commands that need an extra, with it
    user.pip_install(f"{source}[training,bags,export]")
    user.python("-m", "superpoint_training.train", source / "config/magic-point_shapes_ci.yaml", "ci", "--no_progress")
    assert (work / "experiments" / "ci" / "weights.pth").is_file()
    user.python("-m", "superpoint_training.extract", "photos", "--output", "features.h5", "--device", "cpu", "-q")
    user.python("-m", "superpoint_training.evaluate", "--dataset", "hpatches", "--output", "report_plots",
                "--methods", "orb", "--resize", "none", "--workers", "1")  # fmt: skip
    assert list((work / "report_plots" / "plots").glob("*.png"))
    user.python("-m", "superpoint_training.write_skimage_photos", "skimage_photos")
    user.python("-m", "superpoint_training.export_onnx", "--output", "sp.onnx", "--height", "48", "--width", "64",
                "--max_keypoints", "16")  # fmt: skip
    assert (work / "sp.onnx").is_file()
    user.python("-c", BAG_SCRIPT, "bag")
    user.python("-m", "superpoint_ros.extract_bag", "bag", "--output", "bag_features", "--device", "cpu")
    assert (work / "bag_features").is_dir()
    unit_tests_on_the_newest_allowed_releases(user, source)
    print("\n".join(f"{seconds:6.1f} s  {command}" for command, seconds in user.seconds.items()))


def unit_tests_on_the_newest_allowed_releases(user: User, source: Path) -> None:
    """pytest (the lock's versions) in the user's venv, then the geometry, tracking, metrics and
    extraction tests of the source copy against the installed package (``-P``: not the source tree)."""
    pins = [line for line in LOCK.read_text().splitlines() if line.startswith(("pytest==", "pytest-timeout=="))]
    user.pip_install(*pins)
    tests = [str(source / "test" / name) for name in NEWEST_RELEASE_TESTS if (source / "test" / name).is_file()]
    result = subprocess.run(
        [str(user.venv / "bin" / "python"), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=source, env=user.env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if result.returncode != 0:
        check = subprocess.run([str(user.venv / "bin" / "python"), str(source / "scripts" / "lock.py"), "--check",
                                str(LOCK)], env=user.env, capture_output=True, text=True)  # fmt: skip
        newer = [line for line in check.stdout.splitlines() if "installed nothing" not in line]
        pytest.fail("the unit tests fail on the newest releases that setup.py allows; versions that differ from "
                    "the lock:\n  " + "\n  ".join(newer) + f"\n\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
