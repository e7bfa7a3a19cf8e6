#!/usr/bin/env bash
# Refresh requirements/lock.txt: resolve the ranges of requirements/{base,ros-runtime,ros-build}.txt in a
# fresh python3.11 venv (what a new machine would get today), then write its `pip freeze --all`.
# Run it, then `bash scripts/test.sh` (the set-up installs exactly the lock), and commit the lock only if
# the whole suite is green.
#
#   bash scripts/lock.sh            # writes requirements/lock.txt
#
# torch: requirements/base.txt asks for torch==2.13.0, which these machines' pip configuration takes from
# the CPU wheel on disk (find-links); the freeze records it as torch==2.13.0+cpu, and the lock keeps that
# local version label, so that a machine whose pip resolves torch from the public index (where 2.13.0 is the
# multi-GB CUDA build) stops with "no matching distribution" instead of installing another build. On such a
# machine, install the CPU build first from PyTorch's CPU wheel index, then run scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
venv=$(mktemp -d)/venv
"$PY" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade "pip<26"
"$venv/bin/pip" install -q -r requirements/base.txt -r requirements/ros-runtime.txt -r requirements/ros-build.txt \
  2>&1 | { grep -v "is ignored: it is neither" || true; }
"$venv/bin/pip" check
"$venv/bin/python" scripts/lock.py --write requirements/lock.txt
rm -rf "$(dirname "$venv")"
