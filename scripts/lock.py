"""The lock file: exact versions of every distribution pip installed in a venv.

    python scripts/lock.py --write requirements/lock.txt   # from the running interpreter's venv
    python scripts/lock.py --check requirements/lock.txt   # exit 1 and list what differs

Only distributions installed by pip (a ``.dist-info`` folder) are locked: the ROS wheels also carry
``*.egg-info`` records of the ROS packages inside them (``rclpy``, ``sensor_msgs`` ...), which no index
serves and which come and go with their wheel. Editable installs (this project) are left out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

HEADER = """\
# Every distribution scripts/setup.sh installs, at the exact version of a green run.
# Refresh: `bash scripts/lock.sh` (resolves requirements/{base,ros-runtime,ros-build}.txt in a fresh
# python3.11 venv and writes this file), then `bash scripts/test.sh`; commit it only when that is green.
# test/test_lock.py compares the set-up venv with this file.
# torch==2.13.0+cpu is the CPU build from the machines' local wheel (see scripts/lock.sh).
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """name -> version of every pip-installed, non-editable distribution of this interpreter."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        path = getattr(dist, "_path", None)
        if path is None or not str(path).endswith(".dist-info"):
            continue  # egg-info records inside the ROS wheels
        if dist.read_text("direct_url.json") and '"editable": true' in dist.read_text("direct_url.json"):
            continue
        found[canonical(dist.metadata["Name"])] = dist.version
    return found


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    return pins


def differences(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per distribution whose installed version is not the locked one."""
    lines = []
    for name in sorted(set(lock) | set(have)):
        if lock.get(name) != have.get(name):
            lines.append(f"{name}: installed {have.get(name, 'nothing')}, lock {lock.get(name, 'nothing')}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="LOCK")
    mode.add_argument("--check", type=Path, metavar="LOCK")
    args = parser.parse_args(argv)
    if args.write:
        pins = "".join(f"{name}=={version}\n" for name, version in sorted(installed().items()))
        args.write.write_text(HEADER + pins, encoding="utf-8")
        print(f"wrote {args.write} ({pins.count(chr(10))} distributions)")
        return 0
    lines = differences(read_lock(args.check), installed())
    for line in lines:
        print(line)
    if lines:
        print(f"{len(lines)} distribution(s) differ from {args.check}: run scripts/setup.sh (or refresh the lock "
              "with scripts/lock.sh)", file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
