"""`--recipe paper`: each piece of the original code's computation that the paper's numbers depend on."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF

import main
from cli import RECIPES, parse_args
from flcore.generators.images import to_client_images
from flcore.servers.serverbase import best_is_stale, original_break
from tests.test_ktl_client import make_args, make_client, make_data
from trainmodel.models import build_model
from utils.result_utils import read_results


# ---- the profile ---------------------------------------------------------------------------

def test_paper_recipe_sets_every_original_behaviour_and_flags_still_win():
    args = parse_args(["--recipe", "paper"])
    for dest, value in RECIPES["paper"].items():
        assert getattr(args, dest) == value, dest
    assert parse_args(["--recipe", "paper", "--ktl_fixed_proj", "false"]).ktl_fixed_proj is False
    library = parse_args([])
    assert not library.stored_order and library.resize_antialias and not library.original_auto_break


# ---- auto-break ----------------------------------------------------------------------------

def test_original_rule_stops_top_cnt_evaluations_after_the_best_one_round_sooner():
    # Best at evaluation 2. The original, checked after round k's training with a_0..a_k,
    # stops once k - 2 >= 3 (after round 5); this library's rule, checked before round r with
    # a_0..a_{r-1}, once r - 1 - 2 > 3 (before round 7, i.e. after round 6's training).
    acc = [0.1, 0.2, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert [original_break(acc[:k + 1], 3) for k in range(7)] == [False] * 5 + [True, True]
    assert [best_is_stale(acc[:r], 3) for r in range(1, 8)] == [False] * 6 + [True]


def run_local(data_root, out, *extra):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out", str(out),
            "-algo", "Local", "-lr", "0.5", "-ab", "-tc", "1", "-gr", "40", "--seed", "1", *extra]
    assert main.main(argv) == 0
    series, _ = read_results(os.path.join(out, "Tiny_Local_test_0.h5"))
    return series


def test_original_auto_break_ends_without_an_evaluation_after_the_last_round(data_root, tmp_path):
    series = run_local(data_root, tmp_path / "original", "--original_auto_break")
    acc = list(series["rs_test_acc"])
    rounds = len(series["round_seconds"])
    assert rounds < 40, "the run should have stopped by auto-break"
    assert len(acc) == rounds  # one evaluation before each round trained, none after the last
    assert original_break(acc, 1) and not any(original_break(acc[:k], 1) for k in range(1, len(acc)))
    library = run_local(data_root, tmp_path / "library")
    assert len(library["rs_test_acc"]) == len(library["round_seconds"]) + 1


# ---- data order ----------------------------------------------------------------------------

def test_stored_order_visits_the_same_batches_every_epoch_and_drops_the_last_partial_one():
    client = make_client(make_args("--stored_order"))  # 20 samples, -lbs 5
    client.train_x = client.train_x[:18]
    client.train_y = client.train_y[:18]
    client.train_samples = 18
    for _ in range(2):
        batches = [y for _, y in client.train_batches()]
        assert torch.equal(torch.cat(batches), client.train_y[:15])
    shuffled = make_client(make_args())
    first, second = ([y for _, y in shuffled.train_batches()] for _ in range(2))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


def test_stored_order_prototypes_leave_out_the_samples_the_loader_never_yields():
    client = make_client(make_args("--stored_order", "-lbs", "6"))  # 20 samples: the last 2 never yielded
    protos, labels = client.collect_prototypes()
    client.model.eval()
    with torch.no_grad():
        outputs = F.normalize(client.model(client.train_x[:18]), dim=1)
    y = client.train_y[:18]
    for proto, label in zip(protos, labels):
        torch.testing.assert_close(proto, F.normalize(outputs[y == label].mean(0), dim=0), atol=1e-5, rtol=0)
    # The training loss still covers every sample (it is what evaluation reports).
    assert client.train_loss_stats()[1] == 20


# ---- models and images ---------------------------------------------------------------------

def test_vit_mlp_head_is_the_original_codes_head_and_other_models_keep_theirs():
    vit = build_model("ViT-B/32", 10, feature_dim=512, image_size=32, seed=0, vit_mlp_head=True)
    assert [type(m) for m in vit.head] == [nn.Linear, nn.Tanh, nn.Linear]
    assert (vit.head[0].in_features, vit.head[0].out_features, vit.head[2].out_features) == (512, 768, 10)
    assert vit(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert (vit.feature_dim, vit.num_classes) == (512, 10)
    cnn = build_model("FedAvgCNN", 10, feature_dim=512, image_size=32, seed=0, vit_mlp_head=True)
    assert isinstance(cnn.head, nn.Linear)


@pytest.mark.parametrize("algorithm", ["LG-FedAvg", "FedGH", "FedGen"])
def test_head_sharing_methods_refuse_vit_mlp_heads_in_one_line(data_root, tmp_path, capsys, algorithm):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out", str(tmp_path),
            "-algo", algorithm, "-m", "HtM10", "--vit_mlp_head", "-gr", "1"]
    assert main.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and error.count("\n") == 0 and "--vit_mlp_head false" in error
    assert not os.listdir(tmp_path)


def test_resize_without_antialias_is_plain_bilinear():
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = to_client_images(images, (3, 16, 16), antialias=False)
    torch.testing.assert_close(plain, (TF.resize(images, 16, antialias=False) - 0.5) / 0.5)
    assert not torch.allclose(plain, to_client_images(images, (3, 16, 16)), atol=1e-3)
