"""Bags for the tests and the benchmarks, written with ``rosbags`` (no ROS), and ways to damage them.

Writing: :func:`write_image_bag` makes a ROS 2 (mcap, sqlite3) or ROS 1 bag of :class:`BagImage`
items, :func:`write_split_bag` a ROS 2 bag split into several storage files. Damaging:
:func:`corrupt_page` overwrites one SQLite page with random bytes, :func:`sqlite_pages` tells which
pages hold what, :func:`mcap_chunks` where an .mcap's chunks lie, :func:`kill_recorder` leaves a bag folder as a killed ``ros2 bag record`` does.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPE = "sensor_msgs/msg/Image"


@dataclass
class BagImage:
    """One image to write with :func:`write_image_bag`.

    ``encoding`` is an Image encoding (``rgb8``, ``mono16``...; ``image`` as
    :func:`~superpoint_ros.image_conversion.numpy_to_image_fields` takes it) or ``jpeg``/``png``
    for a CompressedImage of ``image`` (gray or RGB). ``stamp`` defaults to the bag time.
    """

    topic: str
    time: int
    image: np.ndarray
    encoding: str = "rgb8"
    stamp: tuple[int, int] | None = None
    frame_id: str = "camera"


def image_message(typestore: Any, item: BagImage, ros1: bool = False) -> tuple[str, Any]:
    """(message type, rosbags message) for ``item`` in ``typestore``."""
    import cv2

    from superpoint_ros.image_conversion import numpy_to_image_fields

    types = typestore.types
    sec, nanosec = item.stamp if item.stamp is not None else divmod(item.time, 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    extra = {"seq": 0} if ros1 else {}
    header = types["std_msgs/msg/Header"](**extra, stamp=stamp, frame_id=item.frame_id)
    if item.encoding in ("jpeg", "png"):
        pixels = item.image if item.image.ndim == 2 else cv2.cvtColor(item.image, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode("." + ("jpg" if item.encoding == "jpeg" else "png"), pixels)
        if not ok:
            raise ValueError(f"OpenCV cannot encode an image of shape {item.image.shape} as {item.encoding}")
        return COMPRESSED_TYPE, types[COMPRESSED_TYPE](header=header, format=item.encoding, data=data.reshape(-1))
    fields = numpy_to_image_fields(item.image, item.encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    return IMAGE_TYPE, types[IMAGE_TYPE](header=header, **fields)


def write_image_bag(path: Path, storage: str, images: list[BagImage], notes: list[tuple[str, int, str]] = ()) -> None:
    """Write ``images`` (and std_msgs/String ``notes`` as (topic, time, text)) to a new bag.

    ``storage``: "mcap" or "sqlite3" (a ROS 2 bag folder) or "ros1" (a ``.bag`` file).
    """
    from rosbags.typesys import Stores, get_typestore

    ros1 = storage == "ros1"
    typestore = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_JAZZY)
    records = [(item.time, item.topic, *image_message(typestore, item, ros1)) for item in images]
    string_cls = typestore.types["std_msgs/msg/String"]
    records += [(time, topic, "std_msgs/msg/String", string_cls(data=text)) for topic, time, text in notes]
    records.sort(key=lambda r: r[0])
    if ros1:
        from rosbags.rosbag1 import Writer as Writer1

        writer: Any = Writer1(path)
        serialize = typestore.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        serialize = typestore.serialize_cdr
    connections: dict[tuple[str, str], Any] = {}
    with writer:
        for time, topic, msgtype, msg in records:
            if (topic, msgtype) not in connections:
                connections[(topic, msgtype)] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[(topic, msgtype)], time, serialize(msg, msgtype))


def write_split_bag(path: Path, storage: str, parts: list[list[BagImage]]) -> list[Path]:
    """A ROS 2 bag folder ``path`` whose messages lie in one storage file per part, as ``ros2 bag record
    --max-bag-size`` leaves them: ``<name>_0.mcap``, ``<name>_1.mcap``... and one metadata.yaml that
    lists them all. Returns the storage files in order.
    """
    suffix = ".mcap" if storage == "mcap" else ".db3"
    path.mkdir(parents=True)
    files, counts, starts, ends = [], {}, [], []
    for index, images in enumerate(parts):
        part = path.parent / f".{path.name}_part{index}"
        write_image_bag(part, storage, images)
        (storage_file,) = part.glob("*" + suffix)
        target = path / f"{path.name}_{index}{suffix}"
        storage_file.rename(target)
        files.append(target)
        info = yaml.safe_load((part / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        for topic in info["topics_with_message_count"]:
            name = topic["topic_metadata"]["name"]
            counts.setdefault(name, {**topic, "message_count": 0})["message_count"] += topic["message_count"]
        starts.append(info["starting_time"]["nanoseconds_since_epoch"])
        ends.append(starts[-1] + info["duration"]["nanoseconds"])
        if index == 0:
            metadata = {"rosbag2_bagfile_information": info}
        shutil.rmtree(part)
    info = metadata["rosbag2_bagfile_information"]
    info["relative_file_paths"] = [f.name for f in files]
    info["topics_with_message_count"] = list(counts.values())
    info["message_count"] = sum(c["message_count"] for c in counts.values())
    info["starting_time"]["nanoseconds_since_epoch"] = min(starts)
    info["duration"]["nanoseconds"] = max(ends) - min(starts)
    info["files"] = []
    (path / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    return files


def kill_recorder(path: Path, keep: float = 0.6) -> None:
    """Leave the bag folder ``path`` as a killed recorder does: no metadata.yaml, and the last storage
    file of an mcap bag cut to ``keep`` of its length (no summary, no footer)."""
    (path / "metadata.yaml").unlink()
    mcaps = sorted(path.glob("*.mcap"))
    if mcaps:
        data = mcaps[-1].read_bytes()
        mcaps[-1].write_bytes(data[: int(len(data) * keep)])


def sqlite_pages(db: Path) -> list[tuple[int, str, str, int]]:
    """(page number, b-tree name, page type, cells) for every page of ``db`` (SQLite's dbstat table);
    page types are ``internal``, ``leaf`` and ``overflow`` (payload that did not fit its leaf)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return connection.execute("SELECT pageno, name, pagetype, ncell FROM dbstat ORDER BY pageno").fetchall()


def corrupt_page(db: Path, page: int, seed: int = 0) -> None:
    """Overwrite page ``page`` (1-based, as SQLite counts) of ``db`` with random bytes."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        (size,) = connection.execute("PRAGMA page_size").fetchone()
    corrupt_bytes(db, (page - 1) * size, size, seed)


def mcap_chunks(path: Path) -> list[tuple[int, int]]:
    """(byte offset, length) of each chunk record of an .mcap file, walking its records from the start."""
    import struct

    data = path.read_bytes()
    chunks, pos = [], 8
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode == 0x06:
            chunks.append((pos, 9 + length))
        if opcode == 0x0F:  # data end: the summary follows
            break
        pos += 9 + length
    return chunks


def corrupt_bytes(path: Path, offset: int, size: int = 4096, seed: int = 0) -> None:
    """Overwrite ``size`` bytes of ``path`` at ``offset`` with random ones."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())

