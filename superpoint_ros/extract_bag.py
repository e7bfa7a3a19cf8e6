"""Extract SuperPoint features from the image topics of a recorded bag into a new ROS 2 bag (and HDF5).

Reads ROS 2 bags (mcap or sqlite3 storage: the bag folder, or a bare .mcap/.db3 file) and ROS 1
.bag files with the ``rosbags`` library, so it runs without rclpy or a ROS installation. Every
sensor_msgs/Image encoding the detector node supports and sensor_msgs/CompressedImage (JPEG, PNG)
are decoded in background threads while the Extractor runs on batches of frames. Each image gives
one superpoint_ros/msg/Features message with the image's header (stamp and frame id) on
``<image topic>/features``, written at the image message's bag time. The output bag registers the
Features type from the package's own msg/ definitions, so `ros2 bag` users who built the package
can play it.

Times for --start/--end are seconds: values below 1e9 are offsets from the first message of the
bag, larger values are absolute (Unix) times.

Damaged bags give every message that can be read: a bag folder without metadata.yaml (a killed
recorder) is read file by file in split order; an .mcap cut short up to the cut; a .db3 with damaged
pages row by row, skipping the rows on those pages. The output is closed properly and the summary
says where reading stopped and what was skipped. Messages that cannot be decoded are skipped and
listed with their topic and time.

--batch-size defaults to 1 on a CPU (batches are no faster there and cost memory, see
BENCHMARKS.md) and, on a GPU, to up to 16 frames as the free device memory allows.

Examples::

    python -m superpoint_ros.extract_bag recording/ --output recording_features/
    python -m superpoint_ros.extract_bag run.bag --topics /camera/image_raw --output run_features \\
        --storage sqlite3 --device cuda --precision fp16 --max-keypoints 1000
    python -m superpoint_ros.extract_bag drive.mcap --topics /cam0/image_raw/compressed \\
        --start 30 --end 90 --copy-other-topics --h5 drive.h5 --output drive_features --force
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from superpoint_training.common.machine import describe_machine

from .bag_reader import (
    IMAGE_TYPES,
    BagError,
    Frame,
    MessagePump,
    Passthrough,
    ReadFailure,
    format_time,
    input_storage,
    open_bag,
    reader_losses,
)
from .bag_writer import STORAGES, BagOutput, prepare_output
from .features_message import DESCRIPTOR_ENCODINGS, features_to_message

ABSOLUTE_TIME = 1e9  # seconds: --start/--end at or above this are Unix times, below are offsets
DEFAULT_FEATURES_TOPIC = "{topic}/features"
SHOWN_SKIPS = 10
MAX_GPU_BATCH = 16
BYTES_PER_PIXEL = 800  # peak memory per frame of a batch, per pixel: 360-740 measured on CPUs (BENCHMARKS.md)


def auto_batch_size(device: Any, height: int, width: int) -> int:
    """The default batch: 1 on a CPU, on a GPU up to 16 frames within half of its free memory."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_GPU_BATCH, int(free // 2 // (BYTES_PER_PIXEL * height * width))))


@dataclass
class Summary:
    """What one extraction did; ``lines()`` is the report printed at the end."""

    output: Path
    h5: Path | None = None
    bag_start: int | None = None
    topics: dict[str, str] = field(default_factory=dict)  # image topic -> features topic
    frames: int = 0
    keypoints: int = 0
    copied: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    skipped_count: int = 0
    stopped: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    machine: str = ""  # how the frames/s were made: machine, library versions, backend and precision
    losses: list[str] = field(default_factory=list)  # messages the damaged storage did not give up
    batch_size: int | None = None

    @property
    def complete(self) -> bool:
        """Every message of the bag (in the time range) was read."""
        return self.stopped is None and not self.losses

    def lines(self) -> list[str]:
        rate = f", {self.frames / self.seconds:.1f} frames/s" if self.seconds > 0 and self.frames else ""
        lines = list(self.notes)
        lines.append(
            f"wrote {self.frames} Features messages ({self.keypoints / max(self.frames, 1):.1f} keypoints per "
            f"frame) to {self.output} in {self.seconds:.1f} s{rate}"
        )
        for image_topic, features_topic in self.topics.items():
            lines.append(f"  {image_topic} -> {features_topic}")
        if self.machine:
            lines.append(f"on {self.machine}")
        if self.h5 is not None:
            lines.append(f"features also in {self.h5}")
        if self.copied:
            lines.append(f"copied {self.copied} messages of other topics")
        if self.skipped_count:
            lines.append(f"skipped {self.skipped_count} undecodable image messages:")
            for topic, stamp, reason in self.skipped:
                lines.append(f"  {topic} at {format_time(stamp, self.bag_start)}: {reason}")
            if self.skipped_count > len(self.skipped):
                lines.append(f"  ... and {self.skipped_count - len(self.skipped)} more")
        for loss in self.losses:
            lines.append(f"DAMAGED: {loss}")
        if self.stopped:
            lines.append(f"STOPPED EARLY: {self.stopped}")
            lines.append(f"the output is a complete, readable bag of everything before that point: {self.output}")
        return lines


def resolve_time(seconds: float | None, bag_start: int) -> int | None:
    """--start/--end seconds to bag nanoseconds (offsets below 1e9 s count from ``bag_start``)."""
    if seconds is None:
        return None
    nanoseconds = round(seconds * 1e9)
    return nanoseconds if seconds >= ABSOLUTE_TIME else bag_start + nanoseconds


def select_topics(reader: Any, requested: list[str] | None) -> tuple[Callable[[Any], bool], list[str]]:
    """A predicate for the image connections to extract, and the topic names it selects."""
    topics = {name: info.msgtype for name, info in reader.topics.items()}
    image_topics = sorted(name for name, msgtype in topics.items() if msgtype in IMAGE_TYPES)
    recovered = getattr(reader, "discovers_topics", False)  # its topics appear while reading
    if not requested:
        if recovered:
            return (lambda c: c.msgtype in IMAGE_TYPES), []
        if not image_topics:
            raise BagError(f"the bag has no Image or CompressedImage topics (topics: {', '.join(sorted(topics))})")
        chosen = image_topics
    else:
        chosen = []
        for name in requested:
            if name not in topics and "/" + name.lstrip("/") in topics:
                name = "/" + name.lstrip("/")
            if recovered:
                chosen.append("/" + name.lstrip("/"))
            elif name not in topics:
                raise BagError(f"topic {name!r} is not in the bag (image topics: {', '.join(image_topics) or 'none'})")
            elif topics[name] not in IMAGE_TYPES:
                raise BagError(f"topic {name!r} has type {topics[name]}, not Image or CompressedImage")
            else:
                chosen.append(name)
    wanted = set(chosen)
    return (lambda c: c.topic in wanted and c.msgtype in IMAGE_TYPES), chosen


def features_topic_for(template: str, topic: str) -> str:
    name = template.format(topic=topic.rstrip("/"))
    return name if name.startswith("/") else "/" + name


@dataclass
class _Slot:
    item: Frame | Passthrough
    message: Any = None
    done: bool = False


def extract_bag(
    inputs: list[Path],
    output: Path,
    extractor: Any,
    *,
    topics: list[str] | None = None,
    storage: str | None = None,
    features_topic: str = DEFAULT_FEATURES_TOPIC,
    h5: Path | None = None,
    start: float | None = None,
    end: float | None = None,
    copy_other_topics: bool = False,
    batch_size: int | None = None,
    descriptor_encoding: str = "float32",
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    weights_label: str | None = None,
) -> Summary:
    """Extract features of the image topics of ``inputs`` into the ROS 2 bag ``output``.

    ``extractor`` is a :class:`superpoint_training.Extractor`. ``weights_label`` fills
    Features.weights (default: the extractor's weights description). ``batch_size`` None chooses it by
    device and image size (:func:`auto_batch_size`). Returns a :class:`Summary`; raises
    :class:`BagError` for unusable arguments or an unreadable bag before anything is written.
    """
    if descriptor_encoding not in DESCRIPTOR_ENCODINGS:
        raise ValueError(f"descriptor encoding must be one of {DESCRIPTOR_ENCODINGS}, got {descriptor_encoding!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    inputs = [Path(p) for p in inputs]
    output = Path(output)
    storage = storage or input_storage(inputs[0])
    storage = "mcap" if storage == "ros1" else storage
    prepare_output(output, force, inputs)
    if h5 is not None:
        h5 = Path(h5)
        prepare_output(h5, force, inputs)
        from superpoint_training.common.feature_io import file_kind

        file_kind(h5)

    reader, note = open_bag(inputs)
    summary = Summary(output=output, h5=h5, batch_size=batch_size, machine=(
        f"{describe_machine(str(extractor.device))}; {extractor.backend} backend, {extractor.precision}"))
    if note:
        summary.notes += [f"note: {line}" for line in note.split("\n")]
    try:
        is_image, chosen = select_topics(reader, topics)
        if "{topic}" not in features_topic and len(chosen) != 1:
            raise BagError(f"--features-topic {features_topic!r} needs '{{topic}}' unless exactly one topic is extracted")
        bag_start = reader.start_time
        summary.bag_start = bag_start if bag_start < 2**63 - 1 else None
        start_ns = resolve_time(start, bag_start)
        stop_ns = resolve_time(end, bag_start)
        if start_ns is not None and stop_ns is not None and stop_ns <= start_ns:
            raise BagError(f"empty time range: --end ({end}) is not after --start ({start})")
        out_topics = {t: features_topic_for(features_topic, t) for t in chosen}
        clash = set(out_topics.values()) & set(reader.topics)
        if clash and copy_other_topics:
            raise BagError(f"features topics {sorted(clash)} already exist in the input: choose --features-topic")
        total = _expected_frames(reader, chosen, start_ns, stop_ns)
        options = _Options(
            template=features_topic,
            encoding=descriptor_encoding,
            weights=extractor.weights_description if weights_label is None else weights_label,
            batch_size=batch_size,
            workers=workers or min(8, os.cpu_count() or 1),
            copy_others=copy_other_topics,
            start=start_ns,
            stop=stop_ns,
        )
        _run(reader, output, storage, h5, extractor, options, is_image, total, progress, summary)
        notes, summary.losses = reader_losses(reader)
        summary.notes += [f"note: {line}" for line in notes]
    finally:
        reader.close()
    return summary


def _expected_frames(reader: Any, chosen: list[str], start: int | None, stop: int | None) -> int | None:
    """Image messages to expect (for the ETA): counts from the index, scaled to the time range."""
    infos = reader.topics
    if getattr(reader, "discovers_topics", False) or not chosen or any(t not in infos for t in chosen):
        return None
    count = sum(infos[t].msgcount for t in chosen)
    first, last = reader.start_time, reader.end_time
    if (start is None and stop is None) or last <= first:
        return count
    low, high = max(first, start or first), min(last, stop or last)
    return max(0, round(count * (high - low) / (last - first)))


@dataclass
class _Options:
    template: str
    encoding: str
    weights: str
    batch_size: int | None  # None: auto_batch_size for the first frame
    workers: int
    copy_others: bool
    start: int | None
    stop: int | None


class _Extraction:
    """Batches decoded frames by size, extracts them and writes the results in bag order.

    Items (frames, copies of other topics) wait in ``pending`` in the order they were read; a
    frame is done once its batch ran. Done items at the head are written, so the output bag is in
    the input's order although batches complete out of order.
    """

    def __init__(self, bag: BagOutput, store: Any, extractor: Any, options: _Options, summary: Summary, bar: Any):
        self.bag, self.store, self.extractor, self.options = bag, store, extractor, options
        self.summary, self.bar = summary, bar
        from superpoint_training.model.batching import SizeBatcher

        self.pending: deque[_Slot] = deque()
        self.batches = SizeBatcher(options.batch_size)  # decoded frames not yet extracted
        self.h5_keys: set[str] = set()

    def add(self, item: Frame | Passthrough) -> None:
        slot = _Slot(item)
        self.pending.append(slot)
        if isinstance(item, Passthrough):
            slot.done = True
        elif item.error is not None:
            slot.done = True
            self.summary.skipped_count += 1
            if len(self.summary.skipped) < SHOWN_SKIPS:
                self.summary.skipped.append((item.topic, item.time, item.error))
            self.bar.update(1)
            self.bar.set_postfix(skipped=self.summary.skipped_count)
        else:
            if self.options.batch_size is None:
                self.options.batch_size = auto_batch_size(self.extractor.device, *item.image.shape[:2])
                self.summary.batch_size = self.batches.batch_size = self.options.batch_size
            full = self.batches.add(item.image, slot)
            if full:
                self.run(full)
        self.flush()

    def finish(self) -> None:
        """Extract the partial batches and write everything that is left."""
        for group in self.batches.rest():
            self.run(group)
        self.flush()

    def run(self, group: list[_Slot]) -> None:
        frames: list[Frame] = [slot.item for slot in group]  # type: ignore[misc]
        batch = self.extractor.upload([frame.image for frame in frames])
        results = self.extractor.extract_batch(batch, as_list=True)
        for slot, frame, features in zip(group, frames, results, strict=True):
            if self.store is not None:
                features = features.numpy()
                self._store(frame, features)
            msg = features_to_message(self.bag.features_cls, self.bag.header(frame.stamp, frame.frame_id), features,
                                      image_size=features.image_size, encoding=self.options.encoding,
                                      weights=self.options.weights)
            slot.message = msg
            slot.done = True
            frame.image = None
            self.summary.keypoints += len(features)
        self.bar.update(len(group))

    def _store(self, frame: Frame, features: Any) -> None:
        base = key = f"{frame.topic.strip('/')}/{frame.stamp[0] * 1_000_000_000 + frame.stamp[1]}"
        while key in self.h5_keys:  # repeated stamps: keep every frame
            key = f"{base}_{len(self.h5_keys)}"
        self.h5_keys.add(key)
        self.store.write(key, features, topic=frame.topic, stamp_sec=frame.stamp[0], stamp_nanosec=frame.stamp[1],
                         frame_id=frame.frame_id, bag_time_ns=frame.time)

    def flush(self) -> None:
        while self.pending and self.pending[0].done:
            slot = self.pending.popleft()
            item = slot.item
            if isinstance(item, Passthrough):
                self.bag.copy(item)
            elif slot.message is not None:
                topic = features_topic_for(self.options.template, item.topic)
                self.summary.topics.setdefault(item.topic, topic)
                self.bag.write_features(topic, item.time, slot.message)
                self.summary.frames += 1


def _run(reader: Any, output: Path, storage: str, h5: Path | None, extractor: Any, options: _Options,
         is_image: Callable, total: int | None, progress: bool, summary: Summary) -> None:
    clock = time.perf_counter()
    bag = BagOutput(output, storage, reader)
    store = None
    if h5 is not None:
        from superpoint_training.common.cli import extractor_settings
        from superpoint_training.common.feature_io import FeatureStore

        store = FeatureStore.open(h5, "w", weights=extractor.weights_description, config=extractor_settings(extractor))
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, smoothing=0.1)
    work = _Extraction(bag, store, extractor, options, summary, bar)
    try:
        with MessagePump(reader, is_image, options.copy_others, options.start, options.stop,
                         workers=options.workers, depth=4 * (options.batch_size or MAX_GPU_BATCH)) as pump:
            for item in pump:
                if isinstance(item, ReadFailure):
                    where = "before any message was read"
                    if item.last is not None:
                        last_topic, last_time = item.last
                        where = f"after the last good message, {last_topic} at {format_time(last_time, summary.bag_start)}"
                    summary.stopped = f"cannot read the bag further ({item.error}), {where}"
                    break
                work.add(item)
        work.finish()
    except KeyboardInterrupt:
        summary.stopped = "interrupted (Ctrl-C)"
        work.finish()  # keep what was already decoded
    finally:
        bar.close()
        try:
            bag.close()
        finally:
            summary.copied = bag.copied
            if store is not None:
                store.close()
            summary.seconds = time.perf_counter() - clock


def build_parser() -> argparse.ArgumentParser:
    from superpoint_training.common.cli import add_extractor_arguments, command_parser, docstring_examples, flag

    parser = command_parser(
        "superpoint_ros.extract_bag",
        "Extract SuperPoint features from the image topics of a ROS 1 or ROS 2 bag into a ROS 2 bag "
        "of superpoint_ros/msg/Features messages (and optionally HDF5). Needs no ROS installation.",
        docstring_examples(__doc__),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="ROS 2 bag folder, .mcap or .db3 file, or one or more ROS 1 .bag files")
    parser.add_argument("--output", "-o", required=True, help="output ROS 2 bag folder (must not exist without --force)")
    parser.add_argument("--topics", nargs="+", default=None,
                        help="Image/CompressedImage topics to extract (default: every image topic)")
    parser.add_argument("--features-topic", default=DEFAULT_FEATURES_TOPIC,
                        help="output topic name, '{topic}' is the image topic (default: %(default)s)")
    parser.add_argument("--storage", choices=STORAGES, default=None,
                        help="output storage (default: the input's for ROS 2 bags, mcap for ROS 1)")
    parser.add_argument("--h5", type=Path, default=None,
                        help="also write the features to this .h5 file (project layout, keys <topic>/<stamp ns>)")
    parser.add_argument("--start", type=float, default=None,
                        help="first bag time, seconds: offset from the bag's start, or Unix time if >= 1e9")
    parser.add_argument("--end", type=float, default=None, help="end of the time range (exclusive), as --start")
    parser.add_argument("--copy-other-topics", action="store_true",
                        help="carry every other topic through to the output bag (ROS 1 messages converted)")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    group = parser.add_argument_group("extractor (same options as the detector node)")
    add_extractor_arguments(group, max_keypoints=1000)
    group.add_argument(*flag("descriptor-encoding"), choices=DESCRIPTOR_ENCODINGS,
                       default="float32", help="Features.descriptor_encoding (int8 is 4x smaller)")
    group.add_argument(*flag("batch-size"), type=int, default=None,
                       help="frames of equal size per device call (default: 1 on a CPU, up to 16 on a GPU as "
                       "its free memory allows)")
    group.add_argument("--workers", type=int, default=None,
                       help="image decoding threads (default: the number of CPUs, at most 8)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from superpoint_training.common.cli import describe_path, extractor_from_args
    from superpoint_training.model.loading import WeightsError

    try:
        # check cheap things before loading the network
        inputs = [Path(p) for p in args.inputs]
        for path in inputs:
            input_storage(path)
        if not args.force:
            prepare_output(Path(args.output), False, inputs)
        extractor = extractor_from_args(args)
        if not args.quiet:
            print(f"SuperPoint: {extractor.weights_description} on {describe_path(extractor)}",
                  file=sys.stderr)
        summary = extract_bag(
            inputs,
            Path(args.output),
            extractor,
            topics=args.topics,
            storage=args.storage,
            features_topic=args.features_topic,
            h5=args.h5,
            start=args.start,
            end=args.end,
            copy_other_topics=args.copy_other_topics,
            batch_size=args.batch_size,
            descriptor_encoding=args.descriptor_encoding,
            workers=args.workers,
            force=args.force,
            progress=not args.quiet,
            weights_label=str(args.weights),  # as the detector node labels its messages
        )
    except (BagError, OSError, ValueError, WeightsError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0 if summary.complete and summary.frames else 1


if __name__ == "__main__":
    sys.exit(main())
