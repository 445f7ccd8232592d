"""The PFLlib/HtFLlib on-disk dataset format, read strictly and written compatibly.

Layout of one dataset folder::

    <folder>/config.json
    <folder>/train/<client id>.npz
    <folder>/test/<client id>.npz

Every npz holds a single pickled dict under the key ``'data'`` with ``'x'``
(float32, N x C x H x W, every value finite) and ``'y'`` (int64, N). PFLlib writes it
with ``np.savez_compressed(path, data={'x': x, 'y': y})`` and reads it with
``np.load(path, allow_pickle=True)['data'].tolist()``; we write it the same way, so
folders move freely between the two libraries, but read it without ``allow_pickle``: the
pickle is replayed with only numpy's array and dtype rebuilders available, and a file
whose pickle names anything else (a function that would run on loading) is refused
before any of it runs.

config.json carries PFLlib's fields plus our own: ``label_names``, ``image_shape``
and, from the generators, ``partition_rule`` and ``imbalance_factor`` (all optional
when reading, since PFLlib does not write them).

The system's loader (`utils.data_utils`) reads with this module and the generators
(`dataset/`) write with it; it imports nothing but numpy.
"""
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

SPLITS = ("train", "test")
CONFIG_FILE = "config.json"
# PFLlib's key for the per-client label histogram, spelled exactly as it writes it.
LABEL_COUNTS_KEY = "Size of samples for labels in clients"
PFLLIB_KEYS = ("num_clients", "num_classes", "non_iid", "balance", "partition",
               LABEL_COUNTS_KEY, "alpha", "batch_size")


@dataclass(frozen=True)
class DatasetConfig:
    """The contents of config.json; field names follow PFLlib's keys."""
    num_clients: int
    num_classes: int
    non_iid: bool
    balance: bool
    partition: Optional[str]
    alpha: Optional[float]
    batch_size: Optional[int]
    # per client, a list of [label, count] pairs over its train + test samples
    label_counts: list
    label_names: Optional[list] = None
    image_shape: Optional[tuple] = None
    # long-tailed pools: smallest class size / largest (1.0 or absent: as the source)
    imbalance_factor: Optional[float] = None
    # how samples were dealt: 'library' or 'pfllib' (absent: not recorded)
    partition_rule: Optional[str] = None
    # how the source images were restyled, e.g. MNIST5k's 'colour' (absent: as the source)
    style: Optional[str] = None
    # few-shot: each client keeps at most this many training samples per class (absent: all)
    train_per_class: Optional[int] = None

    def to_json(self) -> dict:
        doc = {
            "num_clients": self.num_clients,
            "num_classes": self.num_classes,
            "non_iid": self.non_iid,
            "balance": self.balance,
            "partition": self.partition,
            LABEL_COUNTS_KEY: self.label_counts,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
        }
        if self.label_names is not None:
            doc["label_names"] = list(self.label_names)
        if self.image_shape is not None:
            doc["image_shape"] = list(self.image_shape)
        if self.imbalance_factor is not None:
            doc["imbalance_factor"] = self.imbalance_factor
        if self.partition_rule is not None:
            doc["partition_rule"] = self.partition_rule
        if self.style is not None:
            doc["style"] = self.style
        if self.train_per_class is not None:
            doc["train_per_class"] = self.train_per_class
        return doc


def client_file(folder: str, split: str, client_id: int) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return os.path.join(folder, split, f"{int(client_id)}.npz")


def label_histogram(y: np.ndarray) -> list:
    """[[label, count], ...] for the labels present in `y`, in label order."""
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    return [[int(label), int(count)] for label, count in zip(labels, counts)]


# ----------------------------------------------------------------------------- writing

def write_client_split(path: str, x: np.ndarray, y: np.ndarray) -> None:
    """One client's split, stored exactly the way PFLlib stores it."""
    x, y = _checked_arrays(np.asarray(x), np.asarray(y), path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez_compressed(path, data={"x": x, "y": y})


def write_dataset(folder: str, train: Sequence[tuple], test: Sequence[tuple], *,
                  num_classes: int, non_iid: bool, balance: bool, partition: Optional[str],
                  alpha: Optional[float], batch_size: int,
                  label_names: Optional[Sequence[str]] = None,
                  imbalance_factor: Optional[float] = None,
                  partition_rule: Optional[str] = None,
                  style: Optional[str] = None,
                  train_per_class: Optional[int] = None) -> DatasetConfig:
    """Write a whole dataset: `train[i]` and `test[i]` are client i's (x, y) arrays.

    config.json is removed first and written last, so a folder with a config.json is
    always complete; client files left over from an earlier, larger run are deleted.
    """
    if len(train) != len(test):
        raise ValueError(f"got train splits for {len(train)} clients but test splits for {len(test)}")
    if not train:
        raise ValueError("a dataset needs at least one client")
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names given for {num_classes} classes")

    config_path = os.path.join(folder, CONFIG_FILE)
    if os.path.exists(config_path):
        os.remove(config_path)
    for split in SPLITS:
        _remove_client_files(os.path.join(folder, split))

    image_shape = None
    label_counts = []
    for client_id, ((train_x, train_y), (test_x, test_y)) in enumerate(zip(train, test)):
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            x, y = np.asarray(x), np.asarray(y)
            if image_shape is None:
                image_shape = tuple(int(d) for d in x.shape[1:])
            elif x.ndim == 4 and tuple(x.shape[1:]) != image_shape:
                raise ValueError(f"client {client_id} {split} images have shape {x.shape[1:]}, "
                                 f"expected {image_shape} like the first client")
            write_client_split(client_file(folder, split, client_id), x, y)
        label_counts.append(label_histogram(np.concatenate([np.asarray(train_y), np.asarray(test_y)])))

    config = DatasetConfig(
        num_clients=len(train), num_classes=int(num_classes), non_iid=bool(non_iid),
        balance=bool(balance), partition=partition,
        alpha=None if alpha is None else float(alpha), batch_size=int(batch_size),
        label_counts=label_counts,
        label_names=None if label_names is None else [str(name) for name in label_names],
        image_shape=image_shape,
        imbalance_factor=None if imbalance_factor is None else float(imbalance_factor),
        partition_rule=None if partition_rule is None else str(partition_rule),
        style=None if style is None else str(style),
        train_per_class=None if train_per_class is None else int(train_per_class))
    with open(config_path, "w") as f:
        json.dump(config.to_json(), f)
    return config


def _remove_client_files(split_dir: str) -> None:
    if not os.path.isdir(split_dir):
        return
    for name in os.listdir(split_dir):
        stem, ext = os.path.splitext(name)
        if ext == ".npz" and stem.isdigit():
            os.remove(os.path.join(split_dir, name))


# ----------------------------------------------------------------------------- reading

def read_config(folder: str) -> DatasetConfig:
    """Parse and validate `<folder>/config.json`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing (the dataset was never generated or its "
                                f"generation did not finish)")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({_one_line(exc)})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(doc).__name__}")
    missing = [key for key in PFLLIB_KEYS if key not in doc]
    if missing:
        raise ValueError(f"{path} lacks the field(s) {', '.join(repr(k) for k in missing)}")

    num_clients = _positive_int(doc["num_clients"], "num_clients", path)
    num_classes = _positive_int(doc["num_classes"], "num_classes", path)
    label_counts = doc[LABEL_COUNTS_KEY]
    if not isinstance(label_counts, list) or len(label_counts) != num_clients:
        raise ValueError(f"{path}: {LABEL_COUNTS_KEY!r} must list one entry per client "
                         f"({num_clients})")

    label_names = doc.get("label_names")
    if label_names is not None:
        if (not isinstance(label_names, list) or len(label_names) != num_classes
                or not all(isinstance(name, str) for name in label_names)):
            raise ValueError(f"{path}: label_names must be a list of {num_classes} strings")
    partition_rule = doc.get("partition_rule")
    if partition_rule is not None and not isinstance(partition_rule, str):
        raise ValueError(f"{path}: partition_rule must be a string, got {partition_rule!r}")
    style = doc.get("style")
    if style is not None and not isinstance(style, str):
        raise ValueError(f"{path}: style must be a string, got {style!r}")
    train_per_class = doc.get("train_per_class")
    if train_per_class is not None:
        train_per_class = _positive_int(train_per_class, "train_per_class", path)
    image_shape = doc.get("image_shape")
    if image_shape is not None:
        if (not isinstance(image_shape, list) or len(image_shape) != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                           for d in image_shape)):
            raise ValueError(f"{path}: image_shape must be [channels, height, width], "
                             f"got {image_shape!r}")
        image_shape = tuple(image_shape)

    return DatasetConfig(
        num_clients=num_clients, num_classes=num_classes, non_iid=doc["non_iid"],
        balance=doc["balance"], partition=doc["partition"], alpha=doc["alpha"],
        batch_size=doc["batch_size"], label_counts=label_counts,
        label_names=label_names, image_shape=image_shape,
        partition_rule=partition_rule, style=style, train_per_class=train_per_class)


def read_client_split(folder: str, split: str, client_id: int) -> tuple:
    """Client `client_id`'s (x float32 NCHW, y int64) arrays for `split` ('train'/'test')."""
    path = client_file(folder, split, client_id)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing")
    try:
        record = _read_data_entry(path)
    except UnsafeFileError:
        raise
    # A damaged file can fail anywhere in zip, zlib, the npy header or the pickle, each with
    # its own exception type; all of them mean the same thing to the caller.
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable npz file "
                         f"({type(exc).__name__}: {_one_line(exc)})") from exc
    if record is _NOT_ARCHIVE:
        raise ValueError(f"{path} is not an npz archive (a bare array or pickle)")
    if record is _NO_DATA:
        raise ValueError(f"{path} has no 'data' entry (not written in the PFLlib format)")
    if not isinstance(record, dict) or "x" not in record or "y" not in record:
        raise ValueError(f"{path} must hold a dict with keys 'x' and 'y' under 'data'")
    return _checked_arrays(np.asarray(record["x"]), np.asarray(record["y"]), path)


class UnsafeFileError(ValueError):
    """A data file whose pickle names something other than numpy's array rebuilders."""


# What `_read_data_entry` returns for a file that is no zip archive / has no 'data' member.
_NOT_ARCHIVE = object()
_NO_DATA = object()
_ZIP_PREFIXES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip


def _read_data_entry(path: str):
    """The value stored under 'data' in the npz at `path`, read without running its pickle."""
    with open(path, "rb") as f:
        if f.read(4) not in _ZIP_PREFIXES:
            f.seek(0)
            start = f.read(len(np.lib.format.MAGIC_PREFIX))
            if start == np.lib.format.MAGIC_PREFIX or start[:1] == b"\x80":  # .npy or pickle
                return _NOT_ARCHIVE
            raise ValueError("not a zip archive")
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            if "data.npy" not in archive.namelist():
                return _NO_DATA
            with archive.open("data.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    _, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    _, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
                if not dtype.hasobject:
                    member.seek(0)
                    return np.lib.format.read_array(member, allow_pickle=False)
                array = _ArrayUnpickler(member, path).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"'data' holds a {type(array).__name__}, not an array")
    return array.tolist()  # the dict inside PFLlib's 0-d object array


def _array_rebuilders() -> dict:
    """{(module, name): object} for the globals numpy's pickles of arrays and dtypes name,
    under numpy 1.x's module names and 2.x's, taken from live objects rather than imported
    by name."""
    rebuilders = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    reconstruct = np.zeros(0).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5's out-of-band form
    for core in ("numpy.core", "numpy._core"):
        rebuilders[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        rebuilders[(f"{core}.multiarray", "scalar")] = scalar
        rebuilders[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return rebuilders


_ARRAY_REBUILDERS = _array_rebuilders()


class _ArrayUnpickler(pickle.Unpickler):
    """Replays a pickle of numpy arrays, dicts, lists and plain values; any other global
    (the only way a pickle runs code) is refused before it is looked up."""

    def __init__(self, file, path: str):
        # latin1: Python 2 pickles of arrays hold their bytes as str (PFLlib's are Python 3).
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module, name):
        found = _ARRAY_REBUILDERS.get((module, name))
        if found is None:
            raise UnsafeFileError(f"{self.path} was refused: its 'data' pickle names {module}.{name}, "
                                  f"and a data file may only hold numpy arrays (nothing in it was run)")
        return found


def _checked_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple:
    """Validate one split and bring it to float32 / int64 (copying only when needed)."""
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: x must be floating point, got dtype {x.dtype}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{where}: y must hold integer labels, got dtype {y.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{where}: x must be 4-D (N, C, H, W), got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"{where}: y must be 1-D, got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{where}: x has {len(x)} samples but y has {len(y)}")
    if y.size and y.min() < 0:
        raise ValueError(f"{where}: y contains negative label {int(y.min())}")
    # One float64 sum (no mask as large as x) is not finite when a value is; only then count them.
    if x.size and not np.isfinite(x.sum(dtype=np.float64)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"{where}: x holds {bad} NaN or infinite value{'s' if bad > 1 else ''} "
                             f"(of {x.size})")
    return (np.ascontiguousarray(x, dtype=np.float32),
            np.ascontiguousarray(y, dtype=np.int64))


def _positive_int(value, key: str, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
