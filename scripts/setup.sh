#!/usr/bin/env bash
# One-time set-up on a fresh Debian 12/13 machine with Python 3.11 (idempotent; quick when done):
# a venv in ~/.cache/superpoint_ros/venv-py311 ($SUPERPOINT_VENV) with the locked set of requirements/lock.txt
# (torch CPU build, ROS 2 Jazzy rclpy and build wheels from PyPI, every dependency at an exact version),
# then a colcon build of this package (custom messages + both Python packages) into build_ros/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Several test runs may start at once (developers, helpers): one set-up at a time.
mkdir -p build_ros
exec 9>build_ros/.setup.lock
flock 9
# The venv lives outside the source tree: CMake refuses include dirs inside the source folder.
VENV="${SUPERPOINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/superpoint_ros/venv-py311}"
PY=${PYTHON:-python3.11}
stamp="$VENV/.superpoint_setup_done"
reqs_hash=$(cat requirements/*.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqs_hash" ]; then
  echo "[setup] creating venv at $VENV with $PY"
  "$PY" -m venv "$VENV"
  # Exactly the locked set (requirements/lock.txt, every distribution at the version of a green run; the
  # ranges it was resolved from are requirements/{base,ros-runtime,ros-build}.txt, refreshed by scripts/lock.sh).
  "$VENV/bin/pip" install -q "$(grep -E '^pip==' requirements/lock.txt)"
  "$VENV/bin/pip" install -q --no-deps -r requirements/lock.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
  "$VENV/bin/pip" check
  # The build wheels' CMake exports hard-code the interpreter they were built with
  # (/opt/python/cp311-cp311/...); point them at this venv's include dirs.
  py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  grep -rlE '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/[a-z_]*/include#$np_inc#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
  done
  echo "$reqs_hash" > "$stamp"
fi
# pip install of our own Python packages (editable) for use without ROS, then the colcon build.
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
if [ ! -f build_ros/.built ] || [ -n "$(find msg CMakeLists.txt package.xml scripts superpoint_ros superpoint_training launch config -newer build_ros/.built 2>/dev/null | head -1)" ]; then
  echo "[setup] colcon build"
  rm -f build_ros/.built
  mkdir -p build_ros
  # the installed copies of our Python packages go first: a moved or deleted module must not linger there
  rm -rf build_ros/install/superpoint_ros/lib/python3*/site-packages/{superpoint_training,superpoint_ros}
  ( source "$VENV/bin/activate"
    cd build_ros
    AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV" \
      colcon --log-base log build --base-paths "$ROOT" --build-base build --install-base install \
      --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DBUILD_TESTING=OFF >colcon.log 2>&1 \
      || { tail -50 colcon.log; exit 1; } )
  touch build_ros/.built
fi
# Test-only tf2_msgs/TFMessage (no PyPI wheel; built from its definition in test/ros_test_msgs) for the tracker's
# TF tests; never where a real tf2_msgs is importable, so it cannot shadow a ROS install's.
if [ ! -f build_ros/install/tf2_msgs/share/tf2_msgs/package.xml ] && ! "$VENV/bin/python" -c "import tf2_msgs" 2>/dev/null; then
  echo "[setup] colcon build of the test-only tf2_msgs"
  ( source "$VENV/bin/activate"
    cd build_ros
    AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV" \
      colcon --log-base log build --base-paths "$ROOT/test/ros_test_msgs/tf2_msgs" --build-base build \
      --install-base install --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DBUILD_TESTING=OFF \
      >colcon_test_msgs.log 2>&1 || { tail -50 colcon_test_msgs.log; exit 1; } )
fi
echo "[setup] ready: venv $VENV, ROS package in build_ros/install"
