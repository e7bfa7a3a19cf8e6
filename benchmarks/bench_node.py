"""Benchmark the detector node: image published -> features received, and the node's stages alone.

Modes:

``dds``
    Starts the colcon-built ``detector_node`` as a subprocess and publishes 640x480 bgr8 photos on
    1 and 4 cameras at 30 Hz from this process (rclpy, Fast DDS shared memory, a private domain
    id), stamping each with the publish time; the features' arrival gives the latency (p50, p99)
    and the frames that never got features count as dropped. In the same run, an echo process that
    answers each image with a small message (the image's header, QoS as the features) measures
    the transport's own latency, so that the node's share is visible. Each row also has the output
    rate (all cameras) and the process's resident memory at the end and at its peak; the node
    runs with ``--batch-cameras`` (auto: its warm-up decides) and ``--sync``. Needs the build sourced
    (``source build_ros/install/setup.sh``, as scripts/test.sh does).

``stages``
    No DDS: the node's pipeline (:class:`superpoint_ros.detection_pipeline.DetectionPipeline`) on
    batches of 1 and 4 camera messages: conversion (bgr8 message -> numpy RGB), extraction (one
    Extractor call, upload included, synchronised on CUDA) and message building; p50 / p99 per
    batch. Runs on any machine with torch (a GPU machine needs no ROS).

``int8``
    How often int8 descriptors change the mutual nearest-neighbour matches of float32 ones, on
    real photos against random homographic warps of themselves (meaningful with trained weights).

Examples::

    source build_ros/install/setup.sh
    python benchmarks/bench_node.py dds --duration 10 --weights untrained --device cpu
    python benchmarks/bench_node.py stages --device cuda --precision fp16 --iterations 500
    python benchmarks/bench_node.py dds --cameras 1 --rate 1 --backend torch --precision fp32   # before/after
    python benchmarks/bench_node.py dds --cameras 1 --rate 1 --backend auto --precision auto
    python benchmarks/bench_node.py int8 --weights superpoint_v6_from_tf
    python benchmarks/bench_node.py all --json bench_node.json      # dds + stages, short runs

Output: a Markdown table with machine, date and command on stdout (``--json``: also a file).
This is a benchmark script, not a timed test.
"""

from __future__ import annotations

import argparse
import array
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # appended: a sourced colcon build (with superpoint_ros.msg) comes first
    sys.path.append(str(REPO))

from superpoint_ros.image_conversion import numpy_to_image_fields  # noqa: E402
from superpoint_training.common.machine import describe_machine, machine_record  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos(size: tuple[int, int], count: int) -> list[np.ndarray]:
    """Real RGB photos (scikit-image, CC0) at (H, W); a smooth random texture without scikit-image."""
    height, width = size
    try:
        from skimage import data

        images = [getattr(data, name)() for name in PHOTOS]
        images = [im if im.ndim == 3 else np.repeat(im[..., None], 3, 2) for im in images]
    except ImportError:
        rng = np.random.default_rng(0)
        images = [cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)]
    return [cv2.resize(images[i % len(images)][..., :3], (width, height), interpolation=cv2.INTER_AREA)
            for i in range(count)]


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    array_ = np.asarray(values) * 1e3
    return float(np.percentile(array_, 50)), float(np.percentile(array_, 99))


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.node()}: {describe_machine(_gpu_or_cpu())}; load average {load:.1f}"


def _gpu_or_cpu() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------
# dds mode
# ------------------------------------------------------------------------------------------------
LOOPBACK_PROFILE = REPO / "config" / "fastdds_loopback.xml"


def set_transport(transport: str) -> None:
    """Configure Fast DDS for this process and its children, loopback only either way.

    ``shm``: shared memory only (Fast DDS's default segment loses many best-effort 640x480 frames);
    ``udp``: UDP on 127.0.0.1 with 4 MB socket buffers (config/fastdds_loopback.xml).
    """
    # with rmw_fastrtps (Jazzy), ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST opens UDP sockets on 0.0.0.0 and the
    # external interface whatever the transports: leave it unset
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    if transport == "shm":
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "SHM"
        os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    else:
        os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(LOOPBACK_PROFILE)


def _ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _node_executable() -> Path:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) + [
        str(REPO / "build_ros" / "install" / "superpoint_ros")
    ]:
        candidate = Path(prefix) / "lib" / "superpoint_ros" / "detector_node"
        if prefix and candidate.exists():
            return candidate
    sys.exit("detector_node not found: build with scripts/setup.sh and source build_ros/install/setup.sh")


def echo_main(cameras: int) -> None:
    """The transport baseline: answer each image with its header on <cam>/features."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node("bench_echo")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    for i in range(cameras):
        publisher = node.create_publisher(Header, f"cam{i}/features", qos)
        node.create_subscription(Image, f"cam{i}/image", lambda msg, p=publisher: p.publish(msg.header),
                                 qos_profile_sensor_data)
    print("echo ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _run_dds(kind: str, cameras: int, args: argparse.Namespace, domain_id: int, images: list) -> dict:
    """Publish at args.rate on ``cameras`` cameras to the node or the echo; collect latencies."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    env = _ros_env(domain_id)
    names = [f"cam{i}" for i in range(cameras)]
    if kind == "node":
        from superpoint_ros.msg import Features as reply_type

        params = Path(tempfile.mkdtemp()) / "bench.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
            "weights": args.weights, "device": args.device, "precision": args.precision, "backend": args.backend,
            "cameras": names, "batch_cameras": args.batch_cameras, "sync": args.sync,
            "max_keypoints": args.max_keypoints, "frame_queue": 1, "diagnostics_period": 1.0}}}))
        command = [str(_node_executable()), "--ros-args", "--params-file", str(params)]
        ready = f"camera {cameras - 1}:"
    else:
        reply_type = Header
        command = [sys.executable, __file__, "_echo", "--cameras", str(cameras)]
        ready = "echo ready"
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"bench_{kind}_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    replies: dict[tuple[int, int], float] = {}  # (camera, stamp) -> latency
    recording = threading.Event()

    def on_reply(camera: int, msg) -> None:
        now = time.time_ns()
        header = msg.header if hasattr(msg, "header") else msg
        sent = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if recording.is_set():
            replies[(camera, sent)] = (now - sent) * 1e-9

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    publishers = []
    for i, name in enumerate(names):
        node.create_subscription(reply_type, f"{name}/features", lambda m, i=i: on_reply(i, m), qos)
        publishers.append(node.create_publisher(Image, f"{name}/image", qos_profile_sensor_data))
    spinner = threading.Thread(target=lambda: _spin(executor, context), daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 180
        while ready not in Path(log.name).read_text() or any(p.get_subscription_count() == 0 for p in publishers):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start:\n{Path(log.name).read_text()}")
            time.sleep(0.1)
        fields = [numpy_to_image_fields(images[i % len(images)], "bgr8") for i in range(cameras)]
        messages = []
        for f in fields:
            data = array.array("B")
            data.frombytes(f["data"])
            messages.append(Image(header=Header(frame_id="bench"), data=data,
                                  **{k: v for k, v in f.items() if k != "data"}))
        sent: list[tuple[int, int]] = []
        period = 1.0 / args.rate
        start = time.monotonic()
        total = args.warmup + args.duration
        tick = 0
        while True:
            target = start + tick * period
            if target - start > total:
                break
            time.sleep(max(0.0, target - time.monotonic()))
            if not recording.is_set() and time.monotonic() - start >= args.warmup:
                recording.set()
            for camera, (publisher, message) in enumerate(zip(publishers, messages, strict=True)):
                stamp = time.time_ns()
                message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                publisher.publish(message)
                if recording.is_set():
                    sent.append((camera, stamp))
            tick += 1
        time.sleep(args.tail)  # let the last replies arrive
        recording.clear()
        memory = _memory_mib(process.pid)
    finally:
        process.send_signal(2)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        executor.shutdown(timeout_sec=1)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        os.unlink(log.name)
    latencies = [replies[key] for key in sent if key in replies]  # frames sent while measuring
    received = len(latencies)
    p50, p99 = percentiles(latencies)
    row = {"path": "node" if kind == "node" else "transport only (echo)", "cameras": cameras,
           "rate_hz": args.rate, "size": f"{args.size[1]}x{args.size[0]}", "sent": len(sent),
           "received": received, "dropped": len(sent) - received,
           "out_hz_total": received / args.duration, "p50_ms": p50, "p99_ms": p99, **memory}
    if kind == "node":
        row.update(batch_cameras=args.batch_cameras, sync=args.sync)
    return row


def _memory_mib(pid: int) -> dict[str, float]:
    """Resident memory of ``pid`` now and at its peak (Linux /proc; empty elsewhere)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    values = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mib": values.get("VmRSS", float("nan")), "peak_rss_mib": values.get("VmHWM", float("nan"))}


def _spin(executor, context) -> None:
    while context.ok():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - shutting down
            return


def run_dds(args: argparse.Namespace) -> list[dict]:
    domain_id = 100 + os.getpid() % 100 if args.domain_id is None else args.domain_id
    images = photos(args.size, 4)
    rows = []
    set_transport(args.transport)
    for cameras in args.cameras:
        for kind in ("echo", "node"):
            row = {"transport": args.transport, **_run_dds(kind, cameras, args, domain_id, images)}
            print(f"  {row}", file=sys.stderr)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# stages mode
# ------------------------------------------------------------------------------------------------
def run_stages(args: argparse.Namespace) -> list[dict]:
    import torch

    from superpoint_ros.detection_pipeline import DetectionPipeline, Frame
    from superpoint_training.model.extractor import Extractor

    try:
        from superpoint_ros.msg import Features as msg_cls  # the rclpy class, when built

        label = "rclpy Features"
    except ImportError:
        msg_cls, label = SimpleNamespace, "plain object (rclpy-style array.array fields)"
    extractor = Extractor(args.weights, args.device, precision=args.precision, backend=args.backend,
                          max_keypoints=args.max_keypoints, warmup=False)
    pipeline = DetectionPipeline(extractor, msg_cls, args.encoding, synchronize=True)
    images = photos(args.size, 4)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="bench")
    rows = []
    for cameras in args.cameras:
        messages = []
        for i in range(cameras):
            fields = numpy_to_image_fields(images[i % len(images)], "bgr8")
            data = array.array("B")
            data.frombytes(fields.pop("data"))
            messages.append(SimpleNamespace(header=header, data=data, **fields))
        frames = [Frame(i, m) for i, m in enumerate(messages)]
        for _ in range(args.stage_warmup):
            pipeline.process(frames)
        times = []
        for _ in range(args.iterations):
            results, stage = pipeline.process(frames)
            assert all(r.message is not None for r in results)
            times.append(stage)
        row = {"cameras": cameras, "device": str(extractor.device), "backend": extractor.backend,
               "precision": extractor.precision,
               "size": f"{args.size[1]}x{args.size[0]}", "message class": label,
               "keypoints": len(results[0].message.scores), "iterations": args.iterations}
        for name in ("convert", "extract", "build", "total"):
            p50, p99 = percentiles([getattr(t, name) for t in times])
            row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = p50, p99
        print(f"  {row}", file=sys.stderr)
        rows.append(row)
        if extractor.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------
# int8 mode
# ------------------------------------------------------------------------------------------------
def run_int8(args: argparse.Namespace) -> list[dict]:
    import torch
    from tqdm import tqdm

    from superpoint_ros.features_message import features_from_message, features_to_message
    from superpoint_training.data.geometry import random_homography, warp_image, warp_points
    from superpoint_training.model.extractor import Extractor
    from superpoint_training.model.matching import match_descriptors

    extractor = Extractor(args.weights, args.device, max_keypoints=args.max_keypoints, warmup=False)
    rng = np.random.default_rng(0)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="")
    totals = {"float32": [0, 0], "int8": [0, 0]}  # matches, correct (<= 3 px)
    changed = 0
    pairs = [(image, random_homography(args.size, rng)) for image in photos(args.size, 4) for _ in range(args.pairs)]
    for image, homography in tqdm(pairs, desc="int8 matching", file=sys.stderr):
        warped = warp_image(image, homography)
        features = [extractor(image), extractor(warped)]
        matches = {}
        for encoding in ("float32", "int8"):
            decoded = [features_from_message(features_to_message(SimpleNamespace, header, f, encoding=encoding))
                       for f in features]
            found, _ = match_descriptors(torch.as_tensor(decoded[0].descriptors),
                                         torch.as_tensor(decoded[1].descriptors))
            found = np.asarray(found).reshape(-1, 2)
            projected = warp_points(decoded[0].keypoints[found[:, 0]], homography)
            error = np.linalg.norm(np.asarray(projected) - decoded[1].keypoints[found[:, 1]], axis=1)
            totals[encoding][0] += len(found)
            totals[encoding][1] += int((error <= 3).sum())
            matches[encoding] = {tuple(m) for m in found.tolist()}
        changed += len(matches["float32"] - matches["int8"])
    return [{"weights": extractor.weights_description, "pairs": len(pairs), "size": f"{args.size[1]}x{args.size[0]}",
             "float32 matches": totals["float32"][0], "int8 matches": totals["int8"][0],
             "float32 matches lost with int8": changed,
             "changed fraction": changed / max(1, totals["float32"][0]),
             "correct float32": totals["float32"][1], "correct int8": totals["int8"][1]}]


# ------------------------------------------------------------------------------------------------
def markdown(title: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k])
                                       for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["dds", "stages", "int8", "all", "_echo"])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4], help="camera counts (default: 1 4)")
    parser.add_argument("--size", type=_size, default=(480, 640), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second per camera (dds)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per configuration (dds)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds published before measuring (dds)")
    parser.add_argument("--tail", type=float, default=2.0,
                        help="seconds to wait for late features after publishing stops (dds; CPU: several)")
    parser.add_argument("--iterations", type=int, default=50, help="batches timed (stages)")
    parser.add_argument("--stage-warmup", type=int, default=5, help="batches before timing (stages)")
    parser.add_argument("--pairs", type=int, default=3, help="warps per photo (int8)")
    parser.add_argument("--weights", default="default", help="weights name or file (default: default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="network precision, as the node's parameter (default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                        help="network backend, as the node's parameter (default: %(default)s); "
                        "--backend torch --precision fp32 is the node before backends existed")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    parser.add_argument("--batch-cameras", default="auto", choices=["auto", "always", "never"],
                        help="the node's batch_cameras (dds; auto: batches on a GPU only)")
    parser.add_argument("--sync", default="none", choices=["none", "exact", "approximate"],
                        help="the node's sync (dds; all cameras are stamped alike, so exact matches)")
    parser.add_argument("--encoding", default="float32", choices=["float32", "int8"], help="descriptor encoding")
    parser.add_argument("--transport", choices=["udp", "shm"], default="udp",
                        help="Fast DDS transport, loopback only: udp (127.0.0.1, 4 MB buffers) or shm (dds)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: 100 + pid %% 100)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.mode == "_echo":
        echo_main(args.cameras[0])
        return 0
    results = {}
    if args.mode in ("dds", "all"):
        results["dds"] = run_dds(args)
    if args.mode in ("stages", "all"):
        results["stages"] = run_stages(args)
    if args.mode == "int8":
        results["int8"] = run_int8(args)
    print(f"Machine: {machine()}  \nDate: {datetime.datetime.now().isoformat(timespec='seconds')}  \n"
          f"Command: `python {shlex.join(['benchmarks/bench_node.py', *(argv or sys.argv[1:])])}`\n")
    titles = {"dds": "Image published -> features received (DDS, loopback)",
              "stages": "Node stages without DDS (per batch)", "int8": "int8 descriptors vs float32"}
    for name, rows in results.items():
        print(markdown(titles[name], rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "machine_record": machine_record(_gpu_or_cpu()), "date": datetime.datetime.now().isoformat(),
                                         "argv": sys.argv, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
