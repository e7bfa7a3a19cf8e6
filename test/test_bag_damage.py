"""Bags as a killed recorder or a damaged disk leaves them: every message that can be read is read.

Each test writes its bag (test/bag_files.py) and damages it itself: a folder without metadata.yaml
(split or not, its last .mcap cut short), a split bag, a .db3 with a random data page, b-tree leaf
page or timestamp-index page, a missing folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags")

from bag_files import (  # noqa: E402
    BagImage,
    corrupt_bytes,
    corrupt_page,
    kill_recorder,
    mcap_chunks,
    sqlite_pages,
    write_image_bag,
    write_split_bag,
)

from superpoint_ros.bag_reader import (  # noqa: E402
    BagError,
    MessagePump,
    ReadFailure,
    format_time,
    open_bag,
    reader_losses,
)
from superpoint_ros.bag_recovery import TruncatedMcap  # noqa: E402
from superpoint_ros.extract_bag import auto_batch_size, extract_bag, main  # noqa: E402
from superpoint_training.model.extractor import Extractor  # noqa: E402

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000
FRAMES = 20


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    """Untrained weights: these tests count and place frames, they do not compare features."""
    return Extractor("untrained", "cpu", max_keypoints=32, warmup=False)


@pytest.fixture(scope="module")
def images(photo_gray) -> list[BagImage]:
    """20 raw mono8 frames of 120x160 (a row of a .db3 spills over several pages), one crop each."""
    return [BagImage("/cam/image", T0 + i * STEP, np.ascontiguousarray(photo_gray[4 * i : 4 * i + 120, 6 * i : 6 * i + 160]),
                     "mono8") for i in range(FRAMES)]  # fmt: skip


def frame_times(output: Path) -> list[int]:
    from rosbags.highlevel import AnyReader

    with AnyReader([output]) as reader:
        return [time for _, time, _ in reader.messages()]


def extract(inputs, output, extractor, batch_size=FRAMES, **options):
    """One device call for all frames: the tests are about reading, and a CPU call costs ~0.3 s under load."""
    return extract_bag(inputs, output, extractor, progress=False, batch_size=batch_size, **options)


# -- a killed recorder: no metadata.yaml ------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_split_bag_without_metadata_reads_every_file_in_order(storage, tmp_path, extractor, images):
    bag = tmp_path / "rec"
    files = write_split_bag(bag, storage, [images[:8], images[8:16], images[16:]])
    complete = extract([bag], tmp_path / "whole", extractor)  # with its metadata: every message
    assert complete.complete and complete.frames == FRAMES
    kill_recorder(bag)  # the last .mcap cut to 60%; a .db3 stays readable
    summary = extract([bag], tmp_path / "out", extractor)
    report = "\n".join(summary.lines())
    assert report.count("metadata.yaml") == 1 and "has no metadata.yaml" in report
    assert all(f.name in report for f in files)
    times = frame_times(tmp_path / "out")
    assert times == [item.time for item in images[: len(times)]]  # in order, nothing skipped
    if storage == "mcap":
        assert 16 < summary.frames < FRAMES and not summary.complete and "STOPPED EARLY" in report
    else:
        assert summary.frames == FRAMES and summary.complete


def test_killed_recording_of_one_file(tmp_path, extractor, images):
    bag = tmp_path / "rec"
    write_image_bag(bag, "mcap", images)
    kill_recorder(bag, keep=0.5)
    summary = extract([bag], tmp_path / "out", extractor)
    assert 0 < summary.frames < FRAMES and "truncated" in "\n".join(summary.lines())
    assert frame_times(tmp_path / "out") == [item.time for item in images[: summary.frames]]


def test_split_bag_with_metadata_and_topic_selection(tmp_path, extractor, images):
    bag = tmp_path / "rec"
    write_split_bag(bag, "sqlite3", [images[:10], images[10:]])
    summary = extract([bag], tmp_path / "out", extractor, topics=["cam/image"], start=0.5)
    assert summary.complete and summary.frames == FRAMES - 5
    assert frame_times(tmp_path / "out") == [item.time for item in images[5:]]


# -- damaged sqlite3 pages ----------------------------------------------------------------------
def damaged_db3(tmp_path: Path, images: list[BagImage], kind: str) -> tuple[Path, int]:
    """A sqlite3 bag folder with one page of ``kind`` overwritten, and how many rows that page held."""
    bag = tmp_path / f"bag_{kind}"
    write_image_bag(bag, "sqlite3", images)
    (db,) = bag.glob("*.db3")
    pages = sqlite_pages(db)
    if kind == "data":  # a page in the middle of the image bytes (overflow pages of the rows)
        candidates = [p for p in pages if p[1] == "messages" and p[2] == "overflow"]
    elif kind == "leaf":  # a leaf of the messages table: the rows' first bytes (topic, time, data start)
        candidates = [p for p in pages if p[1] == "messages" and p[2] == "leaf"]
    else:  # the timestamp index, through which rosbags reads
        candidates = [p for p in pages if p[1] not in ("messages", "topics") and p[2] in ("leaf", "internal")
                      and "idx" in p[1]]
    page = candidates[len(candidates) // 2]
    corrupt_page(db, page[0])
    return bag, (page[3] if kind == "leaf" else 1 if kind == "data" else 0)


@pytest.mark.parametrize("kind", ["data", "leaf", "index"])
def test_damaged_sqlite_pages_cost_only_their_rows(kind, tmp_path, extractor, images, capsys):
    bag, lost = damaged_db3(tmp_path, images, kind)
    (db,) = bag.glob("*.db3")
    for source in (bag, db):  # the folder and the bare file read the same
        out = tmp_path / f"out_{source.suffix or 'folder'}"
        summary = extract([source], out, extractor)
        report = "\n".join(summary.lines())
        assert summary.frames == FRAMES - lost, report
        assert summary.frames >= {"data": 19, "leaf": 17, "index": 17}[kind]  # what the issue measured
        times = frame_times(out)
        assert times == sorted(times) and set(times) <= {item.time for item in images}
        if lost:
            assert not summary.complete and f"skipped {lost} unreadable message" in report
            assert ".recover" in report and "at 17000000" in report  # where: the time (and topic where readable)
        else:
            assert summary.complete, report
    code = main([str(bag), "--output", str(tmp_path / "cli"), "--weights", "untrained", "--device", "cpu", "-q",
                 "--batch-size", str(FRAMES)])
    out = capsys.readouterr().out
    assert code == (1 if lost else 0) and f"wrote {FRAMES - lost} Features messages" in out
    assert ("DAMAGED:" in out) == bool(lost)


def test_unopenable_db3_names_the_recover_hint_also_for_a_folder(tmp_path, extractor, images):
    bag = tmp_path / "bag"
    write_image_bag(bag, "sqlite3", images[:3])
    (db,) = bag.glob("*.db3")
    corrupt_page(db, 1)  # the header and the schema: nothing can be read
    for source in (bag, db):
        with pytest.raises(BagError, match=r"\.recover"):
            extract([source], tmp_path / "out", extractor)
    assert not (tmp_path / "out").exists()


# -- a damaged .mcap chunk ------------------------------------------------------------------------
def test_damaged_mcap_chunk_costs_only_its_messages(tmp_path, photo_rgb):
    """4 KB of noise at the start of one chunk (rosbags writes 1 MiB chunks) loses that chunk's frames
    only, with the summary intact (read through the index, then record by record) and without it.
    (Noise inside pixel data is not detectable: rosbags writes no chunk checksum.)"""
    frames = [BagImage("/cam/rgb", T0 + i * STEP, np.ascontiguousarray(np.roll(photo_rgb, 7 * i, axis=1)), "rgb8")
              for i in range(24)]  # 230 KB each: 6 chunks
    write_image_bag(tmp_path / "bag", "mcap", frames)
    (file,) = (tmp_path / "bag").glob("*.mcap")
    chunks = mcap_chunks(file)
    assert len(chunks) >= 4
    offset, length = chunks[len(chunks) // 2]
    corrupt_bytes(file, offset + 25)  # after its start and end times: its sizes, checksum, first records
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(file.read_bytes()[: chunks[-1][0] + chunks[-1][1]])  # every chunk, no summary
    for source in (tmp_path / "bag", cut):
        reader, _ = open_bag([source])
        try:
            with MessagePump(reader, lambda c: True) as pump:
                items = list(pump)
            _, losses = reader_losses(reader)
        finally:
            reader.close()
        times = [item.time for item in items if not isinstance(item, ReadFailure)]
        lost = [item.time for item in frames if item.time not in times]
        assert 0 < len(lost) <= 5 and lost == list(range(lost[0], lost[-1] + 1, STEP)), (source, lost)
        assert times == [item.time for item in frames if item.time not in lost]
        assert len(losses) == 1 and "damaged chunk" in losses[0] and format_time(lost[0]) in losses[0]


# -- missing inputs --------------------------------------------------------------------------------
def test_missing_folder_or_file_is_no_such_bag_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import superpoint_training.common.cli as cli_options

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(cli_options, "extractor_from_args", no_model)
    for missing in (tmp_path / "no_folder", tmp_path / "no_file.mcap", tmp_path / "no_file.db3"):
        assert main([str(missing), "--output", str(tmp_path / "out")]) == 2
        assert f"error: no such bag: {missing}" in capsys.readouterr().err
        with pytest.raises(BagError, match="no such bag"):
            open_bag([missing])


# -- the default batch ----------------------------------------------------------------------------
def test_default_batch_by_device_and_free_memory(tmp_path, extractor, images, monkeypatch):
    assert auto_batch_size("cpu", 480, 640) == 1
    write_image_bag(tmp_path / "bag", "mcap", images[:3])
    assert extract([tmp_path / "bag"], tmp_path / "out", extractor, batch_size=None).batch_size == 1
    gib = 1 << 30
    for free, expected in ((64 * gib, 16), (4 * gib, 8), (100 << 20, 1)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 80 * gib))
        assert auto_batch_size("cuda", 480, 640) == expected


# -- the mcap library's reader as the alternative -------------------------------------------------
def test_mcap_library_recovers_no_more_than_the_record_walker(tmp_path, images, photo_rgb):
    """Issue 12 asks to use the ``mcap`` library's reader where it recovers no fewer messages: on the
    same damaged files it recovers fewer (it drops the chunk being written), so the walker stays."""
    mcap = pytest.importorskip("mcap")
    from mcap.reader import make_reader

    def library_count(path: Path) -> int:
        count = 0
        try:
            with path.open("rb") as handle:
                for _ in make_reader(handle).iter_messages():
                    count += 1
        except Exception:  # noqa: BLE001 - the library raises when it meets the damage
            pass
        return count

    def walker_count(path: Path) -> int:
        reader = TruncatedMcap(path)
        reader.open()
        return sum(1 for _ in reader.messages())

    write_image_bag(tmp_path / "bag", "mcap", images)
    (file,) = (tmp_path / "bag").glob("*.mcap")
    data = file.read_bytes()
    assert library_count(file) == walker_count(file) == FRAMES
    counts = []
    for keep in (0.2, 0.5, 0.6, 0.9, 0.99):
        cut = tmp_path / f"cut{keep}.mcap"
        cut.write_bytes(data[: int(len(data) * keep)])
        counts.append((walker_count(cut), library_count(cut)))
    write_image_bag(tmp_path / "chunks", "mcap", [BagImage("/cam/rgb", T0 + i * STEP, photo_rgb) for i in range(24)])
    (file,) = (tmp_path / "chunks").glob("*.mcap")
    offset, _ = mcap_chunks(file)[2]
    corrupt_bytes(file, offset + 25)  # a damaged chunk, summary intact
    counts.append((walker_count(file), library_count(file)))
    assert all(ours >= theirs for ours, theirs in counts), counts
    assert sum(ours for ours, _ in counts) > sum(theirs for _, theirs in counts), (mcap.__name__, counts)
