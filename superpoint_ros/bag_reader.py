"""Reading bags for the bag tool and the VO runner, with the ``rosbags`` library (no rclpy, no ROS install).

- :func:`open_bag` opens ROS 2 bags (a folder with ``metadata.yaml``, or a bare ``.mcap``/``.db3``
  file) and ROS 1 ``.bag`` files, and reads every message that can be read from damaged ones:
  a folder without ``metadata.yaml`` (a killed ``ros2 bag record``) is read file by file in split
  order; an ``.mcap`` without its summary or with damaged chunks record by record through
  :class:`~.bag_recovery.TruncatedMcap`; a ``.db3`` with damaged pages row by row through
  :class:`~.bag_recovery.Sqlite3Rows`; also when the damage only shows while reading
  (:class:`ResumingReader`).
- :class:`MessagePump` reads messages in a background thread and decodes images in a small thread
  pool (OpenCV and the deserialiser release the GIL for the heavy parts), handing them out in bag
  order through a bounded queue, so that decoding overlaps inference and memory stays bounded.
  A read error ends the stream with a :class:`ReadFailure` item that names where it happened.

Every reader returned has AnyReader's interface plus ``damage`` (why reading stopped early),
``losses`` (messages skipped on damaged pages) and ``discovers_topics`` (topics appear while reading).
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bag_recovery import BagError, Sqlite3Rows, TruncatedMcap, format_time
from .image_conversion import ImageConversionError, compressed_msg_to_numpy, image_msg_to_numpy

__all__ = ["IMAGE_TYPES", "BagError", "Frame", "MessagePump", "Passthrough", "ReadFailure", "format_time",
           "input_storage", "open_bag", "storage_files"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


def storage_files(folder: Path) -> list[Path]:
    """The .mcap or .db3 files of a ROS 2 bag folder in split order (``name_2`` before ``name_10``)."""

    def split_index(path: Path) -> tuple[int, str]:
        match = re.search(r"_(\d+)$", path.stem)
        return (int(match.group(1)) if match else -1, path.name)

    for suffix in STORAGE_SUFFIXES:
        files = sorted(folder.glob("*" + suffix), key=split_index)
        if files:
            return files
    return []


def input_storage(path: Path) -> str:
    """"mcap", "sqlite3" or "ros1" from a bag path (folder with metadata.yaml, .mcap, .db3, .bag)."""
    if not path.exists():
        raise BagError(f"no such bag: {path}")
    if path.is_dir():
        files = storage_files(path)
        if not files:
            raise BagError(f"{path}: a folder without .mcap or .db3 files is not a ROS 2 bag")
        return STORAGE_SUFFIXES[files[0].suffix]
    suffix = path.suffix.lower()
    kinds = {**STORAGE_SUFFIXES, ".bag": "ros1"}
    if suffix not in kinds:
        raise BagError(f"{path}: unknown bag type {suffix!r} (expected a ROS 2 bag folder, .mcap, .db3 or .bag)")
    return kinds[suffix]


# -- opening ------------------------------------------------------------------------------------
def open_bag(paths: list[Path]) -> tuple[Any, str | None]:
    """An open reader over ``paths`` with AnyReader's interface (see the module docstring).

    Returns ``(reader, note)``; ``note`` is None, or says how a damaged or unfinished bag is read.
    """
    for path in paths:
        input_storage(path)  # exists and is a bag
    if len(paths) == 1 and paths[0].is_dir() and not (paths[0] / "metadata.yaml").exists():
        folder = paths[0]
        files = storage_files(folder)
        notes = [f"{folder} has no metadata.yaml (a recording that was not closed?): reading its "
                 f"{len(files)} storage file{'s' * (len(files) > 1)} in order ({', '.join(f.name for f in files)})"]
        readers = [_open_file(file, notes) for file in files]
        return (readers[0] if len(readers) == 1 else BagFiles(readers)), "\n".join(notes)
    reader = _anyreader(paths)
    try:
        reader.open()
    except Exception as error:  # noqa: BLE001 - rosbags raises many kinds for damaged files
        storage = input_storage(paths[0])
        if storage == "ros1":
            raise BagError(f"cannot open {', '.join(map(str, paths))}: {error} "
                           "(a ROS 1 bag cut short needs `rosbag reindex` first)") from error
        files = [f for p in paths for f in (storage_files(p) if p.is_dir() else [p])]
        recovered = [_recovery_reader(file, error) for file in files]
        note = f"{', '.join(map(str, files))} {_recovery_note(files[0], error)}"
        return (recovered[0] if len(recovered) == 1 else BagFiles(recovered)), note
    if input_storage(paths[0]) != "ros1":
        files = [f for p in paths for f in (storage_files(p) if p.is_dir() else [p])]
        return ResumingReader(reader, files), None
    return reader, None


def _anyreader(paths: list[Path]) -> Any:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    return AnyReader(paths, default_typestore=get_typestore(Stores.ROS2_JAZZY))


def _open_file(file: Path, notes: list[str]) -> Any:
    """One storage file of a bag without metadata: through its index, else through recovery."""
    reader = _anyreader([file])
    try:
        reader.open()
    except Exception as error:  # noqa: BLE001
        notes.append(f"{file.name} {_recovery_note(file, error)}")
        return _recovery_reader(file, error)
    return ResumingReader(reader, [file])


def _recovery_note(file: Path, error: BaseException) -> str:
    if file.suffix == ".mcap":
        return f"cannot be opened through its index ({error}; truncated?): reading its records in order up to the damage"
    return f"cannot be opened as a whole ({error}): reading it row by row"


def _recovery_reader(file: Path, error: BaseException) -> Any:
    if file.suffix == ".mcap":
        if not TruncatedMcap.starts_like_mcap(file):
            raise BagError(f"cannot open {file}: {error} (it does not start like an MCAP file)") from error
        reader: Any = TruncatedMcap(file)
    else:
        reader = Sqlite3Rows(file)
    reader.open()
    return reader


@dataclass
class TopicSummary:
    msgtype: str
    msgcount: int


class BagFiles:
    """Several storage readers read one after the other as one bag (the files of a split recording).

    A damaged file that is not the last one costs its unread messages (``losses``), not the rest.
    """

    is2 = True

    def __init__(self, readers: list[Any]):
        self.readers = readers
        self.damage: str | None = None
        self._losses: list[str] = []

    @property
    def discovers_topics(self) -> bool:
        return any(getattr(r, "discovers_topics", False) for r in self.readers)

    @property
    def losses(self) -> list[str]:
        return self._losses + [line for r in self.readers for line in getattr(r, "losses", [])]

    @property
    def notes(self) -> list[str]:
        return [line for r in self.readers for line in getattr(r, "notes", [])]

    @property
    def connections(self) -> list[Any]:
        return [c for r in self.readers for c in r.connections]

    @property
    def topics(self) -> dict[str, TopicSummary]:
        topics: dict[str, TopicSummary] = {}
        for reader in self.readers:
            for name, info in reader.topics.items():
                summary = topics.setdefault(name, TopicSummary(info.msgtype, 0))
                summary.msgcount += info.msgcount
        return topics

    @property
    def start_time(self) -> int:
        return min(r.start_time for r in self.readers)

    @property
    def end_time(self) -> int:
        return max(r.end_time for r in self.readers)

    @property
    def typestore(self) -> Any:
        from rosbags.typesys import Stores, get_typestore

        merged = get_typestore(Stores.EMPTY)
        for reader in self.readers:
            merged.register({k: v for k, v in reader.typestore.fielddefs.items() if k not in merged.fielddefs})
        return merged

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        for reader in self.readers:
            if msgtype in reader.typestore.fielddefs:
                return reader.deserialize(raw, msgtype)
        raise BagError(f"no definition of {msgtype} in the bag")

    def messages(self, connections: Any = (), start: int | None = None, stop: int | None = None) -> Iterator[tuple]:
        wanted = {c.topic for c in connections} if connections else None
        for index, reader in enumerate(self.readers):
            if getattr(reader, "discovers_topics", False) or wanted is None:
                selected: list[Any] = []
            else:
                selected = [c for c in reader.connections if c.topic in wanted]
                if not selected:
                    continue
            for item in reader.messages(selected, start=start, stop=stop):
                if wanted is None or item[0].topic in wanted:
                    yield item
            damage = getattr(reader, "damage", None)
            if damage and index + 1 < len(self.readers):
                self._losses.append(f"{reader.path.name}: the rest of this file is unreadable ({damage})")
            elif damage:
                self.damage = f"{reader.path.name}: {damage}"

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


class ResumingReader:
    """An AnyReader over ROS 2 storage files that, when reading fails mid-way, reads on without the index.

    rosbags reads messages in time order through the timestamp index (.db3) or the chunk index
    (.mcap) and stops at the first damaged page or chunk; from there
    :class:`~.bag_recovery.Sqlite3Rows` (row by row) or :class:`~.bag_recovery.TruncatedMcap`
    (record by record, skipping damaged chunks) goes on with the messages not yet read.
    """

    damage = None
    discovers_topics = False

    def __init__(self, reader: Any, files: list[Path]):
        self.reader = reader
        self.files = files
        self.losses: list[str] = []
        self.notes: list[str] = []

    def __getattr__(self, name: str) -> Any:  # connections, topics, start_time, typestore, deserialize...
        return getattr(self.reader, name)

    def close(self) -> None:
        self.reader.close()

    def messages(self, connections: Any = (), start: int | None = None, stop: int | None = None) -> Iterator[tuple]:
        last, at_last = None, 0
        try:
            for connection, time, raw in self.reader.messages(connections, start=start, stop=stop):
                if time != last:
                    last, at_last = time, 0
                at_last += 1
                yield connection, time, raw
            return
        except Exception as error:  # noqa: BLE001 - SQLite, decompression, checksum... errors alike
            where = f"after {format_time(last)}" if last is not None else "at the first message"
            how = "row by row" if self.files[0].suffix == ".db3" else "record by record"
            self.notes.append(f"reading in time order failed {where} ({type(error).__name__}: {error}): "
                              f"reading the rest {how}")
        ours = {(c.topic, c.msgtype): c for c in self.reader.connections}
        rows = BagFiles([_recovery_reader(file, RuntimeError("damaged")) for file in self.files])
        try:
            wanted = connections or self.reader.connections
            low = last if last is not None else start
            for connection, time, raw in rows.messages(wanted, start=low, stop=stop):
                if time == last and at_last:  # already read before the failure
                    at_last -= 1
                    continue
                yield ours.get((connection.topic, connection.msgtype), connection), time, raw
        finally:
            self.losses += rows.losses
            if rows.damage:
                self.losses.append(rows.damage)
            rows.close()


def reader_losses(reader: Any) -> tuple[list[str], list[str]]:
    """(notes, losses) of a reader after reading: how it read damaged storage, and what it skipped."""
    return list(getattr(reader, "notes", [])), list(getattr(reader, "losses", []))


# -- the reader thread ----------------------------------------------------------------------------
@dataclass
class Frame:
    """One image message: decoded ``image`` (or ``error``), its header and where it lies in the bag."""

    topic: str
    time: int
    stamp: tuple[int, int] = (0, 0)
    frame_id: str = ""
    image: np.ndarray | None = None
    error: str | None = None


@dataclass
class Passthrough:
    """A message of another topic, copied unchanged (or converted from ROS 1)."""

    connection: Any
    time: int
    raw: bytes


@dataclass
class ReadFailure:
    """The bag could not be read further; ``last`` is the last (topic, time) read before the error."""

    error: str
    last: tuple[str, int] | None = None


def decode_frame(reader: Any, connection: Any, time: int, raw: bytes) -> Frame:
    """Deserialize and convert one Image/CompressedImage message; failures land in ``Frame.error``."""
    frame = Frame(connection.topic, time)
    try:
        msg = reader.deserialize(raw, connection.msgtype)
        frame.stamp = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
        frame.frame_id = str(msg.header.frame_id)
        if connection.msgtype == COMPRESSED_TYPE:
            frame.image = compressed_msg_to_numpy(msg)
        else:
            frame.image = image_msg_to_numpy(msg)
    except ImageConversionError as error:
        frame.error = str(error)
    except Exception as error:  # noqa: BLE001 - any deserialiser failure is a damaged message
        frame.error = f"cannot deserialize {connection.msgtype}: {type(error).__name__}: {error}"
    return frame


class MessagePump:
    """Reads ``reader`` in a thread; iterate to get Frame / Passthrough / ReadFailure items in bag order.

    Messages whose connection ``is_image`` accepts are converted to numpy: CompressedImage payloads
    by ``workers`` threads, raw Images in the reader thread (a view or one colour conversion is
    cheaper than the hand-over). At most ``depth`` messages are in flight. Other topics are handed
    out as Passthrough when ``copy_others``.
    """

    def __init__(
        self,
        reader: Any,
        is_image: Callable[[Any], bool],
        copy_others: bool = False,
        start: int | None = None,
        stop: int | None = None,
        workers: int = 2,
        depth: int = 64,
    ):
        self.reader = reader
        self.is_image = is_image
        self.copy_others = copy_others
        self.start, self.stop = start, stop
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="bag-decode")
        self._thread = threading.Thread(target=self._run, name="bag-reader", daemon=True)

    def __enter__(self) -> MessagePump:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        last: tuple[str, int] | None = None
        try:
            connections = [] if self.copy_others else [c for c in self.reader.connections if self.is_image(c)]
            if getattr(self.reader, "discovers_topics", False):
                connections = []  # its channels are discovered while reading: filtered below
            for connection, time, raw in self.reader.messages(connections, start=self.start, stop=self.stop):
                if self.is_image(connection) and connection.msgtype == COMPRESSED_TYPE:
                    item: Any = self._pool.submit(decode_frame, self.reader, connection, time, raw)
                elif self.is_image(connection):  # raw pixels: cheaper to convert here than to hand over
                    item = decode_frame(self.reader, connection, time, raw)
                elif self.copy_others:
                    item = Passthrough(connection, time, raw)
                else:
                    continue
                last = (connection.topic, time)
                if not self._put(item):
                    return
            damage = getattr(self.reader, "damage", None)
            if damage:
                self._put(ReadFailure(damage, last))
        except Exception as error:  # noqa: BLE001 - storage errors of every kind end the stream
            self._put(ReadFailure(f"{type(error).__name__}: {error}", last))
        finally:
            self._put(None)

    def __iter__(self) -> Iterator[Frame | Passthrough | ReadFailure]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            yield item.result() if isinstance(item, Future) else item
