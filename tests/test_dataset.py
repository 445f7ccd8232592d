"""Partitioning, the PFLlib on-disk format, the generators and the system's loader."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dataset import generate_common, generate_MNIST5k, partition
from dataset.loader import load_federated_dataset
from utils import htfl_format
from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rng(seed=0):
    return np.random.default_rng(seed)


def ten_class_labels(per_class=500):
    return np.repeat(np.arange(10), per_class)


def assert_exact_cover(parts, num_samples):
    """Every index 0..num_samples-1 appears in exactly one part."""
    joined = np.concatenate(parts)
    assert len(joined) == num_samples
    assert np.array_equal(np.sort(joined), np.arange(num_samples))


# ----------------------------------------------------------------------------- partition

def test_apportion_sums_exactly_and_respects_minimum():
    counts = partition.apportion(101, np.array([0.5, 0.3, 0.2, 1e-9]), minimum=2)
    assert counts.sum() == 101 and counts.min() >= 2
    assert list(partition.apportion(10, np.ones(3))) == [4, 3, 3]
    with pytest.raises(ValueError, match="at least 5 each out of 10"):
        partition.apportion(10, np.ones(3), minimum=5)


@pytest.mark.parametrize("balance", [True, False])
def test_iid_covers_every_sample_once(balance):
    labels = ten_class_labels(100)
    parts = partition.iid(labels, 7, rng(), balance=balance)
    assert len(parts) == 7
    assert_exact_cover(parts, len(labels))
    sizes = [len(p) for p in parts]
    if balance:
        assert max(sizes) - min(sizes) <= 1
    else:
        assert min(sizes) >= 1 and max(sizes) - min(sizes) > 1


@pytest.mark.parametrize("balance", [True, False])
@pytest.mark.parametrize("num_clients,class_per_client", [(20, 2), (7, 3), (3, 10)])
def test_pat_gives_each_client_exactly_its_classes(num_clients, class_per_client, balance):
    labels = ten_class_labels(100)
    parts = partition.pat(labels, num_clients, class_per_client, rng(), balance=balance)
    assert_exact_cover(parts, len(labels))
    holders = np.zeros(10, dtype=int)
    for part in parts:
        classes = np.unique(labels[part])
        assert len(classes) == class_per_client
        holders[classes] += 1
    # classes are spread over clients as evenly as possible
    assert holders.max() - holders.min() <= 1
    if balance:
        for cls in range(10):
            shares = [np.sum(labels[p] == cls) for p in parts if np.any(labels[p] == cls)]
            assert max(shares) - min(shares) <= 1


def test_pat_rejects_impossible_requests():
    labels = ten_class_labels(5)
    with pytest.raises(ValueError, match="between 1 and the 10 classes"):
        partition.pat(labels, 4, 11, rng())
    with pytest.raises(ValueError, match="cannot cover all 10 classes"):
        partition.pat(labels, 3, 2, rng())
    with pytest.raises(ValueError, match="class .* has 5 samples but .* clients hold it"):
        partition.pat(labels, 30, 2, rng())


def test_dir_covers_every_sample_once_and_tops_up_small_clients():
    labels = ten_class_labels(500)
    parts = partition.dir(labels, 20, 0.1, rng(3), least_samples=40)
    assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 40
    # alpha = 0.1 is strongly skewed: some client lacks most classes
    assert min(len(np.unique(labels[p])) for p in parts) < 10


def test_dir_with_500_clients_terminates_quickly_and_feeds_everyone():
    labels = ten_class_labels(500)
    start = time.perf_counter()
    parts = partition.dir(labels, 500, 0.1, rng(1), least_samples=10)
    assert time.perf_counter() - start < 5
    assert len(parts) == 500
    assert_exact_cover(parts, len(labels))
    # 5,000 samples over 500 clients with a floor of 10: everyone ends with exactly 10
    assert all(len(p) == 10 for p in parts)
    parts = partition.dir(labels, 500, 0.05, rng(2), least_samples=5)
    assert min(len(p) for p in parts) >= 5
    assert_exact_cover(parts, len(labels))


def test_dir_explains_an_unsatisfiable_floor():
    with pytest.raises(ValueError, match=r"needs 5010 samples but there are 5000.*least_samples <= 9 or"):
        partition.dir(ten_class_labels(500), 501, 0.1, rng(), least_samples=10)
    with pytest.raises(ValueError, match="alpha must be positive"):
        partition.dir(ten_class_labels(5), 2, 0.0, rng())


@pytest.mark.parametrize("split", [
    lambda labels, g: partition.dir(labels, 20, 0.1, g, least_samples=10),
    lambda labels, g: partition.pat(labels, 20, 2, g),
    lambda labels, g: partition.iid(labels, 20, g, balance=False),
])
def test_same_seed_same_split_and_different_seed_different(split):
    labels = ten_class_labels(100)
    first, again, other = split(labels, rng(5)), split(labels, rng(5)), split(labels, rng(6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_partition_indices_dispatches_on_pfllib_arguments():
    labels = ten_class_labels(50)
    iid_parts = partition.partition_indices(labels, 5, rng(), niid=False, balance=True, partition=None)
    assert sorted(len(p) for p in iid_parts) == [100] * 5
    pat_parts = partition.partition_indices(labels, 5, rng(), niid=True, balance=False,
                                            partition="pat", class_per_client=2)
    assert all(len(np.unique(labels[p])) == 2 for p in pat_parts)
    with pytest.raises(ValueError, match="'pat' or 'dir'"):
        partition.partition_indices(labels, 5, rng(), niid=True, balance=False, partition="exdir")


@pytest.mark.parametrize("size,num_train", [(100, 75), (10, 7), (41, 30), (3, 2)])
def test_train_test_split_is_75_25_and_loses_nothing(size, num_train):
    indices = np.arange(1000, 1000 + size)
    train, test = partition.split_train_test(indices, rng())
    assert len(train) == num_train and len(test) == size - num_train
    assert np.array_equal(np.sort(np.concatenate([train, test])), indices)
    same_train, _ = partition.split_train_test(indices, rng())
    assert np.array_equal(train, same_train)


# ----------------------------------------------------------------------------- format

def small_clients(num_clients=3, seed=0):
    g = rng(seed)
    train, test = [], []
    for client in range(num_clients):
        n = 8 + client
        train.append((g.standard_normal((n, 3, 4, 4)).astype(np.float32),
                      g.integers(0, 5, n).astype(np.int64)))
        test.append((g.standard_normal((3, 3, 4, 4)).astype(np.float32),
                     g.integers(0, 5, 3).astype(np.int64)))
    return train, test


def write_small(folder, num_clients=3):
    train, test = small_clients(num_clients)
    config = htfl_format.write_dataset(
        str(folder), train, test, num_classes=5, non_iid=True, balance=False, partition="dir",
        alpha=0.1, batch_size=10, label_names=list("abcde"))
    return train, test, config


def test_format_round_trip(tmp_path):
    train, test, _ = write_small(tmp_path)
    for client in range(3):
        for split, (x, y) in (("train", train[client]), ("test", test[client])):
            read_x, read_y = htfl_format.read_client_split(str(tmp_path), split, client)
            assert read_x.dtype == np.float32 and read_y.dtype == np.int64
            assert np.array_equal(read_x, x) and np.array_equal(read_y, y)
            # ...and PFLlib's own reader sees the same dict
            with open(tmp_path / split / f"{client}.npz", "rb") as f:
                record = np.load(f, allow_pickle=True)["data"].tolist()
            assert np.array_equal(record["x"], x) and np.array_equal(record["y"], y)


def test_config_carries_pfllib_fields_and_ours(tmp_path):
    train, test, _ = write_small(tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    for key in ["num_clients", "num_classes", "non_iid", "balance", "partition",
                "Size of samples for labels in clients", "alpha", "batch_size",
                "label_names", "image_shape"]:
        assert key in doc
    assert doc["num_clients"] == 3 and doc["num_classes"] == 5
    assert doc["label_names"] == list("abcde") and doc["image_shape"] == [3, 4, 4]
    for client, pairs in enumerate(doc["Size of samples for labels in clients"]):
        labels = np.concatenate([train[client][1], test[client][1]])
        assert pairs == [[int(l), int(np.sum(labels == l))] for l in np.unique(labels)]
    config = htfl_format.read_config(str(tmp_path))
    assert config.num_clients == 3 and config.image_shape == (3, 4, 4)
    assert config.label_names == list("abcde") and config.partition == "dir"


def test_reads_a_folder_written_the_pfllib_way(tmp_path):
    x = np.zeros((4, 1, 28, 28), dtype=np.float32)
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    for split in ("train", "test"):
        os.makedirs(tmp_path / split)
        with open(tmp_path / split / "0.npz", "wb") as f:
            np.savez_compressed(f, data={"x": x, "y": y})
    config = {"num_clients": 1, "num_classes": 3, "non_iid": False, "balance": True,
              "partition": None, "Size of samples for labels in clients": [[[0, 2], [1, 4], [2, 2]]],
              "alpha": 0.1, "batch_size": 10}
    (tmp_path / "config.json").write_text(json.dumps(config))
    read = htfl_format.read_config(str(tmp_path))
    assert read.label_names is None and read.image_shape is None
    read_x, read_y = htfl_format.read_client_split(str(tmp_path), "test", 0)
    assert np.array_equal(read_x, x) and np.array_equal(read_y, y)


def test_rewriting_with_fewer_clients_removes_stale_files(tmp_path):
    write_small(tmp_path, num_clients=3)
    write_small(tmp_path, num_clients=2)
    assert sorted(os.listdir(tmp_path / "train")) == ["0.npz", "1.npz"]


def save_record(path, **record):
    np.savez_compressed(path, data=record)


def save_bare_array(path):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("make_bad,message", [
    (lambda p: p.write_bytes(b"not a zip at all"), "not a readable npz"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "not a readable npz"),
    (save_bare_array, "not an npz archive"),
    (lambda p: np.savez_compressed(p, x=np.zeros((1, 1, 2, 2), np.float32)), "no 'data' entry"),
    (lambda p: save_record(p, x=np.zeros((1, 1, 2, 2), np.float32)), "dict with keys 'x' and 'y'"),
    (lambda p: save_record(p, x=np.zeros((2, 1, 2, 2), np.uint8), y=np.zeros(2, np.int64)),
     "x must be floating point"),
    (lambda p: save_record(p, x=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(2, np.float32)),
     "y must hold integer labels"),
    (lambda p: save_record(p, x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64)),
     "x must be 4-D"),
    (lambda p: save_record(p, x=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(3, np.int64)),
     "x has 2 samples but y has 3"),
    (lambda p: save_record(p, x=np.array([np.nan, 1, -np.inf, 0, 2, 3, 4, np.inf], np.float32).reshape(2, 1, 2, 2),
                           y=np.zeros(2, np.int64)), "x holds 3 NaN or infinite values \\(of 8\\)"),
    (lambda p: save_record(p, x=np.array([0, 1, 2, np.nan], np.float64).reshape(1, 1, 2, 2),
                           y=np.zeros(1, np.int64)), "x holds 1 NaN or infinite value \\(of 4\\)"),
    (lambda p: np.savez_compressed(p, data=np.zeros((2, 3))), "dict with keys 'x' and 'y'"),
])
def test_strict_reading_rejects_damaged_files(tmp_path, make_bad, message):
    write_small(tmp_path)
    path = tmp_path / "train" / "1.npz"
    make_bad(path)
    with pytest.raises(ValueError, match=message) as info:
        htfl_format.read_client_split(str(tmp_path), "train", 1)
    assert str(path) in str(info.value)


def test_strict_reading_reports_missing_pieces(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        htfl_format.read_config(str(tmp_path / "nowhere"))
    write_small(tmp_path)
    with pytest.raises(FileNotFoundError, match="7.npz is missing"):
        htfl_format.read_client_split(str(tmp_path), "test", 7)
    doc = json.loads((tmp_path / "config.json").read_text())
    del doc["batch_size"]
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="lacks the field.*batch_size"):
        htfl_format.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        htfl_format.read_config(str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        htfl_format.read_config(str(tmp_path))


# A client file as PFLlib writes it under numpy 1.26 (`np.savez_compressed(f, data={'x': x, 'y': y})`,
# a protocol-3 pickle naming numpy.core.multiarray), with x = (arange(12).reshape(3, 1, 2, 2) - 6) / 4
# in float32 and y = [0, 2, 1].
NUMPY1_FILE = (
    "UEsDBC0AAAAIAAAAIQBTUFw+//////////8IABQAZGF0YS5ucHkBABAAGQIAAAAAAABZAQAAAAAAAKWOy0rDQBSGJ4nXeL/Xe7yRFEpx4aKI"
    "WKHgwmArAUEXUnIrKbRJz2QiBlvIptSufYE+ifpmepKmC3HpD/+cmTOH83/v5fvbu0eOPJNX2bJ9k8rnktyuyDlJrnmUUd2tetSy4/a13vBt"
    "7PuO3rLxrWRzUkf6n8RIMN2g2QrzpkftfDNosLpOqR6KVWqbnuszGphMBDKcEl1r+AucSrrAlzgDhB6MaTCuqFw2HbJY2LJFmHjgCSGVAkz2"
    "33owpcG0ogoPHPbaIJbL5ZtvVHKoRQYzRv8JZjswpyQjLzDvECdJWXAwYlGDJYzADSqn8irPYNkZBtTOYCUOWNVgbRRwAeu/AwiDDaNfOiXk"
    "65OQATpCX6FJfP8giaJLPIrYR0foQREyDDaNZGcIWyOi7ZhoR4NdJFKFLuylKPUC7McokgYHiOL8hThEiAxJxaeVSyscMTg2Ap3BiZH/AVBL"
    "AQItAy0AAAAIAAAAIQBTUFw+WQEAABkCAAAIAAAAAAAAAAAAAACAAQAAAABkYXRhLm5weVBLBQYAAAAAAQABADYAAACTAQAAAAA=")


def test_reads_a_file_pfllib_wrote_under_numpy_1(tmp_path):
    import base64

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "0.npz").write_bytes(base64.b64decode(NUMPY1_FILE))
    x, y = htfl_format.read_client_split(str(tmp_path), "train", 0)
    expected = ((np.arange(12, dtype=np.float32) - 6) / 4).reshape(3, 1, 2, 2)
    assert x.dtype == np.float32 and np.array_equal(x, expected)
    assert y.dtype == np.int64 and list(y) == [0, 2, 1]


def test_reads_a_data_pickle_of_protocol_5(tmp_path):
    """Arrays pickled out of band (protocol 5) are rebuilt through numpy's _frombuffer."""
    import pickle
    import zipfile

    x, y = np.ones((2, 1, 2, 2), np.float32), np.array([1, 0])
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": ()})
    record = np.empty((), dtype=object)
    record[()] = {"x": x, "y": y}
    pickle.dump(record, member, protocol=5)
    assert b"_frombuffer" in member.getvalue()
    (tmp_path / "test").mkdir()
    with zipfile.ZipFile(tmp_path / "test" / "0.npz", "w") as archive:
        archive.writestr("data.npy", member.getvalue())
    read_x, read_y = htfl_format.read_client_split(str(tmp_path), "test", 0)
    assert np.array_equal(read_x, x) and np.array_equal(read_y, y)


class RunsOnLoad:
    """Pickles as a call of `function(*args)`, which unpickling would make."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def poisoned_records(marker):
    import builtins

    return {
        "posix.system": {"x": RunsOnLoad(os.system, f"touch {marker}"), "y": np.zeros(1, np.int64)},
        "builtins.exec": {"x": np.zeros((1, 1, 2, 2), np.float32),
                          "y": RunsOnLoad(builtins.exec, f"open({str(marker)!r}, 'w').close()")},
        # numpy itself holds functions that write files: only its array rebuilders are allowed
        "numpy.save": {"x": RunsOnLoad(np.save, str(marker), np.zeros(1)), "y": np.zeros(1, np.int64)},
    }


@pytest.mark.parametrize("name", ["posix.system", "builtins.exec", "numpy.save"])
def test_a_data_file_whose_pickle_would_run_code_is_refused_before_it_runs(tmp_path, name):
    marker = tmp_path / "marker"
    write_small(tmp_path / "data")
    path = tmp_path / "data" / "train" / "1.npz"
    np.savez_compressed(path, data=poisoned_records(marker)[name])
    with pytest.raises(ValueError) as info:
        htfl_format.read_client_split(str(tmp_path / "data"), "train", 1)
    message = str(info.value)
    assert str(path) in message and f"names {name}," in message and "\n" not in message
    assert not marker.exists()


def run_main(*flags):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "system", "main.py"), "-dev", "cpu", *flags],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_main_refuses_a_poisoned_data_file_in_one_line_without_running_it(tmp_path):
    from tests.helpers import make_tiny_dataset

    marker = tmp_path / "marker"
    folder = make_tiny_dataset(str(tmp_path / "data"), name="Poisoned", num_clients=4)
    path = os.path.join(folder, "train", "1.npz")
    np.savez_compressed(path, data=poisoned_records(marker)["posix.system"])
    line = one_error_line(run_main("--data_root", str(tmp_path / "data"), "-data", "Poisoned", "-nc", "4",
                                   "-gr", "1", "--out", str(tmp_path / "out")))
    assert path in line and "posix.system" in line
    assert not marker.exists()


def test_the_writer_refuses_non_finite_images(tmp_path):
    x = np.zeros((2, 1, 2, 2), np.float32)
    x[1, 0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="x holds 1 NaN or infinite value"):
        htfl_format.write_client_split(str(tmp_path / "0.npz"), x, np.zeros(2, np.int64))
    assert not (tmp_path / "0.npz").exists()


def test_main_refuses_a_data_file_with_a_nan_pixel_in_one_line(tmp_path):
    from tests.helpers import make_tiny_dataset

    folder = make_tiny_dataset(str(tmp_path / "data"), name="Holey", num_clients=4)
    x, y = htfl_format.read_client_split(folder, "train", 1)
    x[2, 0, 3, 4] = np.nan
    path = os.path.join(folder, "train", "1.npz")
    np.savez_compressed(path, data={"x": x, "y": y})  # as PFLlib would write it, unchecked
    line = one_error_line(run_main("--data_root", str(tmp_path / "data"), "-data", "Holey", "-nc", "4",
                                   "-gr", "1", "--out", str(tmp_path / "out")))
    assert path in line and "x holds 1 NaN or infinite value" in line and "regenerate" in line


# ----------------------------------------------------------------------------- generators

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root where MNIST5k was generated on first use by the loader."""
    root = tmp_path_factory.mktemp("data")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        data = load_federated_dataset("MNIST5k", 20, 10, str(root))
    assert "generating it" in printed.getvalue()
    assert data.num_clients == 20
    return root


def test_generated_mnist5k_has_the_documented_shape(data_root):
    folder = str(data_root / "MNIST5k")
    config = htfl_format.read_config(folder)
    assert config.num_clients == 20 and config.num_classes == 10
    assert config.label_names == [str(d) for d in range(10)]
    assert config.image_shape == (3, 32, 32) and config.partition == "dir" and config.non_iid
    total = 0
    for client in range(20):
        sizes = {}
        for split in ("train", "test"):
            x, y = htfl_format.read_client_split(folder, split, client)
            assert x.shape[1:] == (3, 32, 32) and x.dtype == np.float32
            assert x.min() >= -1.0 and x.max() <= 1.0
            assert np.array_equal(x[:, 0], x[:, 2])  # grey repeated to 3 channels
            sizes[split] = len(y)
        assert sizes["train"] == int(0.75 * (sizes["train"] + sizes["test"]))
        total += sizes["train"] + sizes["test"]
    assert total == 5000


def test_mnist5k_pool_is_padded_and_normalised():
    x, y, names = generate_MNIST5k.load_pool()
    assert x.shape == (5000, 3, 32, 32) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert np.all(x[:, :, :2, :] == -1.0) and np.all(x[:, :, :, -2:] == -1.0)  # padding
    assert np.array_equal(np.bincount(y), [500] * 10) and names == [str(d) for d in range(10)]


def test_mnist5k_cli_writes_a_pat_split_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "M"
    status = generate_MNIST5k.main(["noniid", "balance", "pat", "--num_clients", "10",
                                    "--class_per_client", "3", "--seed", "4", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "10 clients" in printed and "samples per client" in printed
    assert "classes per client: min 3, mean 3.0, max 3" in printed
    config = htfl_format.read_config(str(out))
    assert config.balance and config.partition == "pat"
    assert all(len(pairs) == 3 for pairs in config.label_counts)


def test_generator_scripts_run_as_scripts_and_reject_bad_arguments(tmp_path):
    script = os.path.join(REPO_ROOT, "dataset", "generate_MNIST5k.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert shown.returncode == 0 and "--num_clients" in shown.stdout
    bad = subprocess.run([sys.executable, script, "noniid", "-", "-"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "noniid needs a partition" in bad.stderr


def test_cifar_generator_names_the_missing_root_flag(tmp_path, capsys):
    from dataset import generate_Cifar10
    assert generate_Cifar10.main(["noniid", "-", "dir", "--out", str(tmp_path / "C")]) == 2
    error = capsys.readouterr().err.strip()
    assert "--root" in error and "\n" not in error
    assert generate_Cifar10.main(["noniid", "-", "dir", "--root", str(tmp_path / "absent")]) == 2
    assert "--download" in capsys.readouterr().err


class FakeCifar:
    """Stands in for torchvision's CIFAR classes: uint8 NHWC data, list targets."""
    classes = ["cat", "dog"]

    def __init__(self, root, train, download):
        n = 6 if train else 2
        self.data = np.full((n, 32, 32, 3), 255 if train else 0, dtype=np.uint8)
        self.data[:, 0, 0, 1] = 51
        self.targets = [i % 2 for i in range(n)]


def test_torchvision_pool_is_pooled_nchw_in_unit_range(tmp_path):
    x, y, names = generate_common.load_torchvision_pool(FakeCifar, "Fake", str(tmp_path), False)
    assert x.shape == (8, 3, 32, 32) and x.dtype == np.float32
    assert np.all(x[:6, 0] == 1.0) and np.all(x[6:, 0] == -1.0)
    assert np.allclose(x[:, 1, 0, 0], 51 / 255 * 2 - 1)  # channel 1 moved to axis 1
    assert y.tolist() == [0, 1, 0, 1, 0, 1, 0, 1] and names == ["cat", "dog"]


# ----------------------------------------------------------------------------- loader

def test_loader_returns_cpu_tensors_for_the_first_clients(data_root):
    data = load_federated_dataset("MNIST5k", 5, None, str(data_root))
    assert data.num_clients == 5 and data.num_classes == 10
    assert data.image_shape == (3, 32, 32) and data.label_names == tuple(str(d) for d in range(10))
    folder = str(data_root / "MNIST5k")
    for client_id, client in enumerate(data.clients):
        assert client.train_x.dtype == torch.float32 and client.train_y.dtype == torch.int64
        assert client.test_x.device.type == "cpu"
        x, y = htfl_format.read_client_split(folder, "test", client_id)
        assert torch.equal(client.test_x, torch.from_numpy(x))
        assert torch.equal(client.test_y, torch.from_numpy(y))
        assert client.num_train == len(client.train_y) > 0


def test_loader_is_fast_once_generated(data_root):
    start = time.perf_counter()
    load_federated_dataset("MNIST5k", 20, 10, str(data_root))
    assert time.perf_counter() - start < 1.0


def user_error(*args):
    with pytest.raises(UserError) as info:
        load_federated_dataset(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_dataset_with_a_generator_says_how_to_generate_it(tmp_path):
    message = user_error("Cifar10", 20, None, str(tmp_path))
    assert f"dataset 'Cifar10' not found at {tmp_path / 'Cifar10'}" in message
    assert "`python dataset/generate_Cifar10.py noniid - dir`" in message


def test_unknown_dataset_lists_the_available_ones(data_root):
    message = user_error("Nope", 20, None, str(data_root))
    assert "dataset 'Nope' not found" in message and "available datasets" in message
    assert message.endswith("MNIST5k")


def test_path_like_names_are_refused(data_root):
    assert "plain folder name" in user_error("../MNIST5k", 20, None, str(data_root))


def test_too_many_clients_names_both_numbers(data_root):
    message = user_error("MNIST5k", 50, None, str(data_root))
    assert "-nc 50" in message and "(20)" in message and "pass -nc 20" in message


def test_num_classes_mismatch_says_to_drop_or_fix_the_flag(data_root):
    message = user_error("MNIST5k", 20, 100, str(data_root))
    assert "100" in message and "10 classes" in message
    assert "drop -nb" in message and "pass -nb 10" in message


def test_corrupt_npz_names_the_file_and_suggests_regenerating(data_root, tmp_path):
    shutil.copytree(data_root / "MNIST5k", tmp_path / "MNIST5k")
    bad = tmp_path / "MNIST5k" / "test" / "3.npz"
    bad.write_bytes(b"garbage")
    message = user_error("MNIST5k", 20, None, str(tmp_path))
    assert str(bad) in message and "regenerate" in message


def test_out_of_range_labels_and_unfinished_folders_are_user_errors(tmp_path):
    write_small(tmp_path / "Small")
    doc = json.loads((tmp_path / "Small" / "config.json").read_text())
    doc["num_classes"], doc["label_names"] = 2, ["a", "b"]
    (tmp_path / "Small" / "config.json").write_text(json.dumps(doc))
    assert "but config.json says 2 classes" in user_error("Small", 3, None, str(tmp_path))
    os.remove(tmp_path / "Small" / "config.json")
    assert "has no config.json" in user_error("Small", 3, None, str(tmp_path))


def test_long_tail_keeps_an_exponential_profile_per_class():
    from dataset.partition import long_tail

    labels = np.repeat(np.arange(10), 100)
    kept = long_tail(labels, 0.01, np.random.default_rng(0))
    counts = np.bincount(labels[kept], minlength=10).tolist()
    assert counts == [max(1, int(100 * 0.01 ** (c / 9))) for c in range(10)]
    assert counts[0] == 100 and counts[-1] == 1 and counts == sorted(counts, reverse=True)
    assert np.array_equal(kept, long_tail(labels, 0.01, np.random.default_rng(0)))
    assert len(long_tail(labels, 1.0, np.random.default_rng(0))) == 1000
    with pytest.raises(ValueError, match="--imbalance_factor must be in"):
        long_tail(labels, 0.0, np.random.default_rng(0))


def test_generator_writes_a_long_tailed_dataset_and_records_the_factor(tmp_path):
    from dataset import generate_MNIST5k
    from utils.htfl_format import read_config

    out = tmp_path / "MNIST5k-LT"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert generate_MNIST5k.main(["noniid", "-", "dir", "--imbalance_factor", "0.1", "--out", str(out),
                                      "--num_clients", "5"]) == 0
    config = read_config(str(out))
    with open(out / "config.json") as f:
        assert json.load(f)["imbalance_factor"] == 0.1
    totals = np.zeros(10, dtype=int)
    for client in config.label_counts:
        for label, count in client:
            totals[label] += count
    assert totals[0] > 400 and totals[-1] <= 0.1 * totals[0] + 1
    assert all(totals[c] >= totals[c + 1] for c in range(9))


# ----------------------------------------------------------------------------- PFLlib's rule

class ScriptedRng:
    """Stands in for a Generator: no shuffling, and Dirichlet draws read from a script."""

    def __init__(self, draws):
        self.draws = [np.asarray(d, dtype=float) for d in draws]

    def permutation(self, x):
        return np.array(x, copy=True)

    def dirichlet(self, alpha):
        draw = self.draws.pop(0)
        assert len(draw) == len(alpha)
        return draw


def test_pfllib_dir_caps_full_clients_cuts_at_floors_and_redraws_from_scratch():
    # 12 samples, 2 clients: the cap is 6. Attempt 1: class 0 all to client 0 (8 >= 6), so
    # client 0's share of class 1 is zeroed and client 1 ends with 4 < least 5: redraw.
    # Attempt 2: floor(0.9 * 8) = 7 to client 0, which is then full, so class 1 all to 1.
    labels = np.array([0] * 8 + [1] * 4)
    g = ScriptedRng([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    parts = partition.pfllib_dirichlet(labels, 2, 0.1, g, least_samples=5)
    assert [p.tolist() for p in parts] == [list(range(7)), list(range(7, 12))]
    assert g.draws == []
    # cut points are floor(cumsum(p) * n_k), the last dropped: 10 * [.25, .5] -> 2, 5
    parts = partition.pfllib_dirichlet(np.zeros(10, dtype=np.int64), 3, 0.1,
                                       ScriptedRng([[0.25, 0.25, 0.5]]), least_samples=0)
    assert [len(p) for p in parts] == [2, 3, 5]
    # a capped last client gets nothing, even where floating-point cumsum falls short of 1
    labels = np.array([0] * 10 + [1] * 5)  # cap 15 / 3 = 5; class 0 leaves sizes 1, 2, 7
    parts = partition.pfllib_dirichlet(labels, 3, 0.1, ScriptedRng([[0.1, 0.2, 0.7],
                                                                    [0.3, 0.3, 0.4]]),
                                       least_samples=0)
    assert [p.tolist() for p in parts] == [[0, 10, 11], [1, 2, 12, 13, 14], list(range(3, 10))]


def cifar100_shaped_labels():
    return np.repeat(np.arange(100), 600)


def test_pfllib_dir_deals_once_meets_the_floor_and_never_feeds_a_full_client():
    labels = cifar100_shaped_labels()
    num_clients = 20
    cap = len(labels) / num_clients
    parts = partition.pfllib_dirichlet(labels, num_clients, 0.1, rng(7), least_samples=40)
    assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 40
    # Replay the class order: a client already holding >= N / num_clients before class k
    # gets none of class k.
    counts = np.stack([np.bincount(labels[p], minlength=100) for p in parts])  # clients x classes
    held_before = np.cumsum(counts, axis=1) - counts
    assert np.all(counts[held_before >= cap] == 0)
    assert np.any(held_before >= cap)  # the cap did bite in this draw
    assert max(len(p) for p in parts) > cap  # a client may pass the cap with its last class


def test_pfllib_dir_spreads_client_sizes_far_less_than_the_library_rule():
    labels = cifar100_shaped_labels()
    spread = {"library": [], "pfllib": []}
    for seed in range(3):
        spread["library"].append(np.std([len(p) for p in partition.dirichlet(
            labels, 20, 0.1, rng(seed), least_samples=40)]))
        spread["pfllib"].append(np.std([len(p) for p in partition.pfllib_dirichlet(
            labels, 20, 0.1, rng(seed), least_samples=40)]))
    library, pfllib = np.mean(spread["library"]), np.mean(spread["pfllib"])
    print(f"client-size std over seeds 0-2: library {np.round(spread['library'])} "
          f"(mean {library:.0f}), pfllib {np.round(spread['pfllib'])} (mean {pfllib:.0f})")
    assert pfllib < 0.7 * library
    assert max(spread["pfllib"]) < min(spread["library"])


@pytest.mark.parametrize("split", [
    lambda labels, g: partition.pfllib_dirichlet(labels, 20, 0.1, g, least_samples=10),
    lambda labels, g: partition.pfllib_pathological(labels, 20, 2, g, balance=False),
    lambda labels, g: partition.pfllib_iid(labels, 5, g, balance=False),
])
def test_pfllib_rules_are_reproducible(split):
    labels = ten_class_labels(100)
    first, again, other = split(labels, rng(5)), split(labels, rng(5)), split(labels, rng(6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert_exact_cover(first, len(labels))


def test_pfllib_dir_refuses_an_impossible_floor_and_gives_up_after_max_attempts():
    labels = ten_class_labels(100)
    with pytest.raises(ValueError, match=r"1200 for 30 clients, but there are 1000.*at most 25"):
        partition.pfllib_dirichlet(labels, 30, 0.1, rng(), least_samples=40)
    # exactly N / num_clients each is feasible but (almost surely) never drawn
    with pytest.raises(ValueError, match="in 5 attempts"):
        partition.pfllib_dirichlet(labels, 20, 0.1, rng(), least_samples=50, max_attempts=5)


@pytest.mark.parametrize("balance", [True, False])
def test_pfllib_pat_fills_the_first_clients_with_room_in_class_order(balance):
    labels = ten_class_labels(100)
    parts = partition.pfllib_pathological(labels, 20, 2, rng(1), balance=balance,
                                          least_samples=40)
    assert_exact_cover(parts, len(labels))
    # ceil(20 / 10 * 2) = 4 holders per class: classes 0, 1 -> clients 0-3, 2, 3 -> 4-7, ...
    for client, part in enumerate(parts):
        first = 2 * (client // 4)
        assert np.unique(labels[part]).tolist() == [first, first + 1]
    for cls in range(10):
        shares = [int(np.sum(labels[p] == cls)) for p in parts if np.any(labels[p] == cls)]
        assert sum(shares) == 100
        if balance:
            assert shares == [25, 25, 25, 25]
        else:  # randint over [int(max(25 / 10, 40 / 10)), int(25)); the last holder takes the rest
            assert all(4 <= s < 25 for s in shares[:-1])
        # contiguous runs of the class's samples, in pool order
        runs = np.concatenate([p[labels[p] == cls] for p in parts])
        assert np.array_equal(runs, np.arange(100 * cls, 100 * (cls + 1)))


def test_pfllib_pat_on_cifar100_shape_gives_ten_classes_each():
    labels = cifar100_shaped_labels()
    parts = partition.pfllib_pathological(labels, 20, 10, rng(2), balance=False)
    assert_exact_cover(parts, len(labels))
    assert all(len(np.unique(labels[p])) == 10 for p in parts)


def test_pfllib_pat_refuses_what_the_original_cannot_deal():
    labels = ten_class_labels(100)
    # ceil(3 / 10 * 4) = 2 holders per class: clients 0, 1 are full after 4 classes, client
    # 2 after 8, and classes 8, 9 have nowhere to go (the library's pat deals this fine)
    with pytest.raises(ValueError, match="no client has room left for class 8"):
        partition.pfllib_pathological(labels, 3, 4, rng())
    assert len(partition.pat(labels, 3, 4, rng())) == 3
    with pytest.raises(ValueError, match=r"range \[4, 2\) empty"):
        partition.pfllib_pathological(labels, 40, 10, rng())
    # balanced with under one sample per holder: int(0.5) = 0 for all but the last
    with pytest.raises(ValueError, match="with no samples"):
        partition.pfllib_iid(ten_class_labels(2), 4, rng(), balance=True)


def test_pfllib_iid_is_stratified_contiguous_runs():
    labels = ten_class_labels(103)
    parts = partition.pfllib_iid(labels, 4, rng(), balance=True)
    assert_exact_cover(parts, len(labels))
    for client, part in enumerate(parts):
        expected = 25 if client < 3 else 28
        assert np.bincount(labels[part], minlength=10).tolist() == [expected] * 10


def test_partition_indices_dispatches_on_the_rule():
    labels = ten_class_labels(100)
    common = dict(niid=True, balance=False, partition="dir", alpha=0.1, least_samples=40)
    assert all(np.array_equal(a, b) for a, b in zip(
        partition.partition_indices(labels, 5, rng(3), rule="pfllib", **common),
        partition.pfllib_dirichlet(labels, 5, 0.1, rng(3), least_samples=40)))
    assert all(np.array_equal(a, b) for a, b in zip(
        partition.partition_indices(labels, 5, rng(3), **common),
        partition.dirichlet(labels, 5, 0.1, rng(3), least_samples=40)))
    iid_parts = partition.partition_indices(labels, 5, rng(), niid=False, balance=True,
                                            partition=None, rule="pfllib")
    assert all(np.bincount(labels[p]).tolist() == [20] * 10 for p in iid_parts)
    with pytest.raises(ValueError, match="partition rule must be one of library, pfllib"):
        partition.partition_indices(labels, 5, rng(), rule="fedml", **common)


def test_generator_records_the_partition_rule_and_refuses_an_impossible_one(tmp_path, capsys,
                                                                           monkeypatch):
    pool = generate_MNIST5k.load_pool()
    monkeypatch.setattr(generate_MNIST5k, "load_pool", lambda: pool)  # load it once
    out = tmp_path / "M"
    assert generate_MNIST5k.main(["noniid", "-", "dir", "--partition_rule", "pfllib",
                                  "--num_clients", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PFLlib's rule" in printed
    with open(out / "config.json") as f:
        assert json.load(f)["partition_rule"] == "pfllib"
    config = htfl_format.read_config(str(out))
    assert config.partition_rule == "pfllib"
    sizes = [sum(count for _, count in pairs) for pairs in config.label_counts]
    assert sum(sizes) == 5000 and min(sizes) >= 40

    assert generate_MNIST5k.main(["iid", "balance", "-", "--num_clients", "4",
                                  "--out", str(out)]) == 0
    capsys.readouterr()
    assert htfl_format.read_config(str(out)).partition_rule == "library"

    for argv, message in [
            (["noniid", "-", "dir", "--num_clients", "200"], "needs at least 40 samples per client"),
            (["noniid", "-", "pat", "--num_clients", "3", "--class_per_client", "4"],
             "no client has room left for class 8")]:
        status = generate_MNIST5k.main(argv + ["--partition_rule", "pfllib",
                                               "--out", str(tmp_path / "bad")])
        captured = capsys.readouterr()
        assert status == 2 and captured.out == ""
        assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
        assert message in captured.err
    assert not (tmp_path / "bad" / "config.json").exists()
