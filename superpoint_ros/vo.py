"""``python -m superpoint_ros.vo``: the visual-odometry check of the features against TUM-format
ground truth, with ORB beside it, on a folder of images or a recorded bag.

The evaluation itself (matching, relative poses, errors, summary, plots) is
:mod:`superpoint_training.odometry.evaluation`, which needs no ROS; this module reads bags (the bag
tool's reader) and parses the command line.

Examples::

    python -m superpoint_ros.vo ../shared/data/tum_fr2_desk/rgb --camera ../shared/data/tum_fr2_desk/camera.txt \\
        --groundtruth ../shared/data/tum_fr2_desk/groundtruth.txt --output runs/vo_tum --gaps 1 5
    python -m superpoint_ros.vo recording.mcap --topic /camera/image_raw --camera-info-topic /camera/camera_info \\
        --output runs/vo_bag --weights superpoint_ros --max-keypoints 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superpoint_training.odometry.camera import CameraError, CameraModel
from superpoint_training.odometry.evaluation import (
    Frame,
    VOInputError,
    VOResult,
    evaluate_odometry,
    read_image_folder,
    to_gray,
)
from superpoint_training.odometry.tracking import TrackerConfig

BAG_SUFFIXES = (".db3", ".mcap", ".bag")


def read_bag(
    path: Path,
    topic: str | None = None,
    camera_info_topic: str | None = None,
    start: int = 0,
    max_frames: int | None = None,
) -> tuple[list[Frame], CameraModel | None]:
    """Frames of one image topic (Image or CompressedImage) of a ROS 1/2 bag, and its first CameraInfo,
    read as the bag tool reads (:mod:`.bag_reader`: damaged files recovered, images decoded in threads)."""
    from .bag_reader import IMAGE_TYPES, BagError, MessagePump, Passthrough, ReadFailure, open_bag

    frames: list[Frame] = []
    camera = None
    skipped: list[str] = []
    try:
        reader, note = open_bag([path])
    except BagError as error:
        raise VOInputError(str(error)) from error
    if note:
        print(f"warning: {note}", file=sys.stderr)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        if topic is None:
            candidates = sorted(t for t, m in topics.items() if m in IMAGE_TYPES)
            if len(candidates) != 1:
                raise VOInputError(f"{path}: name the image topic with --topic (image topics: {candidates or 'none'})")
            topic = candidates[0]
        if topics.get(topic) not in IMAGE_TYPES:
            raise VOInputError(f"{path}: topic {topic!r} is not an image topic (topics: {sorted(topics)})")
        if camera_info_topic is None:
            infos = sorted(t for t, m in topics.items() if m == "sensor_msgs/msg/CameraInfo")
            camera_info_topic = infos[0] if len(infos) == 1 else None
        index = 0
        with MessagePump(reader, lambda c: c.topic == topic, copy_others=camera_info_topic is not None) as pump:
            for item in pump:
                if isinstance(item, ReadFailure):
                    print(f"warning: {path}: cannot read further ({item.error}); {len(frames)} frames read",
                          file=sys.stderr)
                    break
                if isinstance(item, Passthrough):
                    if item.connection.topic == camera_info_topic and camera is None:
                        camera = CameraModel.from_camera_info(reader.deserialize(item.raw, item.connection.msgtype))
                    continue
                index += 1
                if index <= start:
                    continue
                if max_frames is not None and len(frames) >= max_frames:
                    if camera is not None or camera_info_topic is None:
                        break
                    continue
                if item.error is not None:
                    skipped.append(f"{topic}#{index - 1}: {item.error}")
                    continue
                stamp = item.stamp[0] + 1e-9 * item.stamp[1]
                frames.append(Frame(stamp, to_gray(item.image), f"{topic}#{index - 1}"))
    finally:
        reader.close()
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable frames, the first: {skipped[0]}", file=sys.stderr)
    if not frames:
        raise VOInputError(f"{path}: no frames on {topic}")
    return frames, camera


def run(args: argparse.Namespace) -> VOResult:
    """The command: frames and camera from ``args``, then :func:`evaluate_odometry`."""
    source = Path(args.source)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    camera = None
    if source.is_dir() and not any(source.glob("*.db3")) and not any(source.glob("*.mcap")):
        frames = read_image_folder(source, args.start, args.max_frames)
    else:
        frames, camera = read_bag(source, args.topic, args.camera_info_topic, args.start, args.max_frames)
    if args.camera:
        camera = CameraModel.from_file(args.camera)
    elif args.camera_info:
        camera = CameraModel.from_file(args.camera_info)
    if camera is None:
        raise VOInputError("no intrinsics: give --camera fx_fy_cx_cy.txt, --camera-info camera.yaml, or a bag with CameraInfo")
    problem = camera.problem()
    if problem:
        raise VOInputError(f"unusable intrinsics: {problem}")
    if len(frames) < 2:
        raise VOInputError(f"need at least 2 frames, got {len(frames)}")
    if min(args.gaps) < 1:
        raise VOInputError(f"--gaps must be positive, got {sorted(set(args.gaps))}")
    config = TrackerConfig(
        mutual=not args.no_mutual,
        ratio=args.ratio if args.ratio > 0 else None,
        max_distance=args.max_distance if args.max_distance > 0 else None,
        bucket_rows=args.bucket[0],
        bucket_cols=args.bucket[1],
        bucket_max_per_cell=args.bucket[2],
        min_matches=args.min_matches,
        min_inliers=args.min_inliers,
        ransac_threshold_px=args.ransac_threshold,
        min_parallax_px=args.min_parallax,
        max_frame_gap=None,
        frame_gap_periods=None,
    )

    from superpoint_training.common.cli import extractor_from_args, extractor_settings
    from superpoint_training.model.loading import WeightsError

    try:
        extractor = extractor_from_args(args)
    except WeightsError as error:
        raise VOInputError(str(error)) from None
    command = " ".join(["python -m superpoint_ros.vo", *sys.argv[1:]]) if args.command is None else args.command
    return evaluate_odometry(
        frames, camera, extractor, args.output, gaps=args.gaps, config=config, groundtruth=args.groundtruth,
        max_time_difference=args.max_time_difference, orb=not args.no_orb, progress=not args.quiet,
        source=str(source), command=command, extractor_record=extractor_settings(extractor, weights=str(args.weights)),
        ransac_orders=args.ransac_orders,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from superpoint_training.common.cli import add_extractor_arguments, command_parser, docstring_examples

    parser = command_parser(
        "superpoint_ros.vo",
        __doc__.split("\n\n")[0],
        docstring_examples(__doc__),
    )
    parser.add_argument("source", help="folder of images (sorted; stamps from file names) or a bag (.db3/.mcap folder or file, ROS 1 .bag)")
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument("--camera", help="text file 'fx fy cx cy [k1 k2 p1 p2 [k3]]' (OpenCV order, # comments)")
    camera.add_argument("--camera-info", help="ROS camera-calibration YAML (camera_matrix, distortion_model, distortion_coefficients)")
    parser.add_argument("--groundtruth", help="TUM trajectory 'timestamp tx ty tz qx qy qz qw' (T_world_cam)")
    parser.add_argument("--output", required=True, help="output folder (pairs.csv, summary.json/md, trajectory.png)")
    parser.add_argument("--gaps", type=int, nargs="+", default=[1, 5], help="frame gaps to evaluate (default: 1 5)")
    parser.add_argument("--topic", help="bag: image topic (default: the only Image/CompressedImage topic)")
    parser.add_argument("--camera-info-topic", help="bag: CameraInfo topic (default: the only one, if any)")
    parser.add_argument("--start", type=int, default=0, help="skip this many frames first")
    parser.add_argument("--max-frames", type=int, help="use at most this many frames")
    parser.add_argument("--max-time-difference", type=float, default=0.02, help="frame to ground-truth association, seconds")
    parser.add_argument("--no-orb", action="store_true", help="skip the ORB baseline")
    parser.add_argument("--no-mutual", action="store_true", help="SuperPoint: do not require mutual nearest neighbours")
    defaults = TrackerConfig()
    parser.add_argument("--ratio", type=float, default=defaults.ratio or 0.0, help="SuperPoint ratio test, 0 = off (default: %(default)s)")
    parser.add_argument("--max-distance", type=float, default=defaults.max_distance or 0.0, help="SuperPoint L2 bound, 0 = off (default: %(default)s)")
    parser.add_argument("--bucket", type=int, nargs=3, default=[0, 0, 0], metavar=("ROWS", "COLS", "PER_CELL"), help="SuperPoint bucketing grid (default: off)")
    parser.add_argument("--min-matches", type=int, default=defaults.min_matches, help="(default: %(default)s)")
    parser.add_argument("--min-inliers", type=int, default=defaults.min_inliers, help="(default: %(default)s)")
    parser.add_argument("--ransac-threshold", type=float, default=defaults.ransac_threshold_px, help="pixels (default: %(default)s)")
    parser.add_argument("--ransac-orders", type=int, default=1,
                        help="estimate each pair's pose this many times, the matches shuffled; report the mean of the "
                             "orders' medians (default: %(default)s)")
    parser.add_argument("--min-parallax", type=float, default=defaults.min_parallax_px, help="pixels, 0 = off (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_extractor_arguments(parser.add_argument_group("SuperPoint (the extractor options of the node and the bag tool)"),
                            max_keypoints=1000)
    parser.set_defaults(command=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is not None:
        args.command = " ".join(["python -m superpoint_ros.vo", *argv])
    try:
        result = run(args)
    except (FileNotFoundError, VOInputError, CameraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.markdown)
    print(f"wrote {args.output}/" + ", ".join(result.written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
