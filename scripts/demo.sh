#!/usr/bin/env bash
# The main job on the default that ships with the repo: set-up (idempotent), then the matching demo
# (SuperPoint vs SIFT on a scikit-image photo and a known warp of it). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${SUPERPOINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/superpoint_ros/venv-py311}"
exec "$VENV/bin/python" -m superpoint_training.match_features_demo --output outputs/match_demo.png "$@"
