"""Readers for damaged ROS 2 storage files, with the interface of ``rosbags``' AnyReader.

- :class:`TruncatedMcap` walks the records of an ``.mcap`` file from the start, without its summary
  or index, up to the end of what was written (a killed recorder leaves no summary or footer; a
  copy cut short ends mid-chunk), skipping chunks whose content is damaged. The ``mcap`` library's readers recover fewer messages from such files: they
  drop the whole chunk being written (with the ``rosbags`` writer's single chunk, every message);
  ``test/test_bag_damage.py`` compares the two on the same files.
- :class:`Sqlite3Rows` reads a ``.db3`` file row by row by its row ids, without the timestamp index,
  and skips the rows whose pages SQLite cannot read (``losses`` says which), so one damaged page costs
  the messages stored on it, not everything after it.

Both keep ``damage`` (why reading stopped early, or None) and ``losses`` (messages that were skipped).
"""

from __future__ import annotations

import sqlite3
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_HINT = "a damaged SQLite file may be rescued with `sqlite3 in.db3 .recover | sqlite3 out.db3`"


class BagError(RuntimeError):
    """A bag that cannot be opened or written (the message names the file and the reason)."""


def format_time(ns: int, start_ns: int | None = None) -> str:
    """``1700000012.345678901 s`` plus the offset from the bag start when known."""
    text = f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d} s"
    if start_ns is not None:
        text += f" ({(ns - start_ns) / 1e9:.3f} s after the start)"
    return text


def _register(typestore: Any, msgtype: str, encoding: str, text: str) -> None:
    """Add ``msgtype`` (and the types it uses) from a ros2msg or ros2idl definition, if missing."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    if msgtype in typestore.fielddefs or not text.strip():
        return
    if encoding == "ros2msg":
        types = get_types_from_msg(text, msgtype)
    else:
        types = {}
        for part in text.split("=" * 80 + "\n"):
            idl = part.split("\n", 1)[1] if part.startswith("IDL: ") else part
            if idl.strip():
                types.update(get_types_from_idl(idl))
    typestore.register({k: v for k, v in types.items() if k not in typestore.fielddefs})


def _connection(owner: Any, number: int, topic: str, msgtype: str, encoding: str = "", text: str = "",
                msgcount: int = 0) -> Any:
    from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat

    fmt = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}.get(
        encoding, MessageDefinitionFormat.NONE)
    return Connection(id=number, topic=topic, msgtype=msgtype, msgdef=MessageDefinition(fmt, text), digest="",
                      msgcount=msgcount, ext=ConnectionExtRosbag2("cdr", []), owner=owner)


class _Recovered:
    """What both recovery readers share: the AnyReader-like surface over ``connections``."""

    is2 = True
    discovers_topics = False  # True when topics only become known while reading

    def __init__(self, path: Path):
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.typestore = get_typestore(Stores.EMPTY)
        self.connections: list[Any] = []
        self.damage: str | None = None
        self.losses: list[str] = []

    @property
    def topics(self) -> dict[str, Any]:
        return {c.topic: c for c in self.connections}

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)


# -- mcap ---------------------------------------------------------------------------------------
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


class TruncatedMcap(_Recovered):
    """Reads the records of a ROS 2 ``.mcap`` file in file order, without its summary or index.

    The MCAP data section is a sequence of ``opcode (u8), length (u64), content`` records (schema,
    channel, message, chunk of those, ...; see mcap.dev/spec). This reader walks them from the
    start and stops at the first record that is cut short or unreadable, so everything written
    before it can be used; ``damage`` then holds the reason and the byte offset. A chunk whose
    content fails its checksum or decompression is skipped (its length is intact) and named in
    ``losses``.
    Channels become known as they appear; ``connections`` grows while reading.
    """

    discovers_topics = True

    def __init__(self, path: Path):
        super().__init__(path)
        self._schemas: dict[int, tuple[str, str, str]] = {}
        self._channels: dict[int, Any] = {}
        self._first_time: int | None = None
        self._decompress = _decompressors()

    @staticmethod
    def starts_like_mcap(path: Path) -> bool:
        try:
            with path.open("rb") as handle:
                return handle.read(8) == MCAP_MAGIC
        except OSError:
            return False

    def open(self) -> None:
        if not self.starts_like_mcap(self.path):
            raise BagError(f"{self.path}: not an MCAP file")

    def close(self) -> None:
        pass

    @property
    def start_time(self) -> int:
        """Log time of the first message (found by reading up to it)."""
        if self._first_time is None:
            for _ in self._records(stop_after_first=True):
                break
        return self._first_time if self._first_time is not None else 2**63 - 1

    end_time = 0  # unknown without the summary

    def messages(self, connections: Any = (), start: int | None = None, stop: int | None = None) -> Iterator[tuple]:
        """(connection, log time ns, raw CDR) in file order; ``connections`` filters by topic."""
        topics = {c.topic for c in connections} if connections else None
        for connection, timestamp, data in self._records():
            if topics is not None and connection.topic not in topics:
                continue
            if (start is not None and timestamp < start) or (stop is not None and timestamp >= stop):
                continue
            yield connection, timestamp, data

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
                    if opcode == 0x06 and not cut:  # its length is intact: the next record can still be read
                        self._lose_chunk(offset, body, error)
                        continue
                    self.damage = f"damaged record (opcode 0x{opcode:02x}) at byte {offset}: {error}"
                    return
                if cut:
                    self.damage = (f"record (opcode 0x{opcode:02x}) at byte {offset} cut short: {len(body)} of "
                                   f"{length} bytes")
                    return

    def _lose_chunk(self, offset: int, body: bytes, error: Exception) -> None:
        start, end = struct.unpack_from("<QQ", body, 0) if len(body) >= 16 else (None, None)
        times = f" (messages from {format_time(start)} to {format_time(end)})" if start is not None else ""
        loss = f"{self.path.name}: skipped the damaged chunk at byte {offset}{times}: {error}"
        if loss not in self.losses:
            self.losses.append(loss)

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
                msgtype, encoding, text = self._schemas[schema_id]
                _register(self.typestore, msgtype, encoding, text)
                connection = _connection(self, len(self.connections) + 1, topic, msgtype, encoding, text)
                self._channels[channel_id] = connection
                self.connections.append(connection)
        elif opcode == 0x05:  # message
            channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
            if self._first_time is None:
                self._first_time = log_time
            return [(self._channels[channel_id], log_time, body[22:])]
        return []


# -- sqlite3 ------------------------------------------------------------------------------------
class Sqlite3Rows(_Recovered):
    """Reads a ROS 2 ``.db3`` file row by row, in time order, skipping rows that cannot be read.

    ``open()`` lists the messages (row id, topic, time) from the table itself: a full scan, and,
    where a damaged page ends the scan, one look-up per row id up to the largest id (from the table
    or the timestamp index). ``messages()`` then reads each row's data by its id; a row on a damaged
    page (its b-tree leaf or one of its overflow pages) is skipped and counted in ``losses``.
    """

    def __init__(self, path: Path):
        super().__init__(path)
        self._db: sqlite3.Connection | None = None
        self._rows: list[tuple[int, int, int]] = []  # (time, row id, topic id), time order
        self._by_topic: dict[int, Any] = {}
        self._unlisted: dict[int, int | None] = {}  # row id -> time (from the index) of unreadable rows

    def open(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"messages", "topics"} <= tables:
                raise BagError(f"{self.path}: no messages and topics tables (not a ROS 2 bag)")
            definitions = {}
            if "message_definitions" in tables:
                query = "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions"
                definitions = {name: (encoding, text) for name, encoding, text in self._db.execute(query)}
            topics = self._db.execute("SELECT id, name, type FROM topics ORDER BY id").fetchall()
        except sqlite3.DatabaseError as error:
            self.close()
            raise BagError(f"cannot open {self.path}: {error} ({SQLITE_HINT})") from error
        for msgtype, (encoding, text) in definitions.items():
            try:
                _register(self.typestore, msgtype, encoding, text)
            except Exception:  # noqa: BLE001 - a damaged definition: the ROS 2 types below may still serve
                pass
        defaults = get_typestore(Stores.ROS2_JAZZY).fielddefs
        self.typestore.register({k: v for k, v in defaults.items() if k not in self.typestore.fielddefs})
        self._list_rows()
        counts: dict[int, int] = {}
        for _, _, topic_id in self._rows:
            counts[topic_id] = counts.get(topic_id, 0) + 1
        for topic_id, name, msgtype in topics:
            connection = _connection(self, topic_id, name, msgtype, *definitions.get(msgtype, ("", "")),
                                     msgcount=counts.get(topic_id, 0))
            self._by_topic[topic_id] = connection
            self.connections.append(connection)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def start_time(self) -> int:
        return self._rows[0][0] if self._rows else 2**63 - 1

    @property
    def end_time(self) -> int:
        return self._rows[-1][0] + 1 if self._rows else 0

    def _list_rows(self) -> None:
        assert self._db is not None
        rows: dict[int, tuple[int, int]] = {}
        try:
            for row_id, topic_id, time in self._db.execute(
                    "SELECT id, topic_id, timestamp FROM messages NOT INDEXED ORDER BY id"):
                rows[row_id] = (time, topic_id)
            complete = True
        except sqlite3.DatabaseError:
            complete = False
        if not complete:
            indexed = self._indexed_times()
            for row_id in range(1, max([*indexed, *rows], default=0) + 1):
                if row_id in rows:
                    continue
                try:
                    found = self._db.execute("SELECT topic_id, timestamp FROM messages WHERE id = ?", (row_id,)).fetchone()
                except sqlite3.DatabaseError:
                    self._unlisted[row_id] = indexed.get(row_id)
                    continue
                if found is not None:
                    rows[row_id] = (found[1], found[0])
        self._rows = sorted((time, row_id, topic_id) for row_id, (time, topic_id) in rows.items())

    def _indexed_times(self) -> dict[int, int | None]:
        """Row id -> time from the timestamp index, and the largest row id (each may be damaged too)."""
        assert self._db is not None
        times: dict[int, int | None] = {}
        for query in ("SELECT max(id), NULL FROM messages", "SELECT id, timestamp FROM messages ORDER BY timestamp"):
            try:
                times.update((row_id, time) for row_id, time in self._db.execute(query) if row_id is not None)
            except sqlite3.DatabaseError:
                pass
        return times

    def messages(self, connections: Any = (), start: int | None = None, stop: int | None = None) -> Iterator[tuple]:
        """(connection, time ns, raw CDR) in time order; unreadable rows are skipped and counted."""
        assert self._db is not None
        wanted = {c.topic for c in connections} if connections else None
        lost: list[str] = []
        error_text = ""
        for time, row_id, topic_id in self._rows:
            connection = self._by_topic.get(topic_id)
            if connection is None or (wanted is not None and connection.topic not in wanted):
                continue
            if (start is not None and time < start) or (stop is not None and time >= stop):
                continue
            try:
                (data,) = self._db.execute("SELECT data FROM messages WHERE id = ?", (row_id,)).fetchone()
            except (sqlite3.DatabaseError, TypeError) as error:
                error_text = error_text or str(error)
                lost.append(f"row {row_id} ({connection.topic} at {format_time(time)})")
                continue
            yield connection, time, data
        if self._unlisted:
            error_text = error_text or "database disk image is malformed"
            lost += [f"row {row_id} (at {format_time(time)}, topic unreadable)" if time is not None else
                     f"row {row_id} (topic and time unreadable)" for row_id, time in self._unlisted.items()]
        if lost:
            shown = "; ".join(lost[:10]) + (f"; ... and {len(lost) - 10} more" if len(lost) > 10 else "")
            self.losses = [f"{self.path.name}: skipped {len(lost)} unreadable message{'s' * (len(lost) > 1)} "
                               f"({error_text}): {shown}; {SQLITE_HINT}"]
