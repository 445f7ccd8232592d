"""Short runs of the whole program on a tiny dataset: results, traffic, determinism."""
import os

import numpy as np
import pytest
import torch

import main
from tests.helpers import make_tiny_generator
from flcore.servers.serverbase import best_is_stale
from utils.result_utils import read_results

NUM_CLIENTS = 4
ROUNDS = 2


@pytest.fixture(scope="module")
def generator_path(tmp_path_factory):
    return make_tiny_generator(str(tmp_path_factory.mktemp("gen") / "tiny.pt"))


def run(data_root, out, *flags):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", str(ROUNDS),
            "-dev", "cpu", "--out", str(out), "-se", "3", *flags]
    assert main.main(argv) == 0
    name = [f for f in os.listdir(out) if f.endswith(".h5")]
    assert len(name) == 1
    return read_results(os.path.join(out, name[0]))


def test_fedktl_writes_htfllib_keys_config_and_images(data_root, generator_path, tmp_path):
    series, config = run(data_root, tmp_path, "-algo", "FedKTL", "-GPath", generator_path)
    assert (tmp_path / "Tiny_FedKTL_test_0.h5").exists()
    assert (tmp_path / "Tiny_FedKTL_test_0.config.json").exists()
    for key in ("rs_test_acc", "rs_test_auc", "rs_train_loss"):
        assert len(series[key]) == ROUNDS + 1, key  # before each round and after the last
        assert np.all(np.isfinite(series[key])), key
    assert np.all((series["rs_test_acc"] >= 0) & (series["rs_test_acc"] <= 1))
    assert list(series["eval_rounds"]) == [0, 1, 2]
    assert len(series["round_seconds"]) == ROUNDS
    assert set(series["phase_seconds"]) >= {"client_training", "prototype_collection",
                                             "alignment", "generation", "evaluation"}
    assert config["algorithm"] == "FedKTL" and config["num_classes"] == 10
    pngs = sorted(f for f in os.listdir(tmp_path / "Tiny_FedKTL_test_0") if f.endswith(".png"))
    assert pngs == [f"generated_round_{r:04d}.png" for r in range(ROUNDS)]
    from PIL import Image

    from utils.image_grid import grid_layout

    # The grid holds what clients receive (10 classes at 16x16, enlarged x4, each labelled), not
    # the generator's own resolution.
    with Image.open(tmp_path / "Tiny_FedKTL_test_0" / pngs[0]) as grid:
        assert grid.size == grid_layout(10, 10, 16, 16, labelled=True).size


def test_fedktl_traffic_matches_what_was_exchanged(data_root, generator_path, tmp_path):
    series, _ = run(data_root, tmp_path, "-algo", "FedKTL", "-GPath", generator_path)
    classes, latent_dim, image_floats = 10, 128, 3 * 16 * 16
    # Round 0: nothing generated yet. Round 1: one (image, latent) pair per class to each client.
    assert series["floats_down"][0] == 0
    assert series["floats_down"][1] == NUM_CLIENTS * classes * (image_floats + latent_dim)
    # Up: one C-dim prototype per class a client holds (labels are int64: bytes, not floats).
    from utils.data_utils import load_federated_dataset
    data = load_federated_dataset("Tiny", NUM_CLIENTS, None, data_root)
    held = sum(len(torch.unique(c.train_y)) for c in data.clients)
    assert list(series["floats_up"]) == [held * classes] * ROUNDS
    assert list(series["bytes_up"]) == [held * classes * 4 + held * 8] * ROUNDS
    # The ETF and the initial projection layer go out once, at setup.
    assert series["setup_floats_down"][0] == NUM_CLIENTS * (classes * classes + 512 * latent_dim + latent_dim)


def test_same_seed_same_numbers_and_other_seed_differs(data_root, generator_path, tmp_path):
    a, _ = run(data_root, tmp_path / "a", "-GPath", generator_path, "--seed", "5")
    b, _ = run(data_root, tmp_path / "b", "-GPath", generator_path, "--seed", "5")
    c, _ = run(data_root, tmp_path / "c", "-GPath", generator_path, "--seed", "6")
    assert np.array_equal(a["rs_test_acc"], b["rs_test_acc"])
    assert np.array_equal(a["rs_train_loss"], b["rs_train_loss"])
    assert not np.array_equal(a["rs_train_loss"], c["rs_train_loss"])


def test_local_trains_and_exchanges_nothing(data_root, tmp_path):
    series, _ = run(data_root, tmp_path, "-algo", "Local")
    assert series["rs_test_acc"][-1] > series["rs_test_acc"][0]
    assert list(series["floats_up"]) == [0, 0] and list(series["floats_down"]) == [0, 0]


def test_repetitions_use_consecutive_seeds_and_summary(data_root, generator_path, tmp_path, capsys):
    run_flags = ["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "1",
                 "-dev", "cpu", "--out", str(tmp_path), "-algo", "Local", "-t", "2"]
    assert main.main(run_flags) == 0
    out = capsys.readouterr().out
    assert "best accuracy over 2 run(s)" in out
    assert main.main(run_flags[:-2] + ["--out", str(tmp_path / "one")]) == 0
    assert "best accuracy of the 1 run: " in capsys.readouterr().out  # no std of a single run
    _, config0 = read_results(str(tmp_path / "Tiny_Local_test_0.h5"))
    _, config1 = read_results(str(tmp_path / "Tiny_Local_test_1.h5"))
    assert (config0["run_seed"], config1["run_seed"]) == (0, 1)


def test_best_is_stale_rule():
    assert not best_is_stale([0.1], 0)
    assert best_is_stale([0.2, 0.1], 0)
    assert not best_is_stale([0.2, 0.1], 1)
    assert best_is_stale([0.2, 0.1, 0.15], 1)
    assert not best_is_stale([0.1, 0.1, 0.3], 1)


def test_auto_break_stops_early_and_still_evaluates_the_last_round(data_root, tmp_path):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "10",
            "-dev", "cpu", "--out", str(tmp_path), "-algo", "Local", "-ab", "True", "-tc", "0", "-lr", "0"]
    assert main.main(argv) == 0
    series, _ = read_results(str(tmp_path / "Tiny_Local_test_0.h5"))
    trained = len(series["round_seconds"])
    assert trained < 10
    assert len(series["rs_test_acc"]) == trained + 1
    assert best_is_stale(list(series["rs_test_acc"][:-1]), 0)
