"""Reading and writing bags for the bag tool, with the ``rosbags`` library (no rclpy, no ROS install).

- :func:`open_bag` opens ROS 2 bags (a folder with ``metadata.yaml``, or a bare ``.mcap``/``.db3``
  file) and ROS 1 ``.bag`` files. An ``.mcap`` file that rosbags cannot open (no summary and
  footer because the recorder was killed or the copy was cut short, or a damaged index) is read
  instead by :class:`TruncatedMcap`, record by record up to the first damaged byte.
- :class:`MessagePump` reads messages in a background thread and decodes images in a small thread
  pool (OpenCV and the deserialiser release the GIL for the heavy parts), handing them out in bag
  order through a bounded queue, so that decoding overlaps inference and memory stays bounded.
  A read error ends the stream with an :class:`ReadFailure` item that names where it happened.
- :class:`BagOutput` writes a ROS 2 bag (mcap or sqlite3) with the package's ``Features`` type
  registered from its own ``msg/`` definitions, copies other topics through (ROS 1 messages are
  converted to ROS 2 on the way), and always closes the bag properly so that what was written
  stays readable.
"""

from __future__ import annotations

import queue
import shutil
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .image_conversion import ImageConversionError, compressed_msg_to_numpy, image_msg_to_numpy
from .message_types import register_rosbags_types

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
FEATURES_TYPE = "superpoint_ros/msg/Features"
STORAGES = ("mcap", "sqlite3")
_MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagError(RuntimeError):
    """A bag that cannot be opened or written (the message names the file and the reason)."""


def format_time(ns: int, start_ns: int | None = None) -> str:
    """``1700000012.345678901 s`` plus the offset from the bag start when known."""
    text = f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d} s"
    if start_ns is not None:
        text += f" ({(ns - start_ns) / 1e9:.3f} s after the start)"
    return text


def input_storage(path: Path) -> str:
    """"mcap", "sqlite3" or "ros1" from a bag path (folder with metadata.yaml, .mcap, .db3, .bag)."""
    if path.is_dir():
        if any(path.glob("*.mcap")):
            return "mcap"
        if any(path.glob("*.db3")):
            return "sqlite3"
        raise BagError(f"{path}: a folder without .mcap or .db3 files is not a ROS 2 bag")
    suffix = path.suffix.lower()
    kinds = {".mcap": "mcap", ".db3": "sqlite3", ".bag": "ros1"}
    if suffix not in kinds:
        raise BagError(f"{path}: unknown bag type {suffix!r} (expected a ROS 2 bag folder, .mcap, .db3 or .bag)")
    return kinds[suffix]


# -- reading ------------------------------------------------------------------------------------
def open_bag(paths: list[Path]) -> tuple[Any, str | None]:
    """An open reader over ``paths`` with AnyReader's interface (see :class:`TruncatedMcap`).

    Returns ``(reader, note)``; ``note`` is None, or says that the bag is truncated and is read
    in recovery mode.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    for path in paths:
        if not path.exists():
            raise BagError(f"no such bag: {path}")
    reader = AnyReader(paths, default_typestore=get_typestore(Stores.ROS2_JAZZY))
    try:
        reader.open()
        return reader, None
    except (AnyReaderError, OSError, ValueError, KeyError) as error:
        mcap = _single_mcap(paths)
        if mcap is None or not TruncatedMcap.starts_like_mcap(mcap):
            hints = {".bag": " (a ROS 1 bag cut short needs `rosbag reindex` first)",
                     ".db3": " (a damaged SQLite file may be rescued with `sqlite3 in.db3 .recover | sqlite3 out.db3`)"}
            hint = hints.get(paths[0].suffix, "")
            raise BagError(f"cannot open {', '.join(map(str, paths))}: {error}{hint}") from error
        recovered = TruncatedMcap(mcap)
        recovered.open()
        return recovered, (f"{mcap} cannot be opened through its index ({error}; truncated?): "
                           "reading its records in order up to the damage")


def _single_mcap(paths: list[Path]) -> Path | None:
    if len(paths) != 1:
        return None
    path = paths[0]
    if path.is_dir():
        files = sorted(path.glob("*.mcap"))
        return files[0] if len(files) == 1 else None
    return path if path.suffix.lower() == ".mcap" else None


def _zstd() -> Any:
    """The zstd module rosbags itself uses (standard library from 3.14, backports.zstd before), or None."""
    try:
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        return zstd
    except ImportError:
        return None


def _lz4() -> Any:
    try:
        import lz4.frame

        return lz4.frame
    except ImportError:
        return None


def _decompressors() -> dict[str, Callable[[bytes], bytes]]:
    table: dict[str, Callable[[bytes], bytes]] = {"": lambda data: data}
    if (zstd := _zstd()) is not None:
        table["zstd"] = zstd.decompress
    if (lz4 := _lz4()) is not None:
        table["lz4"] = lz4.decompress
    return table


class TruncatedMcap:
    """Reads the records of a ROS 2 ``.mcap`` file in file order, without its summary or index.

    The MCAP data section is a sequence of ``opcode (u8), length (u64), content`` records (schema,
    channel, message, chunk of those, ...; see mcap.dev/spec). This reader walks them from the
    start and stops at the first record that is cut short or fails its checksum, so everything
    written before the damage can be used. ``damage`` then holds the reason and the byte offset.
    Channels become known as they appear; ``connections`` grows while reading.
    """

    is2 = True

    def __init__(self, path: Path):
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.typestore = get_typestore(Stores.EMPTY)
        self.connections: list[Any] = []
        self.damage: str | None = None
        self._schemas: dict[int, tuple[str, str, str]] = {}
        self._channels: dict[int, Any] = {}
        self._first_time: int | None = None
        self._decompress = _decompressors()

    @staticmethod
    def starts_like_mcap(path: Path) -> bool:
        try:
            with path.open("rb") as handle:
                return handle.read(8) == _MCAP_MAGIC
        except OSError:
            return False

    def open(self) -> None:
        with self.path.open("rb") as handle:
            if handle.read(8) != _MCAP_MAGIC:
                raise BagError(f"{self.path}: not an MCAP file")

    def close(self) -> None:
        pass

    @property
    def start_time(self) -> int:
        """Log time of the first message (found by reading up to it)."""
        if self._first_time is None:
            for _ in self._records(stop_after_first=True):
                break
        return self._first_time if self._first_time is not None else 0

    @property
    def topics(self) -> dict[str, Any]:
        return {c.topic: c for c in self.connections}

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def messages(self, connections: Any = (), start: int | None = None, stop: int | None = None) -> Iterator[tuple]:
        """(connection, log time ns, raw CDR) in file order; ``connections`` filters by topic."""
        topics = {c.topic for c in connections} if connections else None
        for connection, timestamp, data in self._records():
            if topics is not None and connection.topic not in topics:
                continue
            if (start is not None and timestamp < start) or (stop is not None and timestamp >= stop):
                continue
            yield connection, timestamp, data

    # -- record parsing -------------------------------------------------------------------------
    def _records(self, stop_after_first: bool = False) -> Iterator[tuple]:
        with self.path.open("rb") as handle:
            handle.seek(8)
            while True:
                offset = handle.tell()
                head = handle.read(9)
                if not head:
                    self.damage = self.damage or f"file ends at byte {offset} without the MCAP footer"
                    return
                if len(head) < 9:
                    self.damage = f"record header cut short at byte {offset}"
                    return
                opcode, length = struct.unpack("<BQ", head)
                body = handle.read(length)
                cut = len(body) < length
                if opcode in (0x02, 0x0F) and not cut:  # footer, data end: the data section is complete
                    return
                try:
                    if opcode == 0x06:
                        items = self._chunk(body, partial=cut)
                    else:
                        items = [] if cut else self._record(opcode, body)
                    for item in items:
                        yield item
                        if stop_after_first:
                            return
                except (struct.error, ValueError, KeyError, UnicodeDecodeError, BagError) as error:
                    self.damage = f"damaged record (opcode 0x{opcode:02x}) at byte {offset}: {error}"
                    return
                if cut:
                    self.damage = (f"record (opcode 0x{opcode:02x}) at byte {offset} cut short: {len(body)} of "
                                   f"{length} bytes")
                    return

    def _chunk(self, body: bytes, partial: bool = False) -> list[tuple]:
        """The records of a chunk; of a chunk cut short (``partial``), those that are complete."""
        _, _, size, crc = struct.unpack_from("<QQQI", body, 0)
        compression, pos = _string(body, 28)
        (compressed_size,) = struct.unpack_from("<Q", body, pos)
        pos += 8
        if partial:
            data = _decompress_prefix(compression, body[pos:])
        else:
            if compression not in self._decompress:
                raise BagError(f"chunk compression {compression!r} is not supported")
            data = self._decompress[compression](body[pos : pos + compressed_size])
            if len(data) != size or (crc and zlib.crc32(data) != crc):
                raise BagError("chunk size or checksum mismatch")
        items: list[tuple] = []
        pos = 0
        while pos + 9 <= len(data):
            opcode, length = struct.unpack_from("<BQ", data, pos)
            if pos + 9 + length > len(data):
                if partial:
                    break
                raise BagError("record inside a chunk runs past the chunk")
            items.extend(self._record(opcode, data[pos + 9 : pos + 9 + length]))
            pos += 9 + length
        return items

    def _record(self, opcode: int, body: bytes) -> list[tuple]:
        if opcode == 0x03:  # schema
            (schema_id,) = struct.unpack_from("<H", body, 0)
            name, pos = _string(body, 2)
            encoding, pos = _string(body, pos)
            (size,) = struct.unpack_from("<I", body, pos)
            self._schemas[schema_id] = (name, encoding, body[pos + 4 : pos + 4 + size].decode())
        elif opcode == 0x04:  # channel
            channel_id, schema_id = struct.unpack_from("<HH", body, 0)
            topic, pos = _string(body, 4)
            if channel_id not in self._channels:
                self._add_channel(channel_id, topic, *self._schemas[schema_id])
        elif opcode == 0x05:  # message
            channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
            if self._first_time is None:
                self._first_time = log_time
            return [(self._channels[channel_id], log_time, body[22:])]
        return []

    def _add_channel(self, channel_id: int, topic: str, msgtype: str, encoding: str, text: str) -> None:
        from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        if msgtype not in self.typestore.fielddefs:
            if encoding == "ros2msg":
                types = get_types_from_msg(text, msgtype)
            else:
                types = {}
                for part in text.split("=" * 80 + "\n"):
                    idl = part.split("\n", 1)[1] if part.startswith("IDL: ") else part
                    if idl.strip():
                        types.update(get_types_from_idl(idl))
            self.typestore.register(types)
        fmt = MessageDefinitionFormat.MSG if encoding == "ros2msg" else MessageDefinitionFormat.IDL
        connection = Connection(
            id=len(self.connections) + 1,
            topic=topic,
            msgtype=msgtype,
            msgdef=MessageDefinition(fmt, text),
            digest="",
            msgcount=0,
            ext=ConnectionExtRosbag2("cdr", []),
            owner=self,
        )
        self._channels[channel_id] = connection
        self.connections.append(connection)


def _decompress_prefix(compression: str, data: bytes) -> bytes:
    """As much of a cut-short compressed chunk as decompresses (nothing when that fails)."""
    if compression == "":
        return data
    zstd, lz4 = _zstd(), _lz4()
    try:
        if compression == "zstd" and zstd is not None:
            return zstd.ZstdDecompressor().decompress(data)
        if compression == "lz4" and lz4 is not None:
            return lz4.LZ4FrameDecompressor().decompress(data)
    except Exception:  # noqa: BLE001 - a damaged stream recovers nothing, which is reported
        return b""
    return b""


def _string(buffer: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", buffer, pos)
    end = pos + 4 + size
    if end > len(buffer):
        raise BagError("string runs past its record")
    return buffer[pos + 4 : end].decode(), end


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
    cheaper than the hand-over). At most ``depth`` messages are in flight. Other topics are handed out as Passthrough when ``copy_others``.
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
            if isinstance(self.reader, TruncatedMcap):
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


# -- writing ------------------------------------------------------------------------------------
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
        self._copies: dict[int, tuple[Any, Callable]] = {}
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
        key = id(item.connection)
        if key not in self._copies:
            from rosbags.convert.converter import create_connections_converters

            connmap, convmap = create_connections_converters([item.connection], None, self.reader, self.writer)
            self._copies[key] = (next(iter(connmap.values())), convmap[item.connection.msgtype])
        connection, convert = self._copies[key]
        self.writer.write(connection, item.time, convert(item.raw))
        self.copied += 1


# -- writing test and benchmark bags ----------------------------------------------------------------
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

    from .image_conversion import numpy_to_image_fields

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

    ``storage``: "mcap" or "sqlite3" (a ROS 2 bag folder) or "ros1" (a ``.bag`` file). Used by the
    tests and the benchmark to make bags without ROS.
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
