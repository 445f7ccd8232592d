"""FedProto, FD, FedGH and FedTGP: their per-class rules, client loss terms and short runs."""
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import main
from flcore.clients.clientfd import clientFD
from flcore.clients.clientgh import clientGH
from flcore.clients.clientproto import clientProto
from flcore.prototypes import (average_per_class, class_means, nearest_prototype_scores,
                               pull_to_class_rows)
from flcore.servers.serverfd import aggregate_logits
from flcore.servers.servergh import train_global_head
from flcore.servers.serverproto import aggregate_prototypes
from flcore.servers.servertgp import TrainableGlobalPrototypes, acl_loss, adaptive_margin, train_prototypes
from trainmodel.models import BaseHeadSplit, build_model
from utils.data_utils import load_federated_dataset
from utils.payload import state_to_payload
from utils.result_utils import read_results

NUM_CLIENTS = 4
CLASSES = 10
FEATURE_DIM = 512


# ---- hand-made uploads ------------------------------------------------------------------
def two_client_replies():
    """Client A holds classes 0 and 2 (1 and 3 samples), client B classes 2 and 3 (1 each)."""
    return [
        {"means": torch.tensor([[1.0, 1.0], [4.0, 0.0]]), "classes": torch.tensor([0, 2]),
         "counts": torch.tensor([1, 3])},
        {"means": torch.tensor([[0.0, 4.0], [2.0, 2.0]]), "classes": torch.tensor([2, 3]),
         "counts": torch.tensor([1, 1])},
    ]


def test_fedproto_weights_prototypes_by_sample_counts():
    message = aggregate_prototypes(two_client_replies(), num_classes=5)

    assert message["classes"].tolist() == [0, 2, 3]  # classes 1 and 4: nobody holds them
    # class 2: (3 * [4, 0] + 1 * [0, 4]) / 4
    assert torch.allclose(message["means"], torch.tensor([[1.0, 1.0], [3.0, 1.0], [2.0, 2.0]]))


def test_fd_averages_logits_uniformly_over_holders():
    message = aggregate_logits(two_client_replies(), num_classes=5)

    assert message["classes"].tolist() == [0, 2, 3]
    assert torch.allclose(message["means"], torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]))


def test_average_per_class_single_holder_is_unchanged():
    means, classes = average_per_class([torch.tensor([[7.0, -1.0]])], [torch.tensor([4])], 6)

    assert classes.tolist() == [4] and means.tolist() == [[7.0, -1.0]]


def test_class_means_skip_missing_classes():
    values = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 1.0]])
    labels = torch.tensor([2, 2, 0, 2])

    means, classes, counts = class_means(values, labels, num_classes=4)

    assert classes.tolist() == [0, 2] and counts.tolist() == [1, 3]
    assert torch.allclose(means, torch.tensor([[5.0, 5.0], [4 / 3, 1.0]]))


# ---- the shared classifier and regulariser ----------------------------------------------
def test_nearest_prototype_predicts_nearest_and_never_a_missing_class():
    table = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]])  # class 2 has no prototype
    present = torch.tensor([True, True, False])
    features = torch.tensor([[1.0, 0.0], [9.0, 1.0], [0.0, 0.0]])

    scores = nearest_prototype_scores(features, table, present)

    assert scores.argmax(1).tolist() == [0, 1, 0]
    assert torch.isfinite(scores).all()
    assert scores[0, :2].tolist() == [-1.0, -81.0]  # minus squared distances


def test_pull_to_class_rows_is_htfllibs_mse():
    values = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    table = torch.tensor([[0.0, 2.0], [9.0, 9.0]])
    labels = torch.tensor([0, 1])

    only_class0 = pull_to_class_rows(values, labels, table, torch.tensor([True, False]))
    both = pull_to_class_rows(values, labels, table, torch.tensor([True, True]))

    # Row 0 is 1^2 + 2^2 = 5 away; the mean runs over all 4 elements either way.
    assert math.isclose(float(only_class0), 5 / 4)
    assert math.isclose(float(both), F.mse_loss(values, table).item())


# ---- FedGH's head and FedTGP's server -----------------------------------------------------
def separable_prototypes(num_classes=4, dim=8, per_class=5):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    vectors = 3 * F.one_hot(labels, dim).float() + 0.1 * torch.randn(len(labels), dim, generator=gen)
    return vectors, labels


def test_fedgh_head_training_reduces_cross_entropy():
    vectors, labels = separable_prototypes()
    torch.manual_seed(0)
    head = nn.Linear(8, 4)
    before = F.cross_entropy(head(vectors), labels).item()

    train_global_head(head, vectors, labels, lr=0.1, epochs=20, batch_size=6,
                      generator=torch.Generator().manual_seed(1))

    after = F.cross_entropy(head(vectors), labels).item()
    assert after < 0.5 * before
    assert (head(vectors).argmax(1) == labels).all()


def test_fedtgp_margin_is_the_largest_nearest_center_gap_capped():
    # Nearest other center: class 0 -> 3, class 1 -> 3, class 2 -> 10 (class 0).
    centers = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 10.0]])

    assert math.isclose(adaptive_margin(centers, threshold=100.0), 10.0)
    assert adaptive_margin(centers, threshold=4.0) == 4.0
    assert adaptive_margin(centers[:1], threshold=7.0) == 7.0  # no other class to measure against


def test_fedtgp_margin_from_uploaded_cluster_centers():
    # Class 2's center is the plain mean of [4, 0] and [0, 4] = [2, 2], which is class 3's
    # center too: gaps 0 -> |[1,1]-[2,2]| = sqrt 2, 2 -> 0, 3 -> 0.
    replies = two_client_replies()
    centers, _ = average_per_class([r["means"] for r in replies], [r["classes"] for r in replies], 5)

    assert math.isclose(adaptive_margin(centers, 100.0), math.sqrt(2), rel_tol=1e-6)


def test_fedtgp_acl_loss_adds_margin_to_the_true_class_distance():
    prototypes = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    vector, label = torch.tensor([[0.0, 0.0]]), torch.tensor([0])

    # logits are [-(0 + m), -1]: CE = log(1 + exp(m - 1)).
    for margin in (0.0, 1.0, 3.0):
        expected = math.log1p(math.exp(margin - 1))
        assert math.isclose(acl_loss(vector, label, prototypes, margin).item(), expected, rel_tol=1e-5)


def test_fedtgp_prototypes_move_to_their_classes():
    vectors, labels = separable_prototypes()
    torch.manual_seed(0)
    model = TrainableGlobalPrototypes(num_classes=4, feature_dim=8, hidden_dim=8)
    before = acl_loss(vectors, labels, model(), margin=1.0).item()

    train_prototypes(model, vectors, labels, margin=1.0, lr=0.05, epochs=30, batch_size=10,
                     generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        prototypes = model()
        assert acl_loss(vectors, labels, prototypes, margin=1.0).item() < 0.5 * before
        assert (nearest_prototype_scores(vectors, prototypes, torch.ones(4, dtype=torch.bool))
                .argmax(1) == labels).all()


# ---- clients on a tiny model ---------------------------------------------------------------
def tiny_client(client_class, lamda=10.0, model=None, size=2, classes=2, samples=8):
    args = SimpleNamespace(device="cpu", num_classes=classes, batch_size=4, eval_batch_size=64, local_epochs=1,
                           local_learning_rate=0.05, learning_rate_decay=False, learning_rate_decay_gamma=0.99,
                           lamda=lamda)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 1 if model is None else 3, size, size, generator=gen)
    y = torch.arange(samples) % classes
    data = SimpleNamespace(train_x=x, train_y=y, test_x=x, test_y=y)
    if model is None:
        torch.manual_seed(0)
        model = BaseHeadSplit(nn.Sequential(nn.Flatten(), nn.Linear(size * size, 3)), nn.Linear(3, classes))
    return client_class(args, 0, model, data, seed=0)


def features_of(client):
    with torch.no_grad():
        return client.model.base(client.train_x)


def test_fedproto_client_pulls_features_to_the_global_prototype_and_predicts_by_it():
    target = torch.tensor([[5.0, -5.0, 5.0]])
    pulled, free = tiny_client(clientProto, lamda=10.0), tiny_client(clientProto, lamda=0.0)
    for client in (pulled, free):
        client.receive_global({"means": target, "classes": torch.tensor([0])})
        for _ in range(20):
            client.train_step(client.train_x, client.train_y)

    class0 = pulled.train_y == 0

    def gap(client):
        return (features_of(client)[class0] - target).pow(2).sum(1).mean().item()

    assert gap(pulled) < 0.1 * gap(free)
    # Only class 0 has a prototype, so every test sample is called class 0.
    with torch.no_grad():
        assert (pulled.scores(pulled.test_x).argmax(1) == 0).all()


def test_fedproto_client_uploads_class_means_and_counts_of_its_training_data():
    client = tiny_client(clientProto)

    reply = client.upload()

    means, classes, counts = class_means(features_of(client), client.train_y, 2)
    assert torch.allclose(reply["means"], means) and reply["classes"].tolist() == classes.tolist()
    assert reply["counts"].tolist() == counts.tolist() == [4, 4]
    loss_sum, num = client.train_loss_stats()  # filled by the same pass
    assert num == 8 and math.isclose(loss_sum / num, F.cross_entropy(client.model(client.train_x),
                                                                      client.train_y).item(), rel_tol=1e-5)


def test_fd_client_pulls_logits_and_uploads_logits():
    target = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])
    client = tiny_client(clientFD, lamda=1.0)
    client.receive_global({"means": target, "classes": torch.tensor([0, 1])})
    with torch.no_grad():
        before = F.mse_loss(client.model(client.train_x), target[client.train_y]).item()
    for _ in range(20):
        client.train_step(client.train_x, client.train_y)

    reply = client.upload()

    assert reply["means"].shape == (2, 2) and "counts" not in reply
    with torch.no_grad():
        assert F.mse_loss(client.model(client.train_x), target[client.train_y]).item() < 0.5 * before


def test_fedgh_head_exchange_with_a_vision_transformer():
    """HtM10's ViTs have Linear(512, C) heads like its CNNs: the global head drops in."""
    start = time.perf_counter()
    model = build_model("ViT-B/32", num_classes=CLASSES, feature_dim=FEATURE_DIM, image_size=32,
                        in_channels=3, seed=0)
    client = tiny_client(clientGH, model=model, size=32, classes=CLASSES, samples=20)
    torch.manual_seed(1)
    server_head = nn.Linear(FEATURE_DIM, CLASSES)

    client.receive_global(state_to_payload(server_head))
    assert torch.equal(client.model.head.weight, server_head.weight)
    reply = client.train()  # one local epoch, then the prototypes
    assert reply["means"].shape == (CLASSES, FEATURE_DIM) and reply["classes"].tolist() == list(range(CLASSES))
    train_global_head(server_head, reply["means"], reply["classes"], 0.01, 1, 10, torch.Generator().manual_seed(0))
    client.receive_global(state_to_payload(server_head))

    assert torch.equal(client.model.head.bias, server_head.bias)
    assert client.evaluate()["test_num"] == 20
    assert time.perf_counter() - start < 60


# ---- whole runs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def held_classes(data_root):
    data = load_federated_dataset("Tiny", NUM_CLIENTS, None, data_root)
    per_client = [set(torch.unique(c.train_y).tolist()) for c in data.clients]
    return sum(len(s) for s in per_client), len(set().union(*per_client))


def run(data_root, out, algorithm):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "2", "-dev", "cpu",
            "--out", str(out), "-m", "HtFE-cpu", "-se", "2", "-algo", algorithm]
    assert main.main(argv) == 0
    series, config = read_results(os.path.join(out, f"Tiny_{algorithm}_test_0.h5"))
    assert len(series["rs_test_acc"]) == 3 and np.all(np.isfinite(series["rs_test_acc"]))
    assert np.all(np.isfinite(series["rs_train_loss"]))
    assert "prototype_collection" in series["phase_seconds"] and "aggregation" in series["phase_seconds"]
    return series, config


@pytest.mark.parametrize("algorithm, up_width, down_rows, lamda", [
    ("FedProto", FEATURE_DIM, "held", 10.0),
    ("FD", CLASSES, "held", 1.0),
    ("FedTGP", FEATURE_DIM, "all", 10.0),
])
def test_per_class_vector_methods_run_and_count_traffic(data_root, held_classes, tmp_path,
                                                        algorithm, up_width, down_rows, lamda):
    uploads, union = held_classes
    series, config = run(data_root, tmp_path, algorithm)

    assert config["lamda"] == lamda
    # Up: one vector per class each client holds. Down: the global vectors to every client.
    assert list(series["floats_up"]) == [uploads * up_width] * 2
    rows = union if down_rows == "held" else CLASSES
    assert list(series["floats_down"]) == [NUM_CLIENTS * rows * up_width] * 2
    assert series["setup_floats_down"][0] == 0
    if algorithm == "FedProto":  # int64 classes and sample counts travel beside the prototypes
        assert list(series["bytes_up"]) == [uploads * (FEATURE_DIM * 4 + 16)] * 2
    if algorithm == "FedTGP":
        assert len(series["tgp_margin"]) == 2 and 0 < min(series["tgp_margin"]) <= 100


def test_fedgh_runs_and_sends_the_head(data_root, held_classes, tmp_path):
    uploads, _ = held_classes
    series, config = run(data_root, tmp_path, "FedGH")

    head = FEATURE_DIM * CLASSES + CLASSES
    assert (config["server_learning_rate"], config["server_epochs"]) == (0.01, 2)
    assert list(series["floats_up"]) == [uploads * FEATURE_DIM] * 2
    assert list(series["floats_down"]) == [NUM_CLIENTS * head] * 2
    assert series["setup_floats_down"][0] == NUM_CLIENTS * head
