#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), then pytest with the colcon-built package sourced so that
# the node tests run against the built messages and executables over real rclpy / Fast DDS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${SUPERPOINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/superpoint_ros/venv-py311}"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export SUPERPOINT_SETUP_VENV="$VENV"  # test/test_lock.py compares this venv with requirements/lock.txt
# colcon's setup scripts read unset variables
set +u
# shellcheck disable=SC1091
source build_ros/install/setup.sh
set -u
# -P: keep the source tree off sys.path so the installed package (with its generated msg/) is imported
exec python -P -m pytest "$@"
