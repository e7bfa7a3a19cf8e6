"""pip install . : the Python packages without ROS (training, evaluation, bag extraction).

The ROS 2 build (messages, node executables, launch files) is the colcon build of CMakeLists.txt.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildPyWithMessages(build_py):
    """Copy msg/*.msg into superpoint_ros/msg_definitions/ so that rosbags can register the types
    without a ROS build (superpoint_ros.message_types reads them there; colcon installs the same)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "superpoint_ros" / "msg_definitions"
        target.mkdir(parents=True, exist_ok=True)
        for definition in sorted((ROOT / "msg").glob("*.msg")):
            shutil.copy2(definition, target / definition.name)

setup(
    name="superpoint_ros",
    version="0.1.0",
    description="SuperPoint keypoints and descriptors for ROS 2, with training and HPatches evaluation",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["superpoint_training", "superpoint_training.*", "superpoint_ros"]),
    package_data={
        "superpoint_training": ["pretrained/*.pth", "pretrained/*.md"],
        "superpoint_ros": ["msg_definitions/*.msg"],
    },
    # Ranges for `pip install .`, each bounded above at the next major release the tests have not run
    # against (for 0.x packages, the next minor). The set-up for development and CI installs the exact
    # versions of requirements/lock.txt instead; test_install_without_ros runs the geometry, tracking,
    # metrics and extraction tests on the newest releases these ranges allow.
    install_requires=[
        "torch>=2.1,<3",
        "numpy>=1.24,<3",
        "opencv-python-headless>=4.8,<6",  # 4.x and 5.x both tested
        "pyyaml>=6,<7",
        "tqdm>=4.60,<5",
    ],
    extras_require={
        "training": ["tensorboard>=2.14,<3", "scikit-image>=0.21,<0.27", "matplotlib>=3.7,<4", "h5py>=3.9,<4"],
        "bags": ["rosbags>=0.10,<0.12", "h5py>=3.9,<4"],
        "export": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2", "onnxscript>=0.3,<0.8"],
        # faster CPU inference backends (Extractor(backend="auto"|"onnxruntime"|"openvino"))
        "cpu": ["onnx>=1.16,<2", "onnxscript>=0.3,<0.8", "onnxruntime>=1.18,<2", "openvino>=2024.4,<2027"],
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "scikit-image>=0.21,<0.27", "cyclonedds==11.0.1",
                 "ruff>=0.6,<0.18"],
    },
    cmdclass={"build_py": BuildPyWithMessages},
    entry_points={
        "console_scripts": [
            "superpoint-extract=superpoint_training.extract:main",
            "superpoint-match-demo=superpoint_training.match_features_demo:main",
            "superpoint-weights=superpoint_training.weights:main",
            "superpoint-export-onnx=superpoint_training.export_onnx:main",
            "superpoint-train=superpoint_training.train:main",
            "superpoint-extract-bag=superpoint_ros.extract_bag:main",
        ]
    },
)
