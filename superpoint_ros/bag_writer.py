"""Writing the bag tool's output: a ROS 2 bag (mcap or sqlite3) of Features messages, with ``rosbags``.

:class:`BagOutput` registers the package's ``Features`` type from its own ``msg/`` definitions,
copies other topics through (ROS 1 messages are converted to ROS 2 on the way), and always closes
the bag properly so that what was written stays readable. :func:`prepare_output` guards ``--force``.
"""

from __future__ import annotations

import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bag_reader import BagError, Passthrough
from .message_types import register_rosbags_types

FEATURES_TYPE = "superpoint_ros/msg/Features"
STORAGES = ("mcap", "sqlite3")


def prepare_output(path: Path, force: bool, inputs: list[Path]) -> None:
    """Refuse to overwrite ``path`` without ``force``; with it, remove an old bag or file there.

    A folder is only removed when it looks like a bag (metadata.yaml, .mcap, .db3 files only), so
    that a mistyped ``--output`` cannot delete unrelated data.
    """
    resolved = path.resolve()
    for source in inputs:
        src = source.resolve()
        if resolved == src or resolved in src.parents:
            raise BagError(f"output {path} would overwrite the input {source}")
    if not path.exists() and not path.is_symlink():
        return
    if not force:
        raise BagError(f"{path} exists (pass --force to replace it)")
    if path.is_dir() and not path.is_symlink():
        unexpected = [p.name for p in path.iterdir() if p.name != "metadata.yaml" and p.suffix not in (".mcap", ".db3")]
        if unexpected:
            raise BagError(f"{path} is a folder that does not look like a bag ({', '.join(unexpected[:5])}): "
                           "not removing it, choose another --output")
        shutil.rmtree(path)
    else:
        path.unlink()


def features_typestore() -> Any:
    """A ROS 2 (Jazzy) typestore with the package's Features and Tracks messages registered."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    register_rosbags_types(typestore)
    return typestore


class BagOutput:
    """A ROS 2 bag being written: Features topics plus, optionally, copies of other topics.

    Serialising and writing run in a background thread (in the order the calls were made), so
    that file I/O overlaps the extraction; a failure there is raised by the next call or by
    ``close()``. ``close()`` always finishes the file (index, summary, metadata.yaml), also after
    an error while reading the input, so the output stays a valid bag.
    """

    def __init__(self, path: Path, storage: str, reader: Any, depth: int = 64):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"output storage must be one of {STORAGES}, got {storage!r}")
        self.path = path
        self.reader = reader
        self.typestore = features_typestore()
        self.features_cls = self.typestore.types[FEATURES_TYPE]
        self._header_cls = self.typestore.types["std_msgs/msg/Header"]
        self._time_cls = self.typestore.types["builtin_interfaces/msg/Time"]
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._features: dict[str, Any] = {}
        self._copies: dict[tuple[str, str], tuple[Any, Callable]] = {}
        self.written = 0
        self.copied = 0
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._work, name="bag-writer", daemon=True)
        self._thread.start()  # opens the bag: an SQLite connection only serves the thread that made it
        self._ready.wait()
        if self._error is not None:
            raise BagError(f"cannot create the bag {path}: {self._error}") from self._error

    def header(self, stamp: tuple[int, int], frame_id: str) -> Any:
        return self._header_cls(stamp=self._time_cls(sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id)

    def write_features(self, topic: str, time: int, msg: Any) -> None:
        """Write a Features message (of ``features_cls``) on ``topic`` at bag time ``time``."""
        self._submit(self._write_features, topic, time, msg)

    def copy(self, item: Passthrough) -> None:
        """Write a message of another topic, converted to ROS 2 CDR when the input is a ROS 1 bag."""
        self._submit(self._copy, item)

    def close(self) -> None:
        """Finish the queued writes and the file; re-raises a failure of the writer thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- the writer thread ----------------------------------------------------------------------
    def _submit(self, job: Callable, *args: Any) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put((job, args))

    def _work(self) -> None:
        try:
            self.writer.open()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            self._error = error
            return
        finally:
            self._ready.set()
        while (task := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    task[0](*task[1])
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                    self._error = error
        try:
            self.writer.close()
        except BaseException as error:  # noqa: BLE001
            self._error = self._error or error

    def _write_features(self, topic: str, time: int, msg: Any) -> None:
        connection = self._features.get(topic)
        if connection is None:
            connection = self.writer.add_connection(topic, FEATURES_TYPE, typestore=self.typestore)
            self._features[topic] = connection
        self.writer.write(connection, time, self.typestore.serialize_cdr(msg, FEATURES_TYPE))
        self.written += 1

    def _copy(self, item: Passthrough) -> None:
        key = (item.connection.topic, item.connection.msgtype)  # one output topic also across split files
        if key not in self._copies:
            from rosbags.convert.converter import create_connections_converters

            connmap, convmap = create_connections_converters([item.connection], None, self.reader, self.writer)
            self._copies[key] = (next(iter(connmap.values())), convmap[item.connection.msgtype])
        connection, convert = self._copies[key]
        self.writer.write(connection, item.time, convert(item.raw))
        self.copied += 1
