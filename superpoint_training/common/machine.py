"""The machine a figure was measured on: CPU features read from the operating system (never
assumed) and the versions of the libraries that compute it.

Native bf16 (``avx512_bf16`` or AMX) makes bf16 convolutions several times faster than fp32 on a
CPU; without it PyTorch emulates bf16 and gains nothing. ``machine_record`` is what evaluation
reports, VO summaries, benchmarks and weights files store beside every figure; ``describe_machine``
is its one-line form.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path

NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where that cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


# distribution names whose versions decide a figure: the network, the geometry, the arrays, the backends
LIBRARIES = {
    "torch": "torch",
    "opencv": "opencv-python-headless",
    "numpy": "numpy",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries in ``LIBRARIES`` (None where one is not installed), read
    from the package metadata so that nothing heavy is imported."""
    versions: dict[str, str | None] = {}
    for name, distribution in LIBRARIES.items():
        try:
            versions[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["opencv"] is None:  # another OpenCV wheel (opencv-python, opencv-contrib-python ...)
        try:
            import cv2

            versions["opencv"] = cv2.__version__
        except ImportError:
            pass
    return versions


def machine_record(device: str = "cpu") -> dict:
    """Everything a report needs to say how its figures were made: CPU model, cores, the flags that
    matter, library versions, and the GPU's name when ``device`` is a CUDA device."""
    record = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": [flag for flag in NOTABLE_FLAGS if flag in cpu_flags()],
        "native_bf16": has_native_bf16(),
        "versions": library_versions(),
        "python": platform.python_version(),
    }
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            record["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return record


def format_machine(record: dict) -> str:
    """A stored ``machine_record`` in one line (reports written later from a stored record say what
    was measured then, not the machine that writes them)."""
    flags = " ".join(record.get("cpu_flags", [])) or "none of " + "/".join(NOTABLE_FLAGS)
    versions = ", ".join(f"{name} {version}" for name, version in record.get("versions", {}).items() if version)
    gpu = f", GPU {record['gpu']}" if "gpu" in record else ""
    return f"{record.get('cpu', 'unknown CPU')}, {record.get('cores')} cores, flags: {flags}{gpu}; {versions}"


def describe_machine(device: str = "cpu") -> str:
    """``machine_record`` of this machine in one line, for a report's header or a benchmark's output."""
    return format_machine(machine_record(device))
