"""The project's one file layout for extracted features: HDF5 (``.h5``/``.hdf5``) or npz (``.npz``).

Every tool that writes features (the extract CLI, the bag tool, the evaluation cache) goes through
:class:`FeatureStore`, so one reader serves them all.

HDF5 layout (format ``superpoint_ros-features``, version 1)::

    /                               root attributes:
        format          "superpoint_ros-features"
        version         1
        weights         the extractor's weights description ("v6 weights from ...")
        config          JSON object: the extractor's settings (threshold, NMS radius, ...)
        descriptor_dtype "float32" or "float16"
        created         ISO 8601 UTC time the file was created
    /<key>/                         one group per image; a key may contain "/" (nested groups,
                                    e.g. "seq01/000001.png" or "camera/image_raw/1700000000123")
        keypoints       (N, 2) float32   (x, y) pixels in the original image, (0, 0) the centre of
                                         the top-left pixel; sorted by descending score
        scores          (N,)   float32
        descriptors     (N, D) float32 or float16, L2-normalised (D = 0 for a detector-only model)
        attributes: image_size (H, W) int, plus whatever the writer adds (source path, stamp, ...)

Only valid keypoints are stored: features from fixed-K mode are cut to their ``valid`` entries.
An image group is any group holding a ``keypoints`` dataset.

npz layout: the same arrays as ``<key>/keypoints``, ``<key>/scores``, ``<key>/descriptors``,
``<key>/image_size`` (2,) int64 and ``<key>/attrs`` (JSON string, optional), plus ``__metadata__``
(JSON string of the root attributes). npz files are written in one go when the store closes.

Example::

    with FeatureStore.open("features.h5", "w", weights=extractor.weights_description,
                           config={"nms_radius": 4}) as store:
        store.write("image0.png", extractor(image), source="/data/image0.png")
    with FeatureStore.open("features.h5") as store:
        for key in store.keys():
            features = store.read(key)      # Features with numpy arrays (descriptors as float32)
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..model.extractor import Features
from .files import atomic_path

FORMAT_NAME = "superpoint_ros-features"
FORMAT_VERSION = 1
DATASETS = ("keypoints", "scores", "descriptors")
RESERVED = (*DATASETS, "image_size", "attrs", "valid")
DESCRIPTOR_DTYPES = ("float32", "float16")
HDF5_SUFFIXES = (".h5", ".hdf5")
NPZ_SUFFIXES = (".npz",)
METADATA_KEY = "__metadata__"


class FeatureFileError(ValueError):
    """A features file that is not in the project's layout, or a bad key."""


def file_kind(path: str | os.PathLike) -> str:
    """"hdf5" or "npz" from the file name; anything else is an error naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in NPZ_SUFFIXES:
        return "npz"
    raise FeatureFileError(f"{path}: unknown features file type {suffix!r} (use .h5, .hdf5 or .npz)")


def normalize_key(key: str) -> str:
    """Strip surrounding slashes and check the key's components ("a/b/c.png" is fine)."""
    if not isinstance(key, str):
        raise FeatureFileError(f"feature keys are strings, got {type(key).__name__}")
    parts = key.strip("/").split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise FeatureFileError(f"bad feature key {key!r}: empty, '.' or '..' component")
        if part in RESERVED or part == METADATA_KEY:
            raise FeatureFileError(f"bad feature key {key!r}: component {part!r} is a reserved name")
    return "/".join(parts)


def _to_python(value: Any) -> Any:
    """HDF5/numpy attribute values to plain Python (str, int, float, bool, lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value.tolist()] if value.ndim else _to_python(value.item())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


def _check_attr(name: str, value: Any) -> Any:
    if name in RESERVED:
        raise FeatureFileError(f"attribute {name!r} is reserved by the features layout")
    value = _to_python(value)
    try:
        json.dumps(value)
    except TypeError as error:
        raise FeatureFileError(f"attribute {name!r}: value of type {type(value).__name__} cannot be stored") from error
    if isinstance(value, dict) or value is None:
        raise FeatureFileError(f"attribute {name!r}: use a string, a number, a bool or a list (got {value!r})")
    return value


def _as_arrays(features: Features, descriptor_dtype: str) -> dict[str, np.ndarray]:
    """Features (numpy or torch, any device) to the stored arrays, keeping only valid entries."""
    if not isinstance(features, Features):
        raise TypeError(f"expected superpoint_training.Features, got {type(features).__name__}")
    host = features.numpy()
    keypoints = np.asarray(host.keypoints, dtype=np.float32).reshape(-1, 2)
    scores = np.asarray(host.scores, dtype=np.float32).reshape(-1)
    descriptors = np.asarray(host.descriptors)
    if descriptors.ndim != 2:
        raise ValueError(f"descriptors must be (N, D), got shape {descriptors.shape}")
    if host.valid is not None:
        valid = np.asarray(host.valid, dtype=bool).reshape(-1)
        keypoints, scores, descriptors = keypoints[valid], scores[valid], descriptors[valid]
    if not len(scores) == len(keypoints) == len(descriptors):
        raise ValueError(
            f"inconsistent features: {len(keypoints)} keypoints, {len(scores)} scores, {len(descriptors)} descriptors"
        )
    return {
        "keypoints": np.ascontiguousarray(keypoints),
        "scores": np.ascontiguousarray(scores),
        "descriptors": np.ascontiguousarray(descriptors.astype(descriptor_dtype, copy=False)),
    }


class FeatureStore:
    """Read or write features in the project's layout (see the module docstring).

    ``mode``: ``"r"`` read, ``"w"`` create (replacing an existing file), ``"a"`` read and append
    (created if missing). ``weights`` and ``config`` fill the root attributes when writing.
    ``descriptor_dtype`` ("float32" or "float16") applies to new files; appending keeps the file's.
    ``compression`` (HDF5 only): None, "gzip" or "lzf" for the datasets.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "r",
        *,
        weights: str | None = None,
        config: dict | None = None,
        descriptor_dtype: str | None = None,
        compression: str | None = None,
    ):
        if mode not in ("r", "w", "a"):
            raise ValueError(f"mode must be 'r', 'w' or 'a', got {mode!r}")
        if descriptor_dtype is not None and descriptor_dtype not in DESCRIPTOR_DTYPES:
            raise ValueError(f"descriptor_dtype must be one of {DESCRIPTOR_DTYPES}, got {descriptor_dtype!r}")
        self.path = Path(path)
        self.mode = mode
        self.kind = file_kind(self.path)
        self.compression = compression
        self._closed = False
        if mode == "r" and not self.path.exists():
            raise FileNotFoundError(f"features file not found: {self.path}")
        create = mode == "w" or (mode == "a" and not self.path.exists())
        if self.kind == "hdf5":
            self._open_hdf5(mode)
        else:
            self._open_npz(create)
        if create:
            self._metadata = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "weights": "",
                "config": {},
                "descriptor_dtype": descriptor_dtype or "float32",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        else:
            self._metadata = self._read_metadata()
        self.descriptor_dtype = self._metadata["descriptor_dtype"]
        if weights is not None or config is not None:
            self.set_metadata(weights=weights, config=config)
        elif create:
            self._flush_metadata()

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", **options) -> FeatureStore:
        return cls(path, mode, **options)

    # -- backends -------------------------------------------------------------------------------
    def _open_hdf5(self, mode: str) -> None:
        try:
            import h5py
        except ImportError as error:
            raise ImportError("HDF5 features need h5py: pip install h5py (or write .npz)") from error
        try:
            self._h5 = h5py.File(self.path, mode)
        except OSError as error:
            raise FeatureFileError(f"{self.path}: cannot open as HDF5 ({error})") from error

    def _open_npz(self, create: bool) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._dirty = create
        if not create:
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    self._arrays = {name: data[name] for name in data.files}
            except (OSError, ValueError) as error:
                raise FeatureFileError(f"{self.path}: cannot read as npz ({error})") from error

    def _read_metadata(self) -> dict:
        if self.kind == "hdf5":
            raw = {k: _to_python(v) for k, v in self._h5.attrs.items()}
        else:
            if METADATA_KEY not in self._arrays:
                raise FeatureFileError(f"{self.path}: no {METADATA_KEY!r} entry: not a {FORMAT_NAME} file")
            raw = json.loads(str(self._arrays[METADATA_KEY]))
        if raw.get("format") != FORMAT_NAME:
            raise FeatureFileError(f"{self.path}: format is {raw.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(raw.get("version", 0)) > FORMAT_VERSION:
            raise FeatureFileError(
                f"{self.path}: layout version {raw['version']} is newer than this reader's ({FORMAT_VERSION})"
            )
        config = raw.get("config", {})
        raw["config"] = json.loads(config) if isinstance(config, str) else config
        raw.setdefault("descriptor_dtype", "float32")
        return raw

    def _flush_metadata(self) -> None:
        if self.kind == "hdf5":
            for name, value in self._metadata.items():
                self._h5.attrs[name] = json.dumps(value) if name == "config" else value
        else:
            self._arrays[METADATA_KEY] = np.array(json.dumps(self._metadata))
            self._dirty = True

    # -- public API -----------------------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """Root attributes: format, version, weights, config (a dict), descriptor_dtype, created."""
        return dict(self._metadata)

    def set_metadata(self, *, weights: str | None = None, config: dict | None = None) -> None:
        self._check_writable()
        if weights is not None:
            self._metadata["weights"] = str(weights)
        if config is not None:
            json.dumps(config)  # fail here, not at close, on values JSON cannot hold
            self._metadata["config"] = dict(config)
        self._flush_metadata()

    def write(self, key: str, features: Features, **attrs: Any) -> None:
        """Store one image's features under ``key`` (replacing what was there) with extra attributes."""
        self._check_writable()
        key = normalize_key(key)
        arrays = _as_arrays(features, self.descriptor_dtype)
        image_size = [int(s) for s in features.image_size]
        attrs = {name: _check_attr(name, value) for name, value in attrs.items()}
        if self.kind == "hdf5":
            if key in self._h5:
                del self._h5[key]
            group = self._h5.create_group(key)
            for name, array in arrays.items():
                options = {"compression": self.compression} if self.compression and array.size else {}
                group.create_dataset(name, data=array, **options)
            group.attrs["image_size"] = np.asarray(image_size, dtype=np.int64)
            for name, value in attrs.items():
                try:
                    group.attrs[name] = value
                except (TypeError, ValueError) as error:
                    raise FeatureFileError(f"attribute {name!r}: HDF5 cannot store {value!r} ({error})") from error
        else:
            for name in (*DATASETS, "image_size", "attrs"):
                self._arrays.pop(f"{key}/{name}", None)
            for name, array in arrays.items():
                self._arrays[f"{key}/{name}"] = array
            self._arrays[f"{key}/image_size"] = np.asarray(image_size, dtype=np.int64)
            if attrs:
                self._arrays[f"{key}/attrs"] = np.array(json.dumps(attrs))
            self._dirty = True

    def read(self, key: str) -> Features:
        """One image's features as numpy arrays (descriptors converted to float32)."""
        self._check_open()
        key = normalize_key(key)
        if key not in self:
            raise KeyError(f"{self.path}: no features for key {key!r}")
        if self.kind == "hdf5":
            group = self._h5[key]
            arrays = {name: group[name][()] for name in DATASETS}
            image_size = group.attrs["image_size"]
        else:
            arrays = {name: self._arrays[f"{key}/{name}"] for name in DATASETS}
            image_size = self._arrays[f"{key}/image_size"]
        return Features(
            keypoints=arrays["keypoints"].astype(np.float32, copy=False),
            scores=arrays["scores"].astype(np.float32, copy=False),
            descriptors=arrays["descriptors"].astype(np.float32, copy=False),
            image_size=(int(image_size[0]), int(image_size[1])),
        )

    def read_attrs(self, key: str) -> dict[str, Any]:
        """The extra attributes written with ``key`` (without image_size)."""
        self._check_open()
        key = normalize_key(key)
        if key not in self:
            raise KeyError(f"{self.path}: no features for key {key!r}")
        if self.kind == "hdf5":
            return {k: _to_python(v) for k, v in self._h5[key].attrs.items() if k != "image_size"}
        raw = self._arrays.get(f"{key}/attrs")
        return {} if raw is None else json.loads(str(raw))

    def keys(self) -> list[str]:
        """Every image key, in sorted order."""
        self._check_open()
        if self.kind == "npz":
            return sorted(name[: -len("/keypoints")] for name in self._arrays if name.endswith("/keypoints"))
        found: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if hasattr(obj, "keys") and "keypoints" in obj:
                found.append(name)

        self._h5.visititems(visit)
        return sorted(found)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        key = key.strip("/")
        if self.kind == "npz":
            return f"{key}/keypoints" in self._arrays
        return key in self._h5 and hasattr(self._h5[key], "keys") and "keypoints" in self._h5[key]

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self):
        return iter(self.keys())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.kind == "hdf5":
            self._h5.close()
        elif self.mode != "r" and self._dirty:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **self._arrays)

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.mode
        return f"FeatureStore({str(self.path)!r}, {state})"

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the feature store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode == "r":
            raise ValueError(f"{self.path}: opened read-only (use mode 'w' or 'a' to write)")
