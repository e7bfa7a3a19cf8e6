"""Bag extraction: every storage in, Features bag out, checked against the Extractor's own output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import assert_same_features, random_state_dict

pytest.importorskip("rosbags")

from bag_files import BagImage, image_message, write_image_bag  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from superpoint_ros.bag_reader import BagError  # noqa: E402
from superpoint_ros.bag_writer import features_typestore  # noqa: E402
from superpoint_ros.extract_bag import extract_bag, main  # noqa: E402
from superpoint_ros.features_message import features_from_message, features_to_message  # noqa: E402
from superpoint_ros.image_conversion import compressed_msg_to_numpy, image_msg_to_numpy  # noqa: E402
from superpoint_training.model.extractor import Extractor  # noqa: E402

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000  # 10 Hz
ENCODINGS = {"/cam/rgb": "rgb8", "/cam/bgr": "bgr8", "/cam/mono": "mono8", "/cam/mono16": "mono16",
             "/cam/bayer": "bayer_rggb8", "/cam/jpeg": "jpeg", "/cam/png": "png"}
FRAMES = 2
NOTES = [("/note", T0 + 5, "start"), ("/note", T0 + STEP + 5, "later")]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "random_v6.pth"
    torch.save(random_state_dict("v6"), path)
    return path


@pytest.fixture(scope="module")
def extractor(weights) -> Extractor:
    return Extractor(str(weights), "cpu", max_keypoints=128, warmup=False)


@pytest.fixture(scope="module")
def images(photo_rgb) -> list[BagImage]:
    """FRAMES frames per topic at 120x160, a different crop each, stamps 1 ms before the bag time."""
    items = []
    for i in range(FRAMES):
        for j, (topic, encoding) in enumerate(ENCODINGS.items()):
            rgb = cv2.resize(photo_rgb[i * 8 : i * 8 + 200, j * 8 : j * 8 + 280], (160, 120), interpolation=cv2.INTER_AREA)
            image = rgb if encoding in ("rgb8", "bgr8", "bayer_rggb8", "jpeg") else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            time = T0 + i * STEP + j * 1000
            items.append(BagImage(topic, time, image, encoding, divmod(time - 1_000_000, 1_000_000_000), f"frame{j}"))
    return items


class Reference(dict):
    """(topic, time) -> the Extractor's own output for that image as the converters decode it.

    Computed on first use, for all images in one call (the Extractor batches equal sizes).
    """

    def __init__(self, images: list[BagImage], extractor: Extractor):
        super().__init__()
        self.images = {(item.topic, item.time): item for item in images}
        self.extractor = extractor
        self.typestore = get_typestore(Stores.ROS2_JAZZY)

    def __missing__(self, key: tuple[str, int]):
        decoded = []
        for item in self.images.values():
            msgtype, msg = image_message(self.typestore, item)
            convert = compressed_msg_to_numpy if msgtype.endswith("CompressedImage") else image_msg_to_numpy
            decoded.append(convert(msg))
        for name, features in zip(self.images, self.extractor(decoded), strict=True):
            self[name] = features.numpy()
        return self[key]


@pytest.fixture(scope="module")
def reference(images, extractor) -> Reference:
    return Reference(images, extractor)


def bag_path(folder: Path, storage: str) -> Path:
    return folder / ("in.bag" if storage == "ros1" else f"in_{storage}")


@pytest.fixture(scope="module", params=["mcap", "sqlite3", "ros1"])
def bag(request, tmp_path_factory, images) -> tuple[str, Path]:
    """One frame of every encoding (several image sizes and types in one bag) and a String topic."""
    path = bag_path(tmp_path_factory.mktemp(f"bag_{request.param}"), request.param)
    write_image_bag(path, request.param, images[: len(ENCODINGS)], NOTES)
    return request.param, path


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag time, message)] of a ROS 2 bag, with the package's types registered."""
    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=features_typestore()) as reader:
        for connection, time, raw in reader.messages():
            out.setdefault(connection.topic, []).append((time, reader.deserialize(raw, connection.msgtype)))
    return out


def check_features(messages, images, reference, topics=None) -> None:
    """Every selected image has one Features message with its stamp, frame id, bag time and features."""
    expected = [item for item in images if topics is None or item.topic in topics]
    by_topic: dict[str, list[BagImage]] = {}
    for item in expected:
        by_topic.setdefault(item.topic, []).append(item)
    assert sorted(t for t in messages if t.endswith("/features")) == sorted(t + "/features" for t in by_topic)
    for topic, items in by_topic.items():
        got = messages[topic + "/features"]
        assert len(got) == len(items), topic
        for (time, msg), item in zip(got, items, strict=True):
            assert time == item.time
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == item.stamp
            assert msg.header.frame_id == item.frame_id
            features = features_from_message(msg)
            ref = reference[(item.topic, item.time)]
            assert features.image_size == (120, 160)
            assert len(ref) > 10, topic
            assert_same_features(features, ref)  # as sets: batches of other sizes may order ties differently


def test_every_storage_every_encoding(bag, tmp_path, extractor, images, reference):
    storage, path = bag
    summary = extract_bag([path], tmp_path / "out", extractor, batch_size=3, progress=False)
    assert summary.complete and summary.frames == len(ENCODINGS)
    messages = read_bag(tmp_path / "out")
    check_features(messages, images[: len(ENCODINGS)], reference)
    assert "/note" not in messages
    msg = messages["/cam/rgb/features"][0][1]
    assert msg.descriptor_dim == 256 and msg.descriptor_encoding == "float32"
    assert msg.weights == extractor.weights_description
    # output storage follows the input's (mcap for ROS 1 bags)
    assert any((tmp_path / "out").glob("*.db3" if storage == "sqlite3" else "*.mcap"))


def test_topic_filter_and_time_range(tmp_path, extractor, images, reference):
    path = bag_path(tmp_path, "mcap")
    write_image_bag(path, "mcap", images)
    topics = ["/cam/rgb", "cam/jpeg"]  # names without the leading slash are found too
    relative = extract_bag([path], tmp_path / "rel", extractor, topics=topics, start=0.05, end=0.2, progress=False)
    absolute = extract_bag([path], tmp_path / "abs", extractor, topics=topics, start=(T0 + 0.05e9) / 1e9,
                           storage="sqlite3", progress=False)
    later = [item for item in images if item.time >= T0 + 50_000_000]
    for summary, out in ((relative, "rel"), (absolute, "abs")):
        assert summary.complete and summary.frames == 2
        check_features(read_bag(tmp_path / out), later, reference, topics={"/cam/rgb", "/cam/jpeg"})
    assert any((tmp_path / "abs").glob("*.db3"))
    with pytest.raises(BagError, match="not in the bag"):
        extract_bag([path], tmp_path / "bad", extractor, topics=["/nope"], progress=False)
    with pytest.raises(BagError, match="needs '{topic}'"):
        extract_bag([path], tmp_path / "bad", extractor, features_topic="/features", progress=False)
    with pytest.raises(BagError, match="empty time range"):
        extract_bag([path], tmp_path / "bad", extractor, start=2, end=1, progress=False)


@pytest.mark.parametrize("storage", ["sqlite3", "ros1"])
def test_copy_other_topics(storage, tmp_path, extractor, images, reference):
    path = bag_path(tmp_path, storage)
    write_image_bag(path, storage, images, NOTES)
    summary = extract_bag([path], tmp_path / "out", extractor, topics=["/cam/mono"], copy_other_topics=True,
                          storage="mcap", progress=False)
    assert summary.complete and summary.frames == FRAMES
    messages = read_bag(tmp_path / "out")
    check_features(messages, images, reference, topics={"/cam/mono"})
    assert [(t, m.data) for t, m in messages["/note"]] == [(time, text) for _, time, text in NOTES]
    copied = messages["/cam/bgr"]  # unselected image topics are carried through (ROS 1 converted to ROS 2)
    originals = [item for item in images if item.topic == "/cam/bgr"]
    assert [t for t, _ in copied] == [item.time for item in originals]
    np.testing.assert_array_equal(image_msg_to_numpy(copied[0][1]), originals[0].image)
    assert "/cam/mono" not in messages
    assert summary.copied == len(NOTES) + (len(ENCODINGS) - 1) * FRAMES


def test_h5_output_and_int8(tmp_path, extractor, images):
    from superpoint_training.common.feature_io import FeatureStore

    path = bag_path(tmp_path, "mcap")
    write_image_bag(path, "mcap", images[:4])
    summary = extract_bag([path], tmp_path / "out", extractor, h5=tmp_path / "f.h5", descriptor_encoding="int8",
                          progress=False)
    assert summary.complete and summary.frames == 4
    messages = read_bag(tmp_path / "out")
    with FeatureStore.open(tmp_path / "f.h5") as store:
        assert len(store) == 4
        assert store.metadata["weights"] == extractor.weights_description
        for item in images[:4]:
            key = f"{item.topic.strip('/')}/{item.stamp[0] * 1_000_000_000 + item.stamp[1]}"
            stored = store.read(key)
            attrs = store.read_attrs(key)
            assert attrs["topic"] == item.topic and attrs["bag_time_ns"] == item.time
            assert attrs["frame_id"] == item.frame_id
            msg = next(m for t, m in messages[item.topic + "/features"] if t == item.time)
            assert msg.descriptor_encoding == "int8"
            decoded = features_from_message(msg)
            np.testing.assert_array_equal(decoded.keypoints, stored.keypoints)
            cosine = np.sum(decoded.descriptors * stored.descriptors, axis=1)
            assert cosine.min() > 0.999


def test_int8_descriptors_keep_the_cosine_bound():
    """Each int8 value is off by at most 0.5/127, so a decoded unit descriptor keeps a cosine of at least
    sqrt(1 - D (0.5/127)^2) with the float32 one: 0.998 for D = 256, the README's bound. 0.9993 is the
    median on real frames, not a bound: about 1 in 8 real descriptors fall below it, and so do random ones."""
    from types import SimpleNamespace

    dim = 256
    bound = np.sqrt(1 - dim * (0.5 / 127) ** 2)
    assert 0.998 < bound < 0.9981
    rng = np.random.default_rng(0)
    gaussian = rng.normal(size=(4000, dim))
    sparse = gaussian * (rng.random((4000, dim)) < 0.1)  # few large values, as trained descriptors have
    descriptors = np.concatenate([gaussian, sparse[np.abs(sparse).sum(1) > 0]]).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    typestore = features_typestore()
    features = SimpleNamespace(keypoints=np.zeros((len(descriptors), 2), np.float32),
                               scores=np.ones(len(descriptors), np.float32), descriptors=descriptors)
    header = typestore.types["std_msgs/msg/Header"](
        stamp=typestore.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="c")
    msg = features_to_message(typestore.types["superpoint_ros/msg/Features"], header, features, image_size=(8, 8),
                              encoding="int8")
    decoded = features_from_message(msg).descriptors.astype(np.float64)
    cosine = np.sum(decoded * descriptors, axis=1)
    assert cosine.min() >= bound - 1e-6
    assert 0.01 < np.mean(cosine[:4000] < 0.9993) < 0.5  # the old "at least 0.9993" does not hold


def test_existing_outputs_need_force(tmp_path, extractor, images, capsys):
    path = bag_path(tmp_path, "sqlite3")
    write_image_bag(path, "sqlite3", images[:2])
    out = tmp_path / "out"
    assert extract_bag([path], out, extractor, progress=False).frames == 2
    with pytest.raises(BagError, match="--force"):
        extract_bag([path], out, extractor, progress=False)
    assert main([str(path), "--output", str(out), "--weights", "untrained", "--device", "cpu", "-q"]) == 2
    assert "--force" in capsys.readouterr().err
    assert extract_bag([path], out, extractor, topics=["/cam/rgb"], force=True, progress=False).frames == 1
    assert list(read_bag(out)) == ["/cam/rgb/features"]
    (tmp_path / "h5").write_text("keep me")
    with pytest.raises(BagError, match="exists"):
        extract_bag([path], tmp_path / "out2", extractor, h5=tmp_path / "h5", progress=False)
    assert (tmp_path / "h5").read_text() == "keep me"
    other = tmp_path / "notabag"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(BagError, match="does not look like a bag"):
        extract_bag([path], other, extractor, force=True, progress=False)
    assert (other / "thesis.tex").exists()
    with pytest.raises(BagError, match="overwrite the input"):
        extract_bag([path], path, extractor, force=True, progress=False)


def test_truncated_mcap_keeps_a_valid_output(tmp_path, extractor, images, reference):
    path = bag_path(tmp_path, "mcap")
    write_image_bag(path, "mcap", images)
    (mcap,) = path.glob("*.mcap")
    data = mcap.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 6 // 10])
    summary = extract_bag([cut], tmp_path / "out", extractor, progress=False)
    assert not summary.complete
    assert 0 < summary.frames < len(images)
    report = "\n".join(summary.lines())
    assert "truncated" in report and "cut short" in report
    last = images[summary.frames - 1]
    assert f"{last.topic} at {last.time // 10**9}.{last.time % 10**9:09d} s" in report
    check_features(read_bag(tmp_path / "out"), images[: summary.frames], reference)
    # topic selection works on a damaged file too (its topics are only known while reading it)
    jpeg = extract_bag([cut], tmp_path / "jpeg", extractor, topics=["cam/jpeg"], progress=False)
    expected = [item for item in images[: summary.frames] if item.topic == "/cam/jpeg"]
    assert jpeg.frames == len(expected) and not jpeg.complete
    check_features(read_bag(tmp_path / "jpeg"), expected, reference)


def test_undecodable_messages_are_skipped_and_named(tmp_path, extractor, images, reference):
    from rosbags.rosbag2 import StoragePlugin, Writer

    typestore = get_typestore(Stores.ROS2_JAZZY)
    good = [item for item in images if item.topic in ("/cam/mono", "/cam/jpeg")]
    bad_time = {"/cam/mono": T0 + 7 * STEP, "/cam/jpeg": T0 + 8 * STEP}
    path = tmp_path / "in"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {}
        for item in good:
            msgtype, msg = image_message(typestore, item)
            if item.topic not in conns:
                conns[item.topic] = (writer.add_connection(item.topic, msgtype, typestore=typestore), msgtype)
            writer.write(conns[item.topic][0], item.time, typestore.serialize_cdr(msg, msgtype))
        mono, _ = conns["/cam/mono"]
        _, short = image_message(typestore, BagImage("/cam/mono", 0, np.zeros((120, 160), np.uint8), "mono8"))
        short.data = short.data[:1000]  # claims 120 rows, holds 6
        writer.write(mono, bad_time["/cam/mono"], typestore.serialize_cdr(short, "sensor_msgs/msg/Image"))
        writer.write(mono, bad_time["/cam/mono"] + 1, b"\x00\x01garbage")  # not even CDR
        jpeg, _ = conns["/cam/jpeg"]
        header = typestore.types["std_msgs/msg/Header"](
            stamp=typestore.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="x")
        noise = typestore.types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                                   data=np.arange(500, dtype=np.uint8))
        writer.write(jpeg, bad_time["/cam/jpeg"], typestore.serialize_cdr(noise, "sensor_msgs/msg/CompressedImage"))
    summary = extract_bag([path], tmp_path / "out", extractor, progress=False)
    assert summary.complete and summary.frames == len(good) and summary.skipped_count == 3
    reasons = {(topic, time): reason for topic, time, reason in summary.skipped}
    assert reasons[("/cam/mono", bad_time["/cam/mono"])].startswith("truncated")
    assert "deserialize" in reasons[("/cam/mono", bad_time["/cam/mono"] + 1)]
    assert reasons[("/cam/jpeg", bad_time["/cam/jpeg"])].startswith("decode_failed")
    report = "\n".join(summary.lines())
    assert "/cam/jpeg at 1700000000.800000000 s (0.800 s after the start): decode_failed" in report
    check_features(read_bag(tmp_path / "out"), good, reference)


def test_unreadable_bag_is_reported(tmp_path, extractor, images):
    path = bag_path(tmp_path, "sqlite3")
    write_image_bag(path, "sqlite3", images[:2])
    (db,) = path.glob("*.db3")
    cut = tmp_path / "cut.db3"
    cut.write_bytes(db.read_bytes()[:3000])
    with pytest.raises(BagError, match="cut.db3"):
        extract_bag([cut], tmp_path / "out", extractor, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path, weights, images, capsys):
    path = bag_path(tmp_path, "ros1")
    write_image_bag(path, "ros1", images[:3], NOTES)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--copy-other-topics" in capsys.readouterr().out
    code = main([str(path), "--output", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu",
                 "--max-keypoints", "50", "--features-topic", "/sp{topic}", "--copy-other-topics", "-q"])
    assert code == 0
    assert "wrote 3 Features messages" in capsys.readouterr().out
    messages = read_bag(tmp_path / "out")
    assert sorted(messages) == sorted(["/note", *("/sp" + item.topic for item in images[:3])])
    assert all(len(features_from_message(m)) <= 50 for t, ms in messages.items() if t != "/note" for _, m in ms)


def test_imports_without_rclpy():
    import subprocess
    import sys

    code = ("import sys; sys.modules['rclpy'] = None; import superpoint_ros.extract_bag, superpoint_ros.bag_reader, superpoint_ros.bag_writer; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_features_type_hash_matches_the_ros_build():
    """`ros2 bag` checks the type hash: the one rosbags computes must equal rosidl's of the built package."""
    import json

    built = sorted(Path(__file__).resolve().parents[1].glob("build_ros/install/**/msg/Features.json"))
    if not built:
        pytest.skip("no colcon build of the package (scripts/setup.sh)")
    description = json.loads(built[0].read_text())
    expected = {h["type_name"]: h["hash_string"] for h in description["type_hashes"]}
    assert features_typestore().hash_rihs01("superpoint_ros/msg/Features") == expected["superpoint_ros/msg/Features"]
